#include "worker_pool.h"

#include <algorithm>
#include <atomic>
#include <exception>

#include <unistd.h>

namespace rdvla::detail {

struct WorkerPool::Job {
  Job(const std::function<void(std::size_t)>& task, std::size_t count) : task(task), count(count) {}

  const std::function<void(std::size_t)>& task;
  const std::size_t count;
  std::atomic<std::size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;

  void work() {
    for (std::size_t i = next++; i < count; i = next++) {
      try {
        task(i);
      } catch (...) {
        const std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
      }
    }
  }
};

WorkerPool::WorkerPool(unsigned workers) {
  threads_.reserve(workers);
  for (unsigned i = 0; i < workers; ++i) threads_.emplace_back([this] { serve(); });
}

WorkerPool::~WorkerPool() {
  {
    const std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& thread : threads_) thread.join();
}

void WorkerPool::run(std::size_t count, const std::function<void(std::size_t)>& task) {
  const std::lock_guard<std::mutex> serial(run_mutex_);
  Job job(task, count);
  if (count > 1 && !threads_.empty()) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      ++generation_;
    }
    wake_.notify_all();
  }
  job.work();
  {
    // Withdraw the job so that a worker waking late does not join it, then wait for the
    // workers still inside it: `job` lives on this stack frame.
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = nullptr;
    idle_.wait(lock, [this] { return busy_ == 0; });
  }
  if (job.error) std::rethrow_exception(job.error);
}

void WorkerPool::serve() {
  std::uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    Job* job = job_;
    if (job == nullptr) continue;
    ++busy_;
    lock.unlock();
    job->work();
    lock.lock();
    if (--busy_ == 0) idle_.notify_all();
  }
}

void parallel_for(std::size_t count, const std::function<void(std::size_t)>& task) {
  struct Shared {
    pid_t owner;
    WorkerPool pool;
  };
  // Made on first use and deliberately never destroyed: a forked child holds a copy of it
  // but none of its threads, so joining them at the child's exit (or waking them) would
  // hang; and a process that is ending has no use for the join.
  static Shared& shared = *new Shared{getpid(), WorkerPool(std::max(1u, std::thread::hardware_concurrency()) - 1)};
  if (count > 1 && getpid() == shared.owner) {
    shared.pool.run(count, task);
    return;
  }
  for (std::size_t i = 0; i < count; ++i) task(i);
}

}  // namespace rdvla::detail
