// A small persistent pool that runs the cameras of one query in parallel.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rdvla::detail {

class WorkerPool {
 public:
  explicit WorkerPool(unsigned workers);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Calls task(i) for every i in [0, count) on the workers and the calling thread, returns
  // once all calls have returned and rethrows the first exception one of them threw.
  // Concurrent calls run one after another.
  void run(std::size_t count, const std::function<void(std::size_t)>& task);

 private:
  struct Job;
  void serve();

  std::mutex run_mutex_;  // held for a whole run()
  std::mutex mutex_;      // guards the fields below
  std::condition_variable wake_;
  std::condition_variable idle_;
  Job* job_ = nullptr;
  std::uint64_t generation_ = 0;
  unsigned busy_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// Calls task(i) for every i in [0, count) like WorkerPool::run, on the process-wide pool
// (one worker fewer than the hardware threads: the caller works too).  In a child forked
// after the pool was made, the tasks run one after another on the calling thread.
void parallel_for(std::size_t count, const std::function<void(std::size_t)>& task);

}  // namespace rdvla::detail
