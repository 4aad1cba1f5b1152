#include "modules/exporter/lane_pool.hpp"

#include <algorithm>
#include <condition_variable>
#include <limits>
#include <mutex>
#include <thread>

namespace neco::exporter {
namespace {

constexpr std::size_t kNoTask = std::numeric_limits<std::size_t>::max();

// One run() call's tasks, shared with the lanes working on it.
struct Batch {
  std::vector<std::function<void()>> tasks;
  std::vector<LanePool::Outcome> outcome;
  std::size_t next = 0;    // the next task to start
  std::size_t active = 0;  // lanes on this batch that are not abandoned
  bool closed = false;     // run() returned: start nothing more
};

struct Lane {
  std::thread thread;
  std::condition_variable wake;
  std::shared_ptr<Batch> batch;         // null: idle
  bool abandoned = false;               // run() gave up on the task this lane is in
  std::size_t task = kNoTask;           // index in batch->tasks being run
  LanePool::Clock::time_point started;  // of that task, or of the assignment before it
};

LanePool::Clock::time_point plus(LanePool::Clock::time_point t, std::chrono::milliseconds d) {
  if (d == std::chrono::milliseconds::max() || t > LanePool::Clock::time_point::max() - d) {
    return LanePool::Clock::time_point::max();
  }
  return t + d;
}

}  // namespace

struct LanePool::State {
  std::mutex mutex;
  std::condition_variable progress;  // a batch ran out of lanes working on it
  std::vector<std::shared_ptr<Lane>> lanes;
  std::size_t max_lanes = 1;
  bool stopping = false;

  static void lane_main(const std::shared_ptr<State>& st, const std::shared_ptr<Lane>& lane) {
    std::unique_lock lock(st->mutex);
    for (;;) {
      lane->wake.wait(lock, [&] { return st->stopping || lane->batch != nullptr; });
      if (lane->batch == nullptr) return;
      const auto batch = lane->batch;
      while (!lane->abandoned && !batch->closed && !st->stopping &&
             batch->next < batch->tasks.size()) {
        const std::size_t i = batch->next++;
        lane->task = i;
        lane->started = Clock::now();
        auto task = std::move(batch->tasks[i]);
        lock.unlock();
        task();          // tasks handle their own errors (the pool has nobody to report to)
        task = nullptr;  // its captures die outside the lock
        lock.lock();
        lane->task = kNoTask;
        if (!lane->abandoned) batch->outcome[i] = Outcome::done;
      }
      if (!lane->abandoned && --batch->active == 0) st->progress.notify_all();
      lane->batch.reset();
      lane->abandoned = false;
      if (st->stopping) return;
    }
  }

  // Puts an idle lane (or a new one, within max_lanes) on the batch; false when none is left.
  bool assign(const std::shared_ptr<State>& self, const std::shared_ptr<Batch>& batch) {
    std::shared_ptr<Lane> lane;
    for (const auto& l : lanes) {
      if (l->batch == nullptr) {
        lane = l;
        break;
      }
    }
    if (lane == nullptr) {
      if (lanes.size() >= max_lanes) return false;
      lane = std::make_shared<Lane>();
      lane->thread = std::thread([self, lane] { lane_main(self, lane); });
      lanes.push_back(lane);
    }
    lane->batch = batch;
    lane->started = Clock::now();
    ++batch->active;
    lane->wake.notify_one();
    return true;
  }
};

LanePool::LanePool(std::size_t max_lanes) : state_(std::make_shared<State>()) {
  state_->max_lanes = std::max<std::size_t>(1, max_lanes);
}

LanePool::~LanePool() {
  std::vector<std::thread> idle;
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
    for (auto& lane : state_->lanes) {
      lane->wake.notify_one();
      if (lane->batch == nullptr) {
        idle.push_back(std::move(lane->thread));
      } else {
        lane->thread.detach();  // inside a task; it exits when the task returns
      }
    }
  }
  for (auto& t : idle)
    t.join();
}

std::size_t LanePool::lanes() const {
  std::lock_guard lock(state_->mutex);
  return state_->lanes.size();
}

std::vector<LanePool::Outcome> LanePool::run(std::vector<std::function<void()>> tasks,
                                             const Limits& limits) {
  auto batch = std::make_shared<Batch>();
  batch->outcome.assign(tasks.size(), Outcome::not_run);
  batch->tasks = std::move(tasks);
  const std::size_t n = batch->tasks.size();
  if (n == 0) return {};

  State& st = *state_;
  std::unique_lock lock(st.mutex);
  for (std::size_t k = 0; k < std::min(std::max<std::size_t>(1, limits.parallel), n); ++k) {
    if (!st.assign(state_, batch)) break;
  }
  for (;;) {
    if (batch->active == 0) {
      // Every lane finished or was abandoned; go on with what is left on a fresh lane.
      if (batch->next >= n || !st.assign(state_, batch)) break;
      continue;
    }
    auto deadline = limits.batch_deadline;
    for (const auto& lane : st.lanes) {
      if (lane->batch == batch && !lane->abandoned) {
        deadline = std::min(deadline, plus(lane->started, limits.task_timeout));
      }
    }
    if (deadline == Clock::time_point::max()) {
      st.progress.wait(lock);
    } else {
      st.progress.wait_until(lock, deadline);
    }
    const auto now = Clock::now();
    const bool batch_over = now >= limits.batch_deadline;
    for (const auto& lane : st.lanes) {
      if (lane->batch != batch || lane->abandoned) continue;
      if (!batch_over && now < plus(lane->started, limits.task_timeout)) continue;
      if (lane->task == kNoTask) {
        // Assigned but not yet scheduled (a starved machine): give it a fresh period.
        lane->started = now;
        continue;
      }
      batch->outcome[lane->task] = Outcome::timed_out;
      lane->abandoned = true;
      --batch->active;
    }
    if (batch_over) break;
  }
  batch->closed = true;
  return batch->outcome;
}

}  // namespace neco::exporter
