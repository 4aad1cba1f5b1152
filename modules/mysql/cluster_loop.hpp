// One turn of the failover loop, gather -> decide -> execute at most one operation, and a small
// driver that repeats it every period until stopped. The memory is passed in and out (the
// module class keeps it in the store, written through the gate, fenced by the leader's
// term, before each operation); nothing here persists.
// Gathering connects to every instance in parallel threads with the spec's short timeouts, so a
// hung instance costs one timeout per gather; the primary's binary log position is read again
// after every replica's, since errant() needs replica positions older than the primary's.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/util/error.hpp"
#include "modules/mysql/cluster_state.hpp"
#include "modules/mysql/operations.hpp"

namespace neco::mysql {

// Reads the status of every instance of the spec (`primary`'s gtid_binlog_pos after the
// others' positions). `bounded` (when not empty) is waited for at most `bound` after the others:
// if it has not answered by then it is observed as unreachable, and its read finishes on a
// thread of its own.
Observation gather(const ClusterSpec& spec, const Access& access, const std::string& primary,
                   std::int64_t now_ms, const std::string& bounded = {},
                   std::chrono::milliseconds bound = std::chrono::milliseconds(0));

// How long a turn waits for the old primary during a failover.
inline constexpr std::chrono::milliseconds kFailoverProbeBound{300};

// Measures, across gathers, how long each replica's received position and heartbeat count
// have not moved, and fills InstanceObservation::silent_ms (decide() treats a replica silent
// for policy.replica_silence as having lost its primary). Kept in memory only.
class ReplicaProgress {
 public:
  void annotate(Observation& observation);

 private:
  struct Seen {
    std::string source;  // host:port it replicates from
    std::uint64_t heartbeats = 0;
    GtidPosition io_pos;
    std::int64_t since_ms = 0;  // when these values were first seen
  };
  std::map<std::string, Seen> seen_;
};

struct RunResult {
  Observation observation;
  Decision decision;
  std::optional<Error> error;  // the operation's failure (the next run retries or re-decides)
  std::chrono::milliseconds gather_time{0};
  std::chrono::milliseconds operation_time{0};
};

// The wall clock in ms since the epoch (what memory windows are measured in).
std::int64_t wall_clock_ms();

// One turn: gather, annotate with `progress` (when given), decide with `memory`, execute the
// operation; `memory` is updated (the decision's memory, then after_success() when the
// operation succeeded). `spec` must be valid.
//
// `gate`, when given, is called after deciding and before executing; when it fails the
// operation is not executed, `memory` is left as it was and the error is the result's. The
// module stores the decision's memory there (fenced by the leader's term, so a deposed leader
// never acts) and refuses while an operator has paused the cluster.
using Gate = std::function<Expected<void>(const Decision& decision, const ClusterMemory& before)>;
RunResult run_once(const ClusterSpec& spec, const Access& access, ClusterMemory& memory,
                   ReplicaProgress* progress = nullptr, const Gate& gate = {});

// How long the loop waits before its next turn: none after an operation that succeeded (at
// most kMaxQuickTurns in a row), until the end of the failure confirmation window while a
// primary is being confirmed as failed (at least kMinWait), else `period`. `quick_turns` counts
// the turns in a row that did not wait.
inline constexpr int kMaxQuickTurns = 8;
inline constexpr std::chrono::milliseconds kMinWait{20};
std::chrono::milliseconds next_turn_in(const RunResult& result, const ClusterMemory& memory,
                                       const ClusterPolicy& policy,
                                       std::chrono::milliseconds period, int& quick_turns);

// Runs run_once on its own thread until stop() or destruction, pacing its turns with
// next_turn_in().
class ClusterLoop {
 public:
  using Observer = std::function<void(const RunResult&, const ClusterMemory&)>;

  ClusterLoop(ClusterSpec spec, Access access, ClusterMemory memory,
              std::chrono::milliseconds period, Observer observer = {}, Gate gate = {});
  ~ClusterLoop();
  ClusterLoop(const ClusterLoop&) = delete;
  ClusterLoop& operator=(const ClusterLoop&) = delete;

  // Stops after the current turn (a turn is bounded by the spec's timeouts).
  void stop();
  // A copy of the memory after the last turn.
  ClusterMemory memory() const;
  // Applies `change` to the memory between turns (e.g. request_switchover).
  Expected<void> update(const std::function<Expected<void>(ClusterMemory&)>& change);
  std::uint64_t turns() const;

 private:
  void run();

  const ClusterSpec spec_;
  const Access access_;
  const std::chrono::milliseconds period_;
  Observer observer_;
  Gate gate_;
  std::mutex turn_mutex_;  // held during a turn and by update()
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  ClusterMemory memory_;
  bool stopping_ = false;
  std::uint64_t turns_ = 0;
  ReplicaProgress progress_;  // used by the loop thread only
  std::thread thread_;
};

}  // namespace neco::mysql
