// The failover loop's turn and its periodic driver (see cluster_loop.hpp).
#include "modules/mysql/cluster_loop.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "agent/util/failpoint.hpp"

namespace neco::mysql {

namespace {

using Clock = std::chrono::steady_clock;

// Reads one instance. `before_position` (when given) runs between the status read and a
// second read of gtid_binlog_pos, which then replaces the first (see gather()).
InstanceObservation observe(const ClusterSpec& spec, const InstanceSpec& instance,
                            const Access& access, const std::function<void()>& before_position) {
  InstanceObservation seen;
  seen.name = instance.name;
  auto client = Client::connect(admin_options(spec, instance, access));
  auto status = client ? read_instance_status(*client)
                       : Expected<InstanceStatus>(std::unexpected(client.error()));
  if (before_position) before_position();
  if (!status) {
    seen.error = status.error().message;
    return seen;
  }
  if (before_position) {
    auto rows = client->query("SELECT @@gtid_binlog_pos");
    if (!rows || rows->rows.size() != 1 || rows->rows[0].empty()) {
      seen.error = rows ? std::string("@@gtid_binlog_pos: no row") : rows.error().message;
      return seen;
    }
    auto position = parse_gtid_position(rows->rows[0][0].value_or(""));
    if (!position) {
      seen.error = position.error().message;
      return seen;
    }
    status->gtid_binlog_pos = std::move(*position);
  }
  seen.reachable = true;
  seen.status = std::move(*status);
  return seen;
}

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

}  // namespace

std::int64_t wall_clock_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

// An observation taken on a thread of its own that the gather waits for only so long: the
// thread owns copies of what it reads, so it may outlive the gather (it ends within the
// instance's own timeouts).
struct BoundedProbe {
  ClusterSpec spec;
  InstanceSpec instance;
  Access access;
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  InstanceObservation seen;
};

}  // namespace

Observation gather(const ClusterSpec& spec, const Access& access, const std::string& primary,
                   std::int64_t now_ms, const std::string& bounded,
                   std::chrono::milliseconds bound) {
  Observation observation;
  observation.now_ms = now_ms;
  observation.instances.resize(spec.instances.size());
  // All in parallel (a hung instance costs one timeout per gather, not one per instance), but
  // the primary's binary log position is read again once every replica was read: errant()
  // needs replica positions older than the primary's.
  std::size_t replicas = 0;
  for (const auto& instance : spec.instances)
    replicas += instance.name == primary || instance.name == bounded ? 0 : 1;
  std::latch replicas_read(static_cast<std::ptrdiff_t>(replicas));
  std::vector<std::thread> threads;
  threads.reserve(spec.instances.size());
  std::shared_ptr<BoundedProbe> probe;
  std::size_t probe_index = 0;
  for (std::size_t i = 0; i < spec.instances.size(); ++i) {
    if (spec.instances[i].name == bounded) {
      probe = std::make_shared<BoundedProbe>();
      probe->spec = spec;
      probe->instance = spec.instances[i];
      probe->access = access;
      probe_index = i;
      std::thread([probe] {
        InstanceObservation seen = observe(probe->spec, probe->instance, probe->access, {});
        const std::lock_guard lock(probe->mutex);
        probe->seen = std::move(seen);
        probe->done = true;
        probe->done_cv.notify_all();
      }).detach();
      continue;
    }
    const bool is_primary = spec.instances[i].name == primary;
    threads.emplace_back([&, i, is_primary] {
      if (is_primary) {
        observation.instances[i] =
            observe(spec, spec.instances[i], access, [&] { replicas_read.wait(); });
      } else {
        observation.instances[i] = observe(spec, spec.instances[i], access, {});
        replicas_read.count_down();
      }
    });
  }
  for (auto& thread : threads)
    thread.join();
  if (probe) {
    std::unique_lock lock(probe->mutex);
    if (probe->done_cv.wait_for(lock, bound, [&] { return probe->done; })) {
      observation.instances[probe_index] = std::move(probe->seen);
    } else {
      InstanceObservation& seen = observation.instances[probe_index];
      seen.name = probe->instance.name;
      seen.error = fmt::format(
          "no answer within {} ms (a failed primary is not waited for longer "
          "during its failover)",
          bound.count());
    }
  }
  return observation;
}

void ReplicaProgress::annotate(Observation& observation) {
  for (auto& instance : observation.instances) {
    const ReplicaStatus* row = nullptr;
    if (instance.reachable && instance.status) {
      for (const auto& r : instance.status->replication) {
        if (r.connection_name.empty()) row = &r;
      }
    }
    if (row == nullptr) {
      seen_.erase(instance.name);
      continue;
    }
    const std::string source = row->master_host + ":" + std::to_string(row->master_port);
    auto it = seen_.find(instance.name);
    if (it != seen_.end() && it->second.source == source &&
        it->second.heartbeats == row->received_heartbeats &&
        it->second.io_pos == row->gtid_io_pos) {
      instance.silent_ms = observation.now_ms - it->second.since_ms;
      continue;
    }
    // Moved (0 ms of silence), or first seen from this source (not measured yet).
    if (it != seen_.end() && it->second.source == source) instance.silent_ms = 0;
    seen_[instance.name] =
        Seen{source, row->received_heartbeats, row->gtid_io_pos, observation.now_ms};
  }
}

RunResult run_once(const ClusterSpec& spec, const Access& access, ClusterMemory& memory,
                   ReplicaProgress* progress, const Gate& gate) {
  RunResult result;
  const auto start = Clock::now();
  const std::string primary = memory.primary.empty() ? spec.declared_primary() : memory.primary;
  // During a failover the old primary is looked at (it may be back, and is then fenced before
  // anything is promoted) but not waited for: a hung one would cost every step a timeout.
  // Errant detection is off then, so no read order is needed either.
  if (memory.failover) {
    result.observation = gather(spec, access, "", wall_clock_ms(), memory.failover->old_primary,
                                kFailoverProbeBound);
  } else {
    result.observation = gather(spec, access, primary, wall_clock_ms());
  }
  result.gather_time = since(start);
  if (progress != nullptr) progress->annotate(result.observation);
  result.decision = decide(spec, result.observation, memory);
  if (gate) {
    if (auto ok = gate(result.decision, memory); !ok) {
      result.error = ok.error();
      return result;
    }
  }
  memory = result.decision.memory;
  // Crash points for fault tests (see mysql.md): the memory is stored, the operation not done
  // (before), or done but its effect not recorded (after); the next leader must finish either.
  const bool crash_points =
      failpoint::any_armed() && !std::holds_alternative<op::None>(result.decision.operation);
  const std::string kind_name = crash_points ? std::string(kind(result.decision.operation)) : "";
  if (crash_points) failpoint::hit("mysql.before." + kind_name);
  const auto op_start = Clock::now();
  if (auto ok = execute(spec, access, result.decision.operation); ok) {
    if (crash_points) failpoint::hit("mysql.after." + kind_name);
    memory = after_success(std::move(memory), result.decision.operation);
  } else {
    result.error = ok.error();
  }
  result.operation_time = since(op_start);
  return result;
}

ClusterLoop::ClusterLoop(ClusterSpec spec, Access access, ClusterMemory memory,
                         std::chrono::milliseconds period, Observer observer, Gate gate)
    : spec_(std::move(spec)),
      access_(std::move(access)),
      period_(period),
      observer_(std::move(observer)),
      gate_(std::move(gate)),
      memory_(std::move(memory)) {
  thread_ = std::thread([this] { run(); });
}

ClusterLoop::~ClusterLoop() {
  stop();
}

void ClusterLoop::stop() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

ClusterMemory ClusterLoop::memory() const {
  const std::lock_guard lock(mutex_);
  return memory_;
}

std::uint64_t ClusterLoop::turns() const {
  const std::lock_guard lock(mutex_);
  return turns_;
}

Expected<void> ClusterLoop::update(const std::function<Expected<void>(ClusterMemory&)>& change) {
  const std::lock_guard turn(turn_mutex_);  // between turns: a turn owns the memory
  const std::lock_guard lock(mutex_);
  return change(memory_);
}

std::chrono::milliseconds next_turn_in(const RunResult& result, const ClusterMemory& memory,
                                       const ClusterPolicy& policy,
                                       std::chrono::milliseconds period, int& quick_turns) {
  using std::chrono::milliseconds;
  // An operation that succeeded changed the servers: look again now rather than a period
  // later, so a failover's fence, promotion and repointing follow each other directly.
  // Bounded, so an operation that succeeds without changing what decide() sees cannot spin.
  if (!result.error && !std::holds_alternative<op::None>(result.decision.operation) &&
      quick_turns < kMaxQuickTurns) {
    ++quick_turns;
    return milliseconds(0);
  }
  quick_turns = 0;
  // A primary being confirmed as failed: wake when the confirmation window ends, not up to a
  // period after it.
  if (!result.error && memory.primary_failed_since_ms && !memory.failover) {
    const std::int64_t due =
        *memory.primary_failed_since_ms + policy.failure_confirm.count() - wall_clock_ms();
    return std::clamp(milliseconds(due), kMinWait, period);
  }
  return period;
}

void ClusterLoop::run() {
  int quick_turns = 0;
  while (true) {
    std::chrono::milliseconds wait = period_;
    {
      const std::lock_guard turn(turn_mutex_);
      ClusterMemory memory;
      {
        const std::lock_guard lock(mutex_);
        if (stopping_) return;
        memory = memory_;
      }
      RunResult result = run_once(spec_, access_, memory, &progress_, gate_);
      if (observer_) observer_(result, memory);
      wait = next_turn_in(result, memory, spec_.policy, period_, quick_turns);
      const std::lock_guard lock(mutex_);
      memory_ = std::move(memory);
      ++turns_;
    }
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, wait, [this] { return stopping_; })) return;
  }
}

}  // namespace neco::mysql
