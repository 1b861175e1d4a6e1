#include "runtime/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace smelt {
namespace {

thread_local bool t_in_parallel_region = false;

// A parallel region often follows the previous one within microseconds (a training step runs
// thousands), and waking a thread blocked on a condition variable costs tens of microseconds.
// So a thread that has run out of work first polls for this long, then blocks.
constexpr auto kSpinBeforeBlocking = std::chrono::microseconds(100);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

// Polls `ready` until it holds or kSpinBeforeBlocking has passed; returns whether it held.
template <class Ready>
bool spin_until(const Ready& ready) {
  const auto deadline = std::chrono::steady_clock::now() + kSpinBeforeBlocking;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() > deadline) return false;
  }
}

// One parallel_for call: its own counters, so a worker that wakes late for an old job finds
// nothing left to claim and never touches a task that has returned.
struct Job {
  const std::function<void(int64_t)>* task = nullptr;
  int64_t n_tasks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> pending{0};
  std::exception_ptr error;
  std::mutex error_mu;
};

class ThreadPool {
 public:
  explicit ThreadPool(int workers) { resize(workers); }
  ~ThreadPool() { stop_all(); }

  void resize(int workers) {
    stop_all();
    stop_ = false;
    stop_flag_ = false;
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { worker_loop(); });
  }

  // Runs task(i) for i in [0, n) on the workers and the calling thread.
  void run(int64_t n, const std::function<void(int64_t)>& task) {
    auto job = std::make_shared<Job>();
    job->task = &task;
    job->n_tasks = n;
    job->pending = n;
    {
      std::lock_guard<std::mutex> g(mu_);
      job_ = job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    cv_work_.notify_all();
    drain(*job);
    spin_until([&] { return job->pending.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lock(mu_);
    cv_done_.wait(lock, [&] { return job->pending.load() == 0; });
    job_.reset();
    lock.unlock();
    if (job->error) std::rethrow_exception(job->error);
  }

 private:
  void drain(Job& job) {
    bool was = t_in_parallel_region;
    t_in_parallel_region = true;
    // Tasks done are counted here and taken off `pending` once, when this thread finds nothing
    // left to claim: one write to the shared counter per thread and job instead of one per task
    // (decoding runs thousands of short tasks per token).
    int64_t done = 0;
    for (;;) {
      int64_t i = job.next.fetch_add(1);
      if (i >= job.n_tasks) break;
      try {
        (*job.task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> g(job.error_mu);
        if (!job.error) job.error = std::current_exception();
      }
      ++done;
    }
    if (done > 0 && job.pending.fetch_sub(done) == done) {
      std::lock_guard<std::mutex> g(mu_);
      cv_done_.notify_all();
    }
    t_in_parallel_region = was;
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      std::shared_ptr<Job> job;
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen || stop_flag_.load(std::memory_order_relaxed); });
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_work_.wait(lock, [&] { return stop_ || (generation_.load() != seen && job_ != nullptr); });
        if (stop_) return;
        seen = generation_.load();
        job = job_;
      }
      drain(*job);
    }
  }

  void stop_all() {
    {
      std::lock_guard<std::mutex> g(mu_);
      stop_ = true;
      stop_flag_ = true;
    }
    cv_work_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::shared_ptr<Job> job_;
  std::atomic<uint64_t> generation_{0};  // read without the lock while spinning
  bool stop_ = false;
  std::atomic<bool> stop_flag_{false};  // stop_, for the spinning reader
};

// SMELT_NUM_THREADS when it is a whole number in 1..4096 (what --threads accepts), else every
// core: a typo must not start tens of thousands of threads.
int default_threads() {
  if (const char* env = std::getenv("SMELT_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 4096) return static_cast<int>(n);
    std::fprintf(stderr, "smelt: warning: SMELT_NUM_THREADS=%s is not a whole number in 1..4096; using every core\n", env);
  }
  return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4096u));
}

int g_threads = default_threads();
std::mutex g_pool_mu;  // one parallel region at a time from outside the pool

ThreadPool& pool() {
  static ThreadPool p(g_threads - 1);
  return p;
}

}  // namespace

int num_threads() { return g_threads; }

void set_num_threads(int n) {
  std::lock_guard<std::mutex> g(g_pool_mu);
  g_threads = std::max(1, n);
  pool().resize(g_threads - 1);
}

void parallel_for(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (end <= begin) return;
  int64_t n = end - begin;
  grain = std::max<int64_t>(1, grain);
  int64_t max_chunks = (n + grain - 1) / grain;
  int64_t chunks = std::min<int64_t>(max_chunks, static_cast<int64_t>(g_threads) * 4);
  if (chunks <= 1 || g_threads == 1 || t_in_parallel_region) {
    fn(begin, end);
    return;
  }
  int64_t step = (n + chunks - 1) / chunks;
  std::lock_guard<std::mutex> g(g_pool_mu);
  pool().run(chunks, [&](int64_t c) {
    int64_t lo = begin + c * step;
    int64_t hi = std::min(end, lo + step);
    if (lo < hi) fn(lo, hi);
  });
}

void parallel_tasks(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  if (n == 1 || g_threads == 1 || t_in_parallel_region) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> g(g_pool_mu);
  pool().run(n, fn);
}

}  // namespace smelt
