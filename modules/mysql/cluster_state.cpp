// The pure failover decision of the mysql module (see cluster_state.hpp): spec validation, the
// serializable memory, and decide(), which chooses one idempotent step from what was observed.
#include "modules/mysql/cluster_state.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

namespace neco::mysql {

namespace {

using json = nlohmann::json;

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
  });
}

Expected<void> check_ms(std::string_view field, std::chrono::milliseconds value,
                        std::chrono::milliseconds low, std::chrono::milliseconds high) {
  if (value < low || value > high) {
    return fail(Errc::invalid_argument,
                fmt::format("policy.{} {} ms is out of range ({}..{} ms)", field, value.count(),
                            low.count(), high.count()));
  }
  return {};
}

// The default replication connection of an instance (the only one the module manages).
const ReplicaStatus* source_row(const InstanceStatus& status) {
  for (const auto& row : status.replication) {
    if (row.connection_name.empty()) return &row;
  }
  return nullptr;
}

bool replicates_from(const InstanceStatus& status, const InstanceSpec& source) {
  const ReplicaStatus* row = source_row(status);
  return row != nullptr && row->master_host == source.host && row->master_port == source.port;
}

// Writable and replicating from nobody: what promotion leaves behind.
bool promoted(const InstanceStatus& status) {
  return !status.read_only && status.replication.empty();
}

std::string join(const std::vector<std::string>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

bool contains_name(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// The status of a reachable instance, or nullptr.
const InstanceStatus* status_of(const Observation& observation, std::string_view name) {
  const InstanceObservation* seen = observation.find(name);
  if (seen == nullptr || !seen->reachable || !seen->status) return nullptr;
  return &*seen->status;
}

std::string unreachable_reason(const Observation& observation, std::string_view name) {
  const InstanceObservation* seen = observation.find(name);
  if (seen == nullptr) return "not observed";
  return seen->error.empty() ? std::string("unreachable") : seen->error;
}

class Decider {
 public:
  Decider(const ClusterSpec& spec, const Observation& observation, const ClusterMemory& memory)
      : spec_(spec), obs_(observation) {
    d_.memory = memory;
  }

  Decision run() {
    bool any = false;
    for (const auto& instance : spec_.instances)
      any = any || status_of(obs_, instance.name);
    if (!any) return finish(ClusterState::lost, op::None{}, "no instance is reachable");
    if (d_.memory.primary.empty() && !bootstrap_primary()) return std::move(d_);
    // A memory from another spec (instances renamed or removed): never act on it.
    for (const std::string* name :
         {&d_.memory.primary, d_.memory.failover ? &d_.memory.failover->old_primary : nullptr,
          d_.memory.failover ? &d_.memory.failover->candidate : nullptr,
          d_.memory.switchover ? &d_.memory.switchover->target : nullptr}) {
      if (name != nullptr && !name->empty() && spec_.find(*name) == nullptr) {
        return finish(ClusterState::failed, op::None{},
                      fmt::format("the memory names instance \"{}\", which is not in the spec "
                                  "of {}: refusing to act",
                                  *name, spec_.name));
      }
    }
    note_errant();
    if (d_.memory.failover) return failover();
    if (d_.memory.switchover) {
      if (auto done = switchover()) return std::move(*done);
    }
    return normal();
  }

 private:
  Decision finish(ClusterState state, Operation operation, std::string reason) {
    d_.state = state;
    d_.operation = std::move(operation);
    d_.reason = std::move(reason);
    d_.primary = d_.memory.failover ? std::string() : d_.memory.primary;
    d_.errant = d_.memory.errant;
    return std::move(d_);
  }

  // No memory of a primary: the single writable instance, else the declared one.
  bool bootstrap_primary() {
    std::vector<std::string> writable;
    for (const auto& instance : spec_.instances) {
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status != nullptr && !status->read_only) writable.push_back(instance.name);
    }
    if (writable.size() > 1) {
      finish(ClusterState::split_brain, op::None{},
             fmt::format("{} are all writable and no primary is remembered: refusing to guess "
                         "which to fence",
                         join(writable)));
      return false;
    }
    d_.memory.primary = writable.empty() ? spec_.declared_primary() : writable.front();
    return true;
  }

  // Replicas with transactions the primary lacks are remembered for good. Replicas were read
  // before the primary (cluster_loop gathers in that order) and a primary only moves forward,
  // so a healthy replica never looks errant here.
  // During a failover the primary is gone; after a switchover's promotion the target takes
  // writes but was gathered before the replicas that follow it, so comparing them with either
  // instance could brand a healthy replica: detection resumes when the switchover is done.
  void note_errant() {
    if (d_.memory.failover) return;
    if (d_.memory.switchover) {
      const InstanceStatus* target = status_of(obs_, d_.memory.switchover->target);
      if (target != nullptr && promoted(*target)) return;
    }
    const InstanceStatus* primary = status_of(obs_, d_.memory.primary);
    if (primary == nullptr) return;
    for (const auto& instance : spec_.instances) {
      if (instance.name == d_.memory.primary) continue;
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status == nullptr || contains_name(d_.memory.errant, instance.name)) continue;
      if (!errant(status->gtid_current_pos, primary->gtid_binlog_pos).empty() ||
          diverged_from_primary(*status)) {
        d_.memory.errant.push_back(instance.name);
        std::sort(d_.memory.errant.begin(), d_.memory.errant.end());
      }
    }
  }

  // The primary refused this replica's position (error 1236: its GTID is not in the
  // primary's binlog although the binlog has higher sequence numbers): a transaction of the
  // same sequence number but another origin, e.g. an old primary's unacknowledged tail that
  // crash recovery committed. Positions alone cannot show it (only the last GTID per domain
  // is known), the primary's answer does.
  bool diverged_from_primary(const InstanceStatus& status) const {
    const InstanceSpec* pspec = spec_.find(d_.memory.primary);
    if (pspec == nullptr || !replicates_from(status, *pspec)) return false;
    const std::string& e = source_row(status)->last_io_error;
    return e.find("1236") != std::string::npos && e.find("diverged") != std::string::npos;
  }

  Decision failover() {
    ClusterMemory::Failover& f = *d_.memory.failover;
    const InstanceSpec* old = spec_.find(f.old_primary);
    // 1. Fence: no replica may keep (or regain) a connection to the old primary.
    std::vector<std::string> fence;
    for (const auto& instance : spec_.instances) {
      if (instance.name == f.old_primary) continue;
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status == nullptr || old == nullptr || !replicates_from(*status, *old)) continue;
      if (source_row(*status)->io_running != "No") fence.push_back(instance.name);
    }
    if (!fence.empty()) {
      return finish(ClusterState::failing_over, op::FenceReplicasIo{fence},
                    fmt::format("failover from {}: stopping the IO thread of {} so the old primary "
                                "collects no more acknowledgements",
                                f.old_primary, join(fence)));
    }
    // The old primary back and writable: fence it before anything else is made writable.
    if (const InstanceStatus* back = status_of(obs_, f.old_primary);
        back != nullptr && !back->read_only) {
      return finish(ClusterState::failing_over, op::Fence{f.old_primary},
                    fmt::format("failover from {}: it is reachable and writable again: fencing it",
                                f.old_primary));
    }
    // 2. Choose, on the final received positions.
    if (f.candidate.empty()) {
      std::vector<CandidateInfo> infos;
      for (const auto& instance : spec_.instances) {
        if (instance.name == f.old_primary) continue;
        CandidateInfo info;
        info.name = instance.name;
        info.errant = contains_name(d_.memory.errant, instance.name);
        const InstanceStatus* status = status_of(obs_, instance.name);
        info.reachable = status != nullptr;
        if (status != nullptr) {
          info.current_pos = status->gtid_current_pos;
          if (const ReplicaStatus* row = source_row(*status)) info.io_pos = row->gtid_io_pos;
        }
        infos.push_back(std::move(info));
      }
      auto chosen = choose_candidate(infos);
      if (!chosen) {
        return finish(ClusterState::failed, op::None{},
                      fmt::format("failover from {}: no replica can be promoted: {}", f.old_primary,
                                  chosen.error().message));
      }
      f.candidate = *chosen;
    }
    const std::string candidate = f.candidate;
    const InstanceStatus* cand = status_of(obs_, candidate);
    if (cand == nullptr) {
      return finish(ClusterState::failing_over, op::None{},
                    fmt::format("failover from {}: candidate {} is unreachable ({}): waiting, "
                                "since it may already have been promoted",
                                f.old_primary, candidate, unreachable_reason(obs_, candidate)));
    }
    // 3. Apply the relay log, then promote.
    if (!promoted(*cand)) {
      const ReplicaStatus* row = source_row(*cand);
      const GtidPosition received = row != nullptr ? row->gtid_io_pos : GtidPosition{};
      if (!contains(cand->gtid_current_pos, received)) {
        // Stopped cleanly (by hand, or by a restart with skip_slave_start): start it again, and
        // only it. Stopped on an error: an operator must repair it; promoting another, less
        // advanced replica would lose what only this one received.
        if (row != nullptr && !row->sql_running && row->last_sql_error.empty()) {
          return finish(ClusterState::failing_over, op::StartSqlThread{candidate},
                        fmt::format("failover from {}: candidate {} has applied {} of {} received "
                                    "and its SQL thread is stopped without an error: starting it",
                                    f.old_primary, candidate, to_string(cand->gtid_current_pos),
                                    to_string(received)));
        }
        if (row == nullptr || !row->sql_running) {
          return finish(
              ClusterState::failing_over, op::None{},
              fmt::format("failover from {}: candidate {} has applied {} of {} received and its "
                          "SQL thread is stopped ({}): waiting, promoting now would lose the rest",
                          f.old_primary, candidate, to_string(cand->gtid_current_pos),
                          to_string(received),
                          row == nullptr ? "no replication configured" : row->last_sql_error));
        }
        return finish(ClusterState::failing_over,
                      op::WaitRelayApply{candidate, received, spec_.policy.relay_apply_timeout},
                      fmt::format("failover from {}: candidate {} applies its relay log up to {}",
                                  f.old_primary, candidate, to_string(received)));
      }
      return finish(ClusterState::failing_over, op::Promote{candidate},
                    fmt::format("failover from {}: promoting {} at {}", f.old_primary, candidate,
                                to_string(cand->gtid_current_pos)));
    }
    // 4. Repoint the other reachable replicas (errant ones stay apart; the old primary is
    // fenced and rejoined by the normal path once it is back).
    const InstanceSpec* cand_spec = spec_.find(candidate);
    std::vector<std::string> repoint;
    for (const auto& instance : spec_.instances) {
      if (instance.name == candidate || instance.name == f.old_primary) continue;
      if (contains_name(d_.memory.errant, instance.name)) continue;
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status == nullptr || !status->read_only) continue;
      const ReplicaStatus* row = source_row(*status);
      if (!replicates_from(*status, *cand_spec) || row->io_running == "No" || !row->sql_running) {
        repoint.push_back(instance.name);
      }
    }
    if (!repoint.empty()) {
      return finish(ClusterState::failing_over, op::Repoint{candidate, repoint},
                    fmt::format("failover from {}: repointing {} to the new primary {}",
                                f.old_primary, join(repoint), candidate));
    }
    // 5. Done: the normal path takes over (fencing and rejoining the old primary later).
    d_.memory.primary = candidate;
    d_.memory.failover.reset();
    d_.memory.primary_failed_since_ms.reset();
    ++d_.memory.failovers;
    return normal();
  }

  // nullopt when the switchover was finished or abandoned and the normal path decides.
  std::optional<Decision> switchover() {
    ClusterMemory::Switchover& s = *d_.memory.switchover;
    const InstanceStatus* old = status_of(obs_, s.old_primary);
    const InstanceStatus* target = status_of(obs_, s.target);
    const InstanceSpec* target_spec = spec_.find(s.target);
    if (target == nullptr || target_spec == nullptr) {
      return finish(ClusterState::switching_over, op::None{},
                    fmt::format("switchover to {}: the target is unreachable ({}): waiting",
                                s.target, unreachable_reason(obs_, s.target)));
    }
    if (!promoted(*target)) {
      if (contains_name(d_.memory.errant, s.target)) {
        // It has transactions the old primary lacks: abandon; the normal path makes the old
        // primary writable again.
        d_.memory.switchover.reset();
        return std::nullopt;
      }
      if (old == nullptr) {
        // The old primary went away before the target took over: abandon; the normal path
        // restores it when it returns, or fails it over.
        d_.memory.switchover.reset();
        return std::nullopt;
      }
      if (!s.writes_blocked || !old->read_only) {
        return finish(
            ClusterState::switching_over, op::BlockWrites{s.old_primary, spec_.policy.kill_grace},
            fmt::format("switchover to {}: blocking writes on {}", s.target, s.old_primary));
      }
      if (!contains(target->gtid_current_pos, old->gtid_binlog_pos)) {
        const ReplicaStatus* row = source_row(*target);
        if (row == nullptr || !row->sql_running || row->io_running == "No") {
          return finish(ClusterState::switching_over, op::None{},
                        fmt::format("switchover to {}: the target is at {}, behind {}, and does "
                                    "not replicate: waiting",
                                    s.target, to_string(target->gtid_current_pos),
                                    to_string(old->gtid_binlog_pos)));
        }
        return finish(ClusterState::switching_over,
                      op::WaitCatchup{s.target, old->gtid_binlog_pos, spec_.policy.catchup_timeout},
                      fmt::format("switchover to {}: waiting for it to apply {}", s.target,
                                  to_string(old->gtid_binlog_pos)));
      }
      return finish(ClusterState::switching_over, op::Promote{s.target},
                    fmt::format("switchover to {}: promoting it at {}", s.target,
                                to_string(target->gtid_current_pos)));
    }
    std::vector<std::string> repoint;
    for (const auto& instance : spec_.instances) {
      if (instance.name == s.target || instance.name == s.old_primary) continue;
      if (contains_name(d_.memory.errant, instance.name)) continue;
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status == nullptr || !status->read_only) continue;
      const ReplicaStatus* row = source_row(*status);
      if (!replicates_from(*status, *target_spec) || row->io_running == "No") {
        repoint.push_back(instance.name);
      }
    }
    if (!repoint.empty()) {
      return finish(ClusterState::switching_over, op::Repoint{s.target, repoint},
                    fmt::format("switchover to {}: repointing {}", s.target, join(repoint)));
    }
    if (old != nullptr && !replicates_from(*old, *target_spec)) {
      return finish(
          ClusterState::switching_over, op::Rejoin{s.old_primary, s.target},
          fmt::format("switchover to {}: {} becomes its replica", s.target, s.old_primary));
    }
    d_.memory.primary = s.target;
    d_.memory.switchover.reset();
    ++d_.memory.switchovers;
    return std::nullopt;
  }

  Decision normal() {
    const std::string primary = d_.memory.primary;
    const InstanceSpec* pspec = spec_.find(primary);
    const InstanceStatus* pstatus = status_of(obs_, primary);
    if (pstatus == nullptr) return primary_unreachable(*pspec);
    d_.memory.primary_failed_since_ms.reset();

    // Another writable instance (an old primary back, a replica made writable by hand).
    for (const auto& instance : spec_.instances) {
      if (instance.name == primary) continue;
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status != nullptr && !status->read_only) {
        return finish(ClusterState::split_brain, op::Fence{instance.name},
                      fmt::format("{} is writable besides the primary {}: fencing it",
                                  instance.name, primary));
      }
    }
    if (pstatus->read_only) {
      if (const ReplicaStatus* row = source_row(*pstatus); row != nullptr) {
        return finish(ClusterState::failed, op::None{},
                      fmt::format("primary {} is read-only and replicates from {}:{}: refusing "
                                  "to promote it outside a failover",
                                  primary, row->master_host, row->master_port));
      }
      return finish(ClusterState::degraded, op::Promote{primary},
                    fmt::format("primary {} is read-only: making it writable", primary));
    }

    std::vector<std::string> notes;
    for (const auto& instance : spec_.instances) {
      if (instance.name == primary) continue;
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status == nullptr) {
        notes.push_back(fmt::format("{} unreachable ({})", instance.name,
                                    unreachable_reason(obs_, instance.name)));
        continue;
      }
      if (contains_name(d_.memory.errant, instance.name)) {
        notes.push_back(
            fmt::format("{} has errant transactions (never promoted nor rejoined)", instance.name));
        continue;
      }
      const ReplicaStatus* row = source_row(*status);
      if (!replicates_from(*status, *pspec)) {
        return finish(ClusterState::degraded, op::Rejoin{instance.name, primary},
                      fmt::format("{} does not replicate from the primary {}: rejoining it",
                                  instance.name, primary));
      }
      const bool errors = !row->last_io_error.empty() || !row->last_sql_error.empty();
      if ((row->io_running == "No" || !row->sql_running) && !errors) {
        return finish(ClusterState::degraded, op::Rejoin{instance.name, primary},
                      fmt::format("{} has replication stopped: restarting it", instance.name));
      }
      if (row->io_running != "Yes" || !row->sql_running) {
        notes.push_back(fmt::format("{} replication IO {} SQL {} ({}{})", instance.name,
                                    row->io_running, row->sql_running ? "Yes" : "No",
                                    row->last_io_error, row->last_sql_error));
      }
    }
    if (notes.empty()) {
      return finish(ClusterState::healthy, op::None{},
                    fmt::format("primary {} writable, every replica replicating", primary));
    }
    return finish(ClusterState::degraded, op::None{},
                  fmt::format("primary {} writable; {}", primary, fmt::join(notes, "; ")));
  }

  Decision primary_unreachable(const InstanceSpec& primary) {
    std::vector<std::string> seeing;
    std::vector<std::string> reachable;
    for (const auto& instance : spec_.instances) {
      if (instance.name == primary.name) continue;
      const InstanceStatus* status = status_of(obs_, instance.name);
      if (status == nullptr) continue;
      reachable.push_back(instance.name);
      const InstanceObservation* seen = obs_.find(instance.name);
      const bool silent =
          seen->silent_ms && *seen->silent_ms >= spec_.policy.replica_silence.count();
      if (replicates_from(*status, primary) && source_row(*status)->io_running == "Yes" &&
          !silent) {
        seeing.push_back(instance.name);
      }
    }
    const std::string why = unreachable_reason(obs_, primary.name);
    if (!seeing.empty()) {
      d_.memory.primary_failed_since_ms.reset();
      return finish(ClusterState::suspect, op::None{},
                    fmt::format("primary {} is unreachable from the controller ({}) but {} still "
                                "replicate from it: not failing over",
                                primary.name, why, join(seeing)));
    }
    auto& since = d_.memory.primary_failed_since_ms;
    if (!since) since = obs_.now_ms;
    if (reachable.empty()) {
      return finish(
          ClusterState::failed, op::None{},
          fmt::format("primary {} is unreachable ({}) and so is every replica", primary.name, why));
    }
    const std::int64_t elapsed = obs_.now_ms - *since;
    if (elapsed < spec_.policy.failure_confirm.count()) {
      return finish(ClusterState::suspect, op::None{},
                    fmt::format("primary {} is unreachable ({}) and lost by every reachable "
                                "replica for {} ms of the {} ms confirmation window",
                                primary.name, why, elapsed, spec_.policy.failure_confirm.count()));
    }
    if (!spec_.policy.failover) {
      return finish(ClusterState::failed, op::None{},
                    fmt::format("primary {} failed ({}); failover is disabled", primary.name, why));
    }
    d_.memory.switchover.reset();
    d_.memory.failover = ClusterMemory::Failover{primary.name, "", obs_.now_ms};
    return failover();
  }

  const ClusterSpec& spec_;
  const Observation& obs_;
  Decision d_;
};

}  // namespace

const InstanceSpec* ClusterSpec::find(std::string_view instance) const {
  for (const auto& i : instances) {
    if (i.name == instance) return &i;
  }
  return nullptr;
}

std::string ClusterSpec::declared_primary() const {
  for (const auto& i : instances) {
    if (i.primary) return i.name;
  }
  return {};
}

const InstanceObservation* Observation::find(std::string_view instance) const {
  for (const auto& i : instances) {
    if (i.name == instance) return &i;
  }
  return nullptr;
}

Expected<void> validate(const ClusterSpec& spec) {
  if (!valid_name(spec.name)) {
    return fail(Errc::invalid_argument,
                fmt::format("name \"{}\" is not 1..64 characters of [A-Za-z0-9_.-]", spec.name));
  }
  if (spec.instances.empty()) return fail(Errc::invalid_argument, "instances is empty");
  std::set<std::string> names;
  std::set<std::pair<std::string, std::uint16_t>> endpoints;
  std::set<std::pair<std::string, std::uint16_t>> controller_endpoints;
  std::vector<std::string> primaries;
  for (std::size_t i = 0; i < spec.instances.size(); ++i) {
    const InstanceSpec& instance = spec.instances[i];
    if (!valid_name(instance.name)) {
      return fail(Errc::invalid_argument,
                  fmt::format("instances[{}].name \"{}\" is not 1..64 characters of "
                              "[A-Za-z0-9_.-]",
                              i, instance.name));
    }
    if (instance.host.empty() || instance.host.size() > 255) {
      return fail(
          Errc::invalid_argument,
          fmt::format("instances[{}].host \"{}\" must be 1..255 characters", i, instance.host));
    }
    if (instance.port == 0) {
      return fail(Errc::invalid_argument,
                  fmt::format("instances[{}].port 0 is not allowed (1..65535)", i));
    }
    if (!names.insert(instance.name).second) {
      return fail(Errc::invalid_argument,
                  fmt::format("instances[{}].name \"{}\" is a duplicate", i, instance.name));
    }
    if (!endpoints.emplace(instance.host, instance.port).second) {
      return fail(Errc::invalid_argument,
                  fmt::format("instances[{}] \"{}\" duplicates the address {}:{}", i, instance.name,
                              instance.host, instance.port));
    }
    if (instance.admin_host.size() > 255) {
      return fail(Errc::invalid_argument,
                  fmt::format("instances[{}].admin_host is {} characters long (at most 255)", i,
                              instance.admin_host.size()));
    }
    if (!controller_endpoints.emplace(instance.controller_host(), instance.controller_port())
             .second) {
      return fail(
          Errc::invalid_argument,
          fmt::format("instances[{}] \"{}\" duplicates the controller address {}:{} "
                      "(admin_host/admin_port)",
                      i, instance.name, instance.controller_host(), instance.controller_port()));
    }
    if (instance.primary) primaries.push_back(instance.name);
  }
  if (primaries.empty()) {
    return fail(Errc::invalid_argument, "instances: no instance is declared primary");
  }
  if (primaries.size() > 1) {
    return fail(Errc::invalid_argument,
                fmt::format("instances: {} are all declared primary (exactly one may be)",
                            join(primaries)));
  }
  const auto& p = spec.policy;
  using ms = std::chrono::milliseconds;
  if (auto ok = check_ms("replica_silence", p.replica_silence, ms(100), ms(3600000)); !ok)
    return ok;
  if (auto ok = check_ms("failure_confirm", p.failure_confirm, ms(0), ms(3600000)); !ok) return ok;
  if (auto ok = check_ms("relay_apply_timeout", p.relay_apply_timeout, ms(1000), ms(3600000)); !ok)
    return ok;
  if (auto ok = check_ms("kill_grace", p.kill_grace, ms(0), ms(60000)); !ok) return ok;
  if (auto ok = check_ms("catchup_timeout", p.catchup_timeout, ms(1000), ms(3600000)); !ok)
    return ok;
  for (const auto& [field, value] : {std::pair{"connect_timeout", p.connect_timeout},
                                     std::pair{"read_timeout", p.read_timeout}}) {
    if (value.count() < 1 || value.count() > 3600) {
      return fail(Errc::invalid_argument,
                  fmt::format("policy.{} {} s is out of range (1..3600 s)", field, value.count()));
    }
  }
  return {};
}

std::string to_json(const ClusterMemory& m) {
  json j;
  j["primary"] = m.primary;
  j["primary_failed_since_ms"] =
      m.primary_failed_since_ms ? json(*m.primary_failed_since_ms) : json(nullptr);
  j["failover"] = m.failover ? json{{"old_primary", m.failover->old_primary},
                                    {"candidate", m.failover->candidate},
                                    {"started_ms", m.failover->started_ms}}
                             : json(nullptr);
  j["switchover"] = m.switchover ? json{{"old_primary", m.switchover->old_primary},
                                        {"target", m.switchover->target},
                                        {"started_ms", m.switchover->started_ms},
                                        {"writes_blocked", m.switchover->writes_blocked}}
                                 : json(nullptr);
  j["errant"] = m.errant;
  j["failovers"] = m.failovers;
  j["switchovers"] = m.switchovers;
  return j.dump();
}

namespace {

// Reads j[key] as T into out; the error names the field path.
template <class T>
Expected<void> read_field(const json& j, const std::string& path, const char* key, T& out) {
  if (!j.is_object() || !j.contains(key)) {
    return fail(Errc::invalid_argument, fmt::format("{}{} is missing", path, key));
  }
  try {
    out = j.at(key).get<T>();
  } catch (const json::exception&) {
    return fail(Errc::invalid_argument,
                fmt::format("{}{} has the wrong type ({})", path, key, j.at(key).type_name()));
  }
  return {};
}

}  // namespace

Expected<ClusterMemory> memory_from_json(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return fail(Errc::invalid_argument, "cluster memory is not a JSON object");
  }
  ClusterMemory m;
  if (auto ok = read_field(j, "", "primary", m.primary); !ok) return std::unexpected(ok.error());
  if (!j.contains("primary_failed_since_ms")) {
    return fail(Errc::invalid_argument, "primary_failed_since_ms is missing");
  }
  if (!j["primary_failed_since_ms"].is_null()) {
    std::int64_t since = 0;
    if (auto ok = read_field(j, "", "primary_failed_since_ms", since); !ok)
      return std::unexpected(ok.error());
    m.primary_failed_since_ms = since;
  }
  if (j.contains("failover") && !j["failover"].is_null()) {
    ClusterMemory::Failover f;
    const json& o = j["failover"];
    if (auto ok = read_field(o, "failover.", "old_primary", f.old_primary); !ok)
      return std::unexpected(ok.error());
    if (auto ok = read_field(o, "failover.", "candidate", f.candidate); !ok)
      return std::unexpected(ok.error());
    if (auto ok = read_field(o, "failover.", "started_ms", f.started_ms); !ok)
      return std::unexpected(ok.error());
    m.failover = f;
  }
  if (j.contains("switchover") && !j["switchover"].is_null()) {
    ClusterMemory::Switchover s;
    const json& o = j["switchover"];
    if (auto ok = read_field(o, "switchover.", "old_primary", s.old_primary); !ok)
      return std::unexpected(ok.error());
    if (auto ok = read_field(o, "switchover.", "target", s.target); !ok)
      return std::unexpected(ok.error());
    if (auto ok = read_field(o, "switchover.", "started_ms", s.started_ms); !ok)
      return std::unexpected(ok.error());
    if (auto ok = read_field(o, "switchover.", "writes_blocked", s.writes_blocked); !ok)
      return std::unexpected(ok.error());
    m.switchover = s;
  }
  if (auto ok = read_field(j, "", "errant", m.errant); !ok) return std::unexpected(ok.error());
  if (auto ok = read_field(j, "", "failovers", m.failovers); !ok)
    return std::unexpected(ok.error());
  if (auto ok = read_field(j, "", "switchovers", m.switchovers); !ok)
    return std::unexpected(ok.error());
  return m;
}

Expected<void> request_switchover(const ClusterSpec& spec, ClusterMemory& memory,
                                  const std::string& target, std::int64_t now_ms) {
  if (spec.find(target) == nullptr) {
    return fail(Errc::not_found, fmt::format("switchover target \"{}\" is not an instance of {}",
                                             target, spec.name));
  }
  if (memory.failover) {
    return fail(Errc::failed_precondition,
                fmt::format("a failover from {} is in progress", memory.failover->old_primary));
  }
  if (memory.switchover) {
    return fail(Errc::failed_precondition,
                fmt::format("a switchover to {} is in progress", memory.switchover->target));
  }
  const std::string primary = memory.primary.empty() ? spec.declared_primary() : memory.primary;
  if (target == primary) {
    return fail(Errc::failed_precondition,
                fmt::format("switchover target \"{}\" is already the primary", target));
  }
  if (contains_name(memory.errant, target)) {
    return fail(Errc::failed_precondition,
                fmt::format("switchover target \"{}\" has errant transactions", target));
  }
  memory.primary = primary;
  memory.switchover = ClusterMemory::Switchover{primary, target, now_ms, false};
  return {};
}

std::string_view kind(const Operation& operation) {
  struct Visitor {
    std::string_view operator()(const op::None&) const { return "none"; }
    std::string_view operator()(const op::FenceReplicasIo&) const { return "fence_replicas_io"; }
    std::string_view operator()(const op::WaitRelayApply&) const { return "wait_relay_apply"; }
    std::string_view operator()(const op::StartSqlThread&) const { return "start_sql_thread"; }
    std::string_view operator()(const op::Promote&) const { return "promote"; }
    std::string_view operator()(const op::Repoint&) const { return "repoint"; }
    std::string_view operator()(const op::Fence&) const { return "fence"; }
    std::string_view operator()(const op::Rejoin&) const { return "rejoin"; }
    std::string_view operator()(const op::BlockWrites&) const { return "block_writes"; }
    std::string_view operator()(const op::WaitCatchup&) const { return "wait_catchup"; }
  };
  return std::visit(Visitor{}, operation);
}

std::string describe(const Operation& operation) {
  struct Visitor {
    std::string operator()(const op::None&) const { return "none"; }
    std::string operator()(const op::FenceReplicasIo& o) const {
      return fmt::format("fence_replicas_io {}", join(o.replicas));
    }
    std::string operator()(const op::WaitRelayApply& o) const {
      return fmt::format("wait_relay_apply {} to {}", o.candidate, to_string(o.target));
    }
    std::string operator()(const op::StartSqlThread& o) const {
      return fmt::format("start_sql_thread {}", o.candidate);
    }
    std::string operator()(const op::Promote& o) const {
      return fmt::format("promote {}", o.instance);
    }
    std::string operator()(const op::Repoint& o) const {
      return fmt::format("repoint {} to {}", join(o.replicas), o.primary);
    }
    std::string operator()(const op::Fence& o) const { return fmt::format("fence {}", o.instance); }
    std::string operator()(const op::Rejoin& o) const {
      return fmt::format("rejoin {} to {}", o.instance, o.primary);
    }
    std::string operator()(const op::BlockWrites& o) const {
      return fmt::format("block_writes {}", o.instance);
    }
    std::string operator()(const op::WaitCatchup& o) const {
      return fmt::format("wait_catchup {} to {}", o.target, to_string(o.position));
    }
  };
  return std::visit(Visitor{}, operation);
}

std::string_view to_string(ClusterState state) {
  switch (state) {
    case ClusterState::healthy:
      return "healthy";
    case ClusterState::degraded:
      return "degraded";
    case ClusterState::suspect:
      return "suspect";
    case ClusterState::failing_over:
      return "failing_over";
    case ClusterState::switching_over:
      return "switching_over";
    case ClusterState::failed:
      return "failed";
    case ClusterState::split_brain:
      return "split_brain";
    case ClusterState::lost:
      return "lost";
  }
  return "unknown";
}

Decision decide(const ClusterSpec& spec, const Observation& observation,
                const ClusterMemory& memory) {
  return Decider(spec, observation, memory).run();
}

ClusterMemory after_success(ClusterMemory memory, const Operation& operation) {
  if (const auto* block = std::get_if<op::BlockWrites>(&operation)) {
    if (memory.switchover && memory.switchover->old_primary == block->instance) {
      memory.switchover->writes_blocked = true;
    }
  }
  return memory;
}

}  // namespace neco::mysql
