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
// thread.  The workers here are created once (grown on demand, never shrunk).
//
// Why they spin a little.  A worker that sleeps on a condition variable is woken by the
// caller, and Linux tends to run the wakee on the waker's core ("wake affine"): both ranges
// then ran one after the other on one core until the load balancer moved a thread, and about
// half of the 2-thread VGG-small calls took as long as 1 thread (measured).  So after a range
// a worker polls for the next call for kSpin (the next layer's call follows within ~0.1 ms)
// before it sleeps, and the caller polls for the workers' completion before it sleeps: during
// a model's forward pass no thread sleeps or is migrated.  Idle, a pool costs nothing.
//
// One call at a time owns the pool.  A second concurrent caller (another Python thread, or a
// nested call) does not wait: it falls back to spawning threads for its call, as before.  A
// forked child (multiprocessing) gets a fresh pool: the parent's workers do not exist there.
#pragma once

#include <atomic>
#include <chrono>
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

constexpr std::chrono::microseconds kSpin{2000};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Polls pred() for up to kSpin; true if it became true.
template <class Pred>
bool spin_until(Pred&& pred) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0;; ++i) {
    if (pred()) return true;
    cpu_relax();
    if ((i & 63) == 63) {
      if (std::chrono::steady_clock::now() - t0 > kSpin) return false;
      // If the scheduler put the thread we wait for on *this* core, let it run (a no-op
      // when this core has nothing else to run).
      std::this_thread::yield();
    }
  }
}

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
      remaining_.store(t - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    call(ctx, bounds[0], bounds[1]);
    auto finished = [this] { return remaining_.load(std::memory_order_acquire) == 0; };
    if (!spin_until(finished)) {
      std::unique_lock<std::mutex> g(m_);
      done_.wait(g, finished);
    }
    std::lock_guard<std::mutex> g(m_);  // the last worker has left the critical section
    return true;
  }

 private:
  explicit Pool(long pid) : pid_(pid) {}

  // Called by the owner before it publishes a call: a new worker starts from the current
  // generation, so it sees the call about to be published even if it starts late.
  void grow(int64_t want) {
    std::lock_guard<std::mutex> g(m_);
    while (static_cast<int64_t>(workers_) < want) {
      std::thread(&Pool::work, this, generation_.load()).detach();
      ++workers_;
    }
  }

  void work(uint64_t seen) {
    auto published = [&] { return generation_.load(std::memory_order_acquire) != seen; };
    std::unique_lock<std::mutex> g(m_);
    for (;;) {
      g.unlock();
      const bool hot = spin_until(published);  // the next layer's call comes soon
      g.lock();
      if (!hot) wake_.wait(g, published);
      seen = generation_.load(std::memory_order_relaxed);
      while (next_ < tasks_) {  // claim ranges of the current call until none is left
        const int64_t r = 1 + next_++;
        g.unlock();
        call_(ctx_, bounds_[r], bounds_[r + 1]);
        g.lock();
        if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_.notify_one();
      }
    }
  }

  const long pid_;
  std::mutex busy_;  // held by the caller that owns the pool for one call
  std::mutex m_;     // guards everything below
  std::condition_variable wake_, done_;
  size_t workers_ = 0;
  std::atomic<uint64_t> generation_{0};  // written under m_, polled without it
  RangeFn call_ = nullptr;
  void* ctx_ = nullptr;
  const int64_t* bounds_ = nullptr;
  int64_t tasks_ = 0, next_ = 0;
  std::atomic<int64_t> remaining_{0};    // written under m_, polled without it
};

}  // namespace threads_detail

// The threads worth using for `work` units when each thread should get at least `grain` of
// them: a 2-way split of a ~20 us job costs more in hand-over than it saves (batch-1 layers
// of a small model ran slower on 2 threads than on 1).  Callers state work in their own unit.
inline int threads_for(int threads, int64_t work, int64_t grain) {
  if (threads <= 1) return 1;
  const int64_t useful = grain > 0 ? work / grain : threads;
  return static_cast<int>(useful < 1 ? 1 : (useful < threads ? useful : threads));
}

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
