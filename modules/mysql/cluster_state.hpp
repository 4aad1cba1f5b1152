// The failover brain of the mysql module, pure (no I/O, no clock): what a MariaDB cluster is
// declared to be (ClusterSpec), what the controller saw of it just now (Observation), what it
// remembers between runs (ClusterMemory, serializable so a leader can keep it in the store),
// and decide(), which names the cluster's state and at most one Operation to do next.
//
// The loop around it is gather -> decide -> do one operation -> repeat. Every decision is
// derived from the observed state plus the memory, never from "what I did last", so a run that
// crashed in the middle of an operation is finished or redone by the next one: each operation
// is harmless to repeat, and the next step is chosen by what is already true on the servers.
//
// Failure detection does not flap: the primary is failed only when the controller cannot reach
// it AND every reachable replica has lost it (IO thread not running or reconnecting, or nothing,
// not even a heartbeat, received within policy.replica_silence), continuously for
// policy.failure_confirm. Failover fences first (every replica's IO thread stopped, so the
// old primary can never collect another semi-sync ack), then chooses the candidate on the final
// received positions, waits for it to apply its relay log, promotes it and repoints the others.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/util/error.hpp"
#include "modules/mysql/client.hpp"
#include "modules/mysql/gtid.hpp"

namespace neco::mysql {

// One managed instance.
struct InstanceSpec {
  std::string name;  // unique in the cluster: [A-Za-z0-9_.-], 1..64 characters
  std::string host;  // what the replicas (and, by default, the controller) connect to
  std::uint16_t port = 3306;
  bool primary = false;  // the declared primary (exactly one); used when the memory knows none
  // The address the controller connects to, e.g. through a management network or a proxy
  // ("" / 0: host / port). Replicas are always pointed at host:port.
  std::string admin_host;
  std::uint16_t admin_port = 0;

  const std::string& controller_host() const { return admin_host.empty() ? host : admin_host; }
  std::uint16_t controller_port() const { return admin_port == 0 ? port : admin_port; }
};

// How the cluster is run.
struct ClusterPolicy {
  bool failover = true;  // false: a failed primary is reported, never replaced
  // A replica whose IO thread says "Yes" has still lost its primary when neither its received
  // position nor its heartbeat count moved for this long (heartbeats come every
  // heartbeat_period_ms, 1 s by default, when there is nothing else to send).
  std::chrono::milliseconds replica_silence{3000};
  // The primary must look failed this long, continuously, before failover starts.
  std::chrono::milliseconds failure_confirm{1000};
  // How long a candidate may take to apply its relay log in one wait (each wait is bounded;
  // the next run waits again while it makes progress).
  std::chrono::milliseconds relay_apply_timeout{5000};
  // Switchover: clients of the old primary get this long to finish before they are killed.
  std::chrono::milliseconds kill_grace{500};
  // Switchover: how long the target may take to catch up in one wait.
  std::chrono::milliseconds catchup_timeout{5000};
  std::chrono::seconds connect_timeout{1};  // controller to instance, each connect
  std::chrono::seconds read_timeout{2};     // controller to instance, each reply
};

struct ClusterSpec {
  std::string name;  // [A-Za-z0-9_.-], 1..64 characters
  std::vector<InstanceSpec> instances;
  ClusterPolicy policy;

  // The instance of a name, or nullptr.
  const InstanceSpec* find(std::string_view instance) const;
  // The declared primary's name ("" when none is declared; validate() rejects that).
  std::string declared_primary() const;
};

// Checks the spec; the error (invalid_argument) names the field: empty name or instances, bad
// names, empty or too long host (or admin_host), port 0, duplicate names, host:port or
// controller addresses, zero or several primaries, out-of-range timeouts.
Expected<void> validate(const ClusterSpec& spec);

// What the controller saw of one instance in one gather.
struct InstanceObservation {
  std::string name;
  bool reachable = false;                // its status could be read just now
  std::string error;                     // why not, when unreachable
  std::optional<InstanceStatus> status;  // when reachable
  // The controller's view across gathers: how long this replica's received position and
  // heartbeat count have not moved (nullopt: not measured yet, e.g. first sight or a new
  // source). Not part of the memory: losing it only restarts the measurement.
  std::optional<std::int64_t> silent_ms;
};

struct Observation {
  std::int64_t now_ms = 0;  // wall clock (ms since the epoch): windows in the memory use it
  std::vector<InstanceObservation> instances;  // one per spec instance, any order

  // The observation of an instance, or nullptr when it is not in the list.
  const InstanceObservation* find(std::string_view instance) const;
};

// What survives between runs (and leaders). Everything decide() cannot read from the servers.
struct ClusterMemory {
  struct Failover {
    std::string old_primary;
    std::string candidate;  // "" until chosen (after the fence, on final positions)
    std::int64_t started_ms = 0;
    friend bool operator==(const Failover&, const Failover&) = default;
  };
  struct Switchover {
    std::string old_primary;
    std::string target;
    std::int64_t started_ms = 0;
    bool writes_blocked = false;  // read_only set, grace waited, clients killed
    friend bool operator==(const Switchover&, const Switchover&) = default;
  };

  std::string primary;  // the instance holding the primary role; "" = the declared one
  std::optional<std::int64_t> primary_failed_since_ms;  // anti-flap window start
  std::optional<Failover> failover;
  std::optional<Switchover> switchover;
  std::vector<std::string> errant;  // replicas seen with errant transactions (sticky, sorted)
  std::uint64_t failovers = 0;      // completed
  std::uint64_t switchovers = 0;    // completed

  friend bool operator==(const ClusterMemory&, const ClusterMemory&) = default;
};

// JSON text of the memory, and back (invalid_argument naming the field on bad input).
std::string to_json(const ClusterMemory& memory);
Expected<ClusterMemory> memory_from_json(std::string_view text);

// Asks for a planned switchover to `target`. failed_precondition when a failover or switchover
// is in progress or the target is the primary, errant or not a replica; not_found for an
// unknown target.
Expected<void> request_switchover(const ClusterSpec& spec, ClusterMemory& memory,
                                  const std::string& target, std::int64_t now_ms);

// The operations, each idempotent (operations.cpp executes them).
namespace op {
struct None {};
// STOP SLAVE IO_THREAD on each: the old primary can collect no more semi-sync acks.
struct FenceReplicasIo {
  std::vector<std::string> replicas;
};
// SELECT MASTER_GTID_WAIT(target, timeout) on the candidate: its relay log is applied.
struct WaitRelayApply {
  std::string candidate;
  GtidPosition target;
  std::chrono::milliseconds timeout{0};
};
// START SLAVE SQL_THREAD on the candidate, whose SQL thread was stopped without an error, so it
// applies the relay log it holds. Never the IO thread: restarting it discards the relay log
// not yet applied, which may hold the only copy of acknowledged writes. With both threads
// stopped MariaDB discards it on any START in GTID mode too, so the connection is first
// switched to file/position mode at the SQL thread's relay log position (CHANGE MASTER
// MASTER_USE_GTID = no, RELAY_LOG_FILE, RELAY_LOG_POS keeps the relay log).
struct StartSqlThread {
  std::string candidate;
};
// STOP SLAVE; RESET SLAVE ALL; semi-sync master ON; read_only OFF.
struct Promote {
  std::string instance;
};
// On each: STOP SLAVE; CHANGE MASTER to the primary (MASTER_USE_GTID=slave_pos); START SLAVE.
struct Repoint {
  std::string primary;
  std::vector<std::string> replicas;
};
// Kill client connections; read_only ON; kill again (what connected meanwhile).
struct Fence {
  std::string instance;
};
// A fenced former primary becomes a replica: semi-sync master OFF, STOP SLAVE,
// gtid_slave_pos = its gtid_current_pos, CHANGE MASTER to the primary, START SLAVE.
struct Rejoin {
  std::string instance;
  std::string primary;
};
// Switchover: read_only ON on the primary, wait the grace, kill its client connections.
struct BlockWrites {
  std::string instance;
  std::chrono::milliseconds grace{0};
};
// Switchover: MASTER_GTID_WAIT on the target for the old primary's gtid_binlog_pos.
struct WaitCatchup {
  std::string target;
  GtidPosition position;
  std::chrono::milliseconds timeout{0};
};
}  // namespace op

using Operation =
    std::variant<op::None, op::FenceReplicasIo, op::WaitRelayApply, op::StartSqlThread, op::Promote,
                 op::Repoint, op::Fence, op::Rejoin, op::BlockWrites, op::WaitCatchup>;

// Stable lower_snake name of an operation's kind ("none", "fence_replicas_io", ...).
std::string_view kind(const Operation& operation);
// One line for logs: the kind and its instances.
std::string describe(const Operation& operation);

enum class ClusterState {
  healthy,         // primary writable, every replica replicating from it
  degraded,        // primary writable; some replica down, stopped, errant or being rejoined
  suspect,         // primary unreachable but not (yet) failed: a replica sees it, or in window
  failing_over,    // a failover is in progress
  switching_over,  // a planned switchover is in progress
  failed,          // primary failed and no failover possible (disabled, no eligible replica)
  split_brain,     // several writable instances and no memory to tell which is the primary
  lost,            // no instance reachable: nothing can be known
};
std::string_view to_string(ClusterState state);

struct Decision {
  ClusterState state = ClusterState::lost;
  Operation operation;              // at most one thing to do now
  std::string reason;               // why, for humans
  ClusterMemory memory;             // to store before executing the operation
  std::string primary;              // the primary after this decision ("" when unknown)
  std::vector<std::string> errant;  // replicas with errant transactions (reported, never promoted)
};

// The decision for one gathered observation. `spec` must be valid.
Decision decide(const ClusterSpec& spec, const Observation& observation,
                const ClusterMemory& memory);

// The memory after `operation` succeeded (what the servers cannot show: a switchover's kill
// of client connections happened).
ClusterMemory after_success(ClusterMemory memory, const Operation& operation);

}  // namespace neco::mysql
