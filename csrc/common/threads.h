// A minimal parallel_for on std::thread.
//
// parallel_for(n, threads, fn) calls fn(begin, end) on contiguous, disjoint ranges that
// cover [0, n).  threads <= 1 (or n <= 1) runs fn(0, n) on the calling thread and spawns
// nothing; otherwise min(threads, n) - 1 threads are spawned for the call and joined before
// it returns, the calling thread doing the first range itself.  fn must not throw.
//
// Kernels call this once per operation with a coarse work split (panels of rows, blocks of
// columns), so spawning per call (tens of microseconds) is small next to the work.
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

namespace lowbit {

template <class Fn>
void parallel_for(int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t t = threads < n ? threads : n;
  // Range r gets n / t items, the first n % t ranges one more.
  const int64_t base = n / t, extra = n % t;
  auto range_begin = [&](int64_t r) { return r * base + (r < extra ? r : extra); };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(t - 1));
  for (int64_t r = 1; r < t; ++r) {
    pool.emplace_back([&fn, b = range_begin(r), e = range_begin(r + 1)]() { fn(b, e); });
  }
  fn(int64_t{0}, range_begin(1));
  for (auto& th : pool) th.join();
}

}  // namespace lowbit
