// Runs the cameras of one query in parallel.
#pragma once

#include <cstddef>
#include <functional>

namespace rdvla::detail {

// Calls task(i) for every i in [0, count), on the calling thread and up to count - 1 workers
// of a process-wide pool (at most one fewer than the hardware threads), returns once all
// calls have returned and rethrows the first exception one of them threw.
// Concurrent calls run one after another.  In a child forked after the first parallel call,
// the tasks run one after another on the calling thread.
void parallel_for(std::size_t count, const std::function<void(std::size_t)>& task);

}  // namespace rdvla::detail
