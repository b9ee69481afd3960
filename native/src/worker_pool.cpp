#include "worker_pool.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include <unistd.h>

namespace rdvla::detail {
namespace {

// The calls of one run(), claimed one at a time by whichever thread is free.
struct Job {
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

// Workers are started on demand, up to the largest count - 1 asked for so far, and a run
// wakes only as many as it has calls beyond the caller's: a query of two cameras keeps one
// worker, and only the threads that run calls grow the stages' thread_local scratch buffers.
class WorkerPool {
 public:
  ~WorkerPool() = delete;  // its detached workers use it until the process ends

  // parallel_for's work for count > 1 (a single call needs no pool).
  void run(std::size_t count, const std::function<void(std::size_t)>& task) {
    const std::lock_guard<std::mutex> serial(run_mutex_);
    const std::size_t helpers = std::min(count - 1, max_workers_);
    for (; workers_ < helpers; ++workers_) std::thread([this] { serve(); }).detach();
    Job job(task, count);
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      seats_ = helpers;
    }
    for (std::size_t i = 0; i < helpers; ++i) wake_.notify_one();
    job.work();
    {
      // Withdraw the job so that a worker waking late does not join it, then wait for the
      // workers still inside it: `job` lives on this stack frame.
      std::unique_lock<std::mutex> lock(mutex_);
      job_ = nullptr;
      seats_ = 0;
      idle_.wait(lock, [this] { return busy_ == 0; });
    }
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  void serve() {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [this] { return seats_ > 0; });
      --seats_;
      Job& job = *job_;
      ++busy_;
      lock.unlock();
      job.work();
      lock.lock();
      if (--busy_ == 0) idle_.notify_one();
    }
  }

  const std::size_t max_workers_ = std::max(1u, std::thread::hardware_concurrency()) - 1;
  std::mutex run_mutex_;     // held for a whole run()
  std::size_t workers_ = 0;  // started so far; guarded by run_mutex_
  std::mutex mutex_;         // guards the fields below
  std::condition_variable wake_;
  std::condition_variable idle_;
  Job* job_ = nullptr;
  std::size_t seats_ = 0;  // workers the current job still takes; nonzero only while job_ is set
  unsigned busy_ = 0;
};

}  // namespace

void parallel_for(std::size_t count, const std::function<void(std::size_t)>& task) {
  // Made on first use and deliberately never destroyed: its workers are detached and wait
  // on it until the process ends.  A child forked after that holds a copy of it, perhaps
  // with a mutex locked or a worker counted busy, but none of its threads, so handing it
  // work could hang: the child runs the tasks itself.
  static const pid_t owner = getpid();
  static WorkerPool& pool = *new WorkerPool;
  if (count > 1 && getpid() == owner) {
    pool.run(count, task);
    return;
  }
  for (std::size_t i = 0; i < count; ++i) task(i);
}

}  // namespace rdvla::detail
