// Runs batches of blocking tasks (collectors, statfs calls) with deadlines on a few reused
// threads ("lanes"). A lane works through a batch task after task, so a normal batch costs
// one wake-up and no thread creation; a task that misses its deadline keeps its lane (the
// lane is abandoned until the task returns) and the rest of the batch moves to another lane.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

namespace neco::exporter {

class LanePool {
 public:
  using Clock = std::chrono::steady_clock;

  enum class Outcome {
    done,       // the task returned within its deadlines
    timed_out,  // it was still running at a deadline; it goes on alone and its result is lost
    not_run,    // never started: batch deadline reached first, or no lane left
  };

  struct Limits {
    // How long one task may run, counted from its own start.
    std::chrono::milliseconds task_timeout = std::chrono::milliseconds::max();
    // When the whole batch ends; tasks running then time out, tasks not started are not run.
    Clock::time_point batch_deadline = Clock::time_point::max();
    // How many lanes work on the batch at once.
    std::size_t parallel = 1;
  };

  // At most `max_lanes` threads ever exist; lanes are created on demand and kept.
  explicit LanePool(std::size_t max_lanes);
  // Joins idle lanes; a lane still inside a task is detached and ends when the task returns
  // (tasks must own what they use, e.g. through shared_ptr captures).
  ~LanePool();
  LanePool(const LanePool&) = delete;
  LanePool& operator=(const LanePool&) = delete;

  // Runs the tasks in order on up to `limits.parallel` lanes and returns each one's outcome.
  // After it returns, a `done` task's effects are visible to the caller; a `timed_out` task
  // may still be running. Safe to call from several threads.
  std::vector<Outcome> run(std::vector<std::function<void()>> tasks, const Limits& limits);

  // Lanes that exist now (idle, busy or abandoned); for tests and metrics.
  std::size_t lanes() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace neco::exporter
