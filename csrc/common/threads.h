// parallel_for on a persistent pool of std::threads.
//
// parallel_for(n, threads, fn) calls fn(begin, end) on contiguous, disjoint ranges that
// cover [0, n).  threads <= 1 (or n <= 1) runs fn(0, n) on the calling thread; otherwise
// t = min(threads, n) ranges run at once, range 0 on the calling thread and ranges 1..t-1 on
// the pool's workers, and the call returns when all are done.  fn must not throw.
//
// Why a pool.  A model runs one kernel call per layer, many of them 0.1-0.3 ms long at
// batch 1; creating and joining a std::thread per call (tens of microseconds each, plus the
// cold start of a fresh thread) made 2-thread runs of the binary VGG-small *slower* than 1
// thread.  The workers here are created once (grown on demand, never shrunk), sleep on a
// condition variable between calls and are woken per call.
//
// One call at a time owns the pool.  A second concurrent caller (another Python thread, or a
// nested call) does not wait: it falls back to spawning threads for its call, as before.  A
// forked child (multiprocessing) gets a fresh pool: the parent's workers do not exist there.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace lowbit {
namespace threads_detail {

using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);

inline long current_pid() {
#if defined(__unix__) || defined(__APPLE__)
  return static_cast<long>(::getpid());
#else
  return 0;
#endif
}

class Pool {
 public:
  // The process's pool (a new one after fork).  Leaked on purpose: its detached workers may
  // still be blocked in wait() when the process exits.
  static Pool* instance() {
    static std::mutex guard;
    static Pool* pool = nullptr;
    std::lock_guard<std::mutex> g(guard);
    const long pid = current_pid();
    if (pool == nullptr || pool->pid_ != pid) pool = new Pool(pid);
    return pool;
  }

  // Runs call(ctx, bounds[r], bounds[r + 1]) for r < t: r = 0 here, r >= 1 on workers.
  // Returns false, having run nothing, when another thread is using the pool.
  bool run(int64_t t, RangeFn call, void* ctx, const int64_t* bounds) {
    std::unique_lock<std::mutex> owner(busy_, std::try_to_lock);
    if (!owner.owns_lock()) return false;
    grow(t - 1);
    {
      std::lock_guard<std::mutex> g(m_);
      call_ = call;
      ctx_ = ctx;
      bounds_ = bounds;
      tasks_ = t - 1;
      next_ = 0;
      remaining_ = t - 1;
      ++generation_;
    }
    wake_.notify_all();
    call(ctx, bounds[0], bounds[1]);
    std::unique_lock<std::mutex> g(m_);
    done_.wait(g, [this] { return remaining_ == 0; });
    return true;
  }

 private:
  explicit Pool(long pid) : pid_(pid) {}

  // Called by the owner before it publishes a call: a new worker starts from the current
  // generation, so it sees the call about to be published even if it starts late.
  void grow(int64_t want) {
    std::lock_guard<std::mutex> g(m_);
    while (static_cast<int64_t>(workers_) < want) {
      std::thread(&Pool::work, this, generation_).detach();
      ++workers_;
    }
  }

  void work(uint64_t seen) {
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      wake_.wait(g, [&] { return generation_ != seen; });
      seen = generation_;
      while (next_ < tasks_) {  // claim ranges of the current call until none is left
        const int64_t r = 1 + next_++;
        g.unlock();
        call_(ctx_, bounds_[r], bounds_[r + 1]);
        g.lock();
        if (--remaining_ == 0) done_.notify_one();
      }
    }
  }

  const long pid_;
  std::mutex busy_;  // held by the caller that owns the pool for one call
  std::mutex m_;     // guards everything below
  std::condition_variable wake_, done_;
  size_t workers_ = 0;
  uint64_t generation_ = 0;
  RangeFn call_ = nullptr;
  void* ctx_ = nullptr;
  const int64_t* bounds_ = nullptr;
  int64_t tasks_ = 0, next_ = 0, remaining_ = 0;
};

}  // namespace threads_detail

template <class Fn>
void parallel_for(int64_t n, int threads, Fn&& fn) {
  if (n <= 0) return;
  if (threads <= 1 || n == 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t t = threads < n ? threads : n;
  // Range r = [bounds[r], bounds[r + 1]): n / t items, the first n % t ranges one more.
  std::vector<int64_t> bounds(static_cast<size_t>(t + 1));
  const int64_t base = n / t, extra = n % t;
  for (int64_t r = 0; r <= t; ++r) bounds[static_cast<size_t>(r)] = r * base + (r < extra ? r : extra);
  using F = std::remove_reference_t<Fn>;
  auto call = [](void* ctx, int64_t b, int64_t e) { (*static_cast<F*>(ctx))(b, e); };
  if (threads_detail::Pool::instance()->run(t, call, const_cast<void*>(static_cast<const void*>(&fn)),
                                            bounds.data()))
    return;
  std::vector<std::thread> pool;  // the pool is busy (concurrent caller): spawn for this call
  pool.reserve(static_cast<size_t>(t - 1));
  for (int64_t r = 1; r < t; ++r)
    pool.emplace_back([&fn, b = bounds[static_cast<size_t>(r)], e = bounds[static_cast<size_t>(r + 1)]]() { fn(b, e); });
  fn(bounds[0], bounds[1]);
  for (auto& th : pool) th.join();
}

}  // namespace lowbit
