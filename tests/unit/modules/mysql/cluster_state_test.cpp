// decide() on hand-built observations: detection that does not flap, every failover step and
// its idempotence after a crash at each step, errant replicas never promoted, a candidate that
// cannot apply its relay log waited for (or its cleanly stopped SQL thread started), split brain
// fenced, switchover steps; spec validation and the memory's JSON round trip; the loop's pacing
// between turns.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "modules/mysql/cluster_loop.hpp"
#include "modules/mysql/cluster_state.hpp"
#include "modules/mysql/operations.hpp"

namespace neco::mysql {
namespace {

GtidPosition pos(const char* text) {
  return parse_gtid_position(text).value();
}

ClusterSpec spec3() {
  ClusterSpec spec;
  spec.name = "db";
  spec.instances = {{"p", "10.0.0.1", 3306, true},
                    {"r1", "10.0.0.2", 3306, false},
                    {"r2", "10.0.0.3", 3306, false}};
  spec.policy.failure_confirm = std::chrono::milliseconds(1000);
  return spec;
}

// A writable primary at `binlog`.
InstanceObservation primary(const char* name, const char* binlog) {
  InstanceObservation o;
  o.name = name;
  o.reachable = true;
  InstanceStatus s;
  s.read_only = false;
  s.gtid_binlog_pos = pos(binlog);
  s.gtid_current_pos = pos(binlog);
  s.semi_sync_master_on = true;
  o.status = s;
  return o;
}

// A read-only replica of `source` (10.0.0.x:3306) with IO state `io`.
InstanceObservation replica(const char* name, const char* source_host, const char* io,
                            const char* received, const char* applied, bool sql = true) {
  InstanceObservation o;
  o.name = name;
  o.reachable = true;
  InstanceStatus s;
  s.read_only = true;
  s.gtid_current_pos = pos(applied);
  s.gtid_binlog_pos = pos(applied);
  s.gtid_slave_pos = pos(applied);
  ReplicaStatus row;
  row.master_host = source_host;
  row.master_port = 3306;
  row.io_running = io;
  row.sql_running = sql;
  row.gtid_io_pos = pos(received);
  row.using_gtid = "Slave_Pos";
  s.replication.push_back(row);
  o.status = s;
  return o;
}

InstanceObservation down(const char* name) {
  InstanceObservation o;
  o.name = name;
  o.error = "connection refused";
  return o;
}

Observation at(std::int64_t now, std::vector<InstanceObservation> instances) {
  Observation o;
  o.now_ms = now;
  o.instances = std::move(instances);
  return o;
}

template <class T>
const T& op_as(const Decision& d) {
  INFO(d.reason);
  REQUIRE(std::holds_alternative<T>(d.operation));
  return std::get<T>(d.operation);
}

}  // namespace

TEST_CASE("spec validation names the field", "[mysql][cluster_state]") {
  ClusterSpec spec = spec3();
  REQUIRE(validate(spec));
  auto err = [](const ClusterSpec& s) {
    auto r = validate(s);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    return r.error().message;
  };
  ClusterSpec s = spec;
  s.instances[1].primary = true;
  CHECK_THAT(err(s), Catch::Contains("p, r1 are all declared primary"));
  s = spec;
  s.instances[0].primary = false;
  CHECK_THAT(err(s), Catch::Contains("no instance is declared primary"));
  s = spec;
  s.instances[2].name = "r1";
  CHECK_THAT(err(s), Catch::Contains("instances[2].name \"r1\" is a duplicate"));
  s = spec;
  s.instances[2].host = "10.0.0.2";
  CHECK_THAT(err(s), Catch::Contains("instances[2] \"r2\" duplicates the address 10.0.0.2:3306"));
  s = spec;
  s.instances.clear();
  CHECK_THAT(err(s), Catch::Contains("instances is empty"));
  s = spec;
  s.name = "";
  CHECK_THAT(err(s), Catch::Contains("name \"\""));
  s = spec;
  s.instances[1].port = 0;
  CHECK_THAT(err(s), Catch::Contains("instances[1].port 0"));
  s = spec;
  s.instances[1].host = "";
  CHECK_THAT(err(s), Catch::Contains("instances[1].host"));
  s = spec;
  s.instances[2].admin_host = std::string(256, 'a');
  CHECK_THAT(err(s), Catch::Contains("instances[2].admin_host is 256 characters long"));
  s = spec;
  // r2's controller address is r1's (the replicas' addresses differ): refused.
  s.instances[2].admin_host = "10.0.0.2";
  CHECK_THAT(err(s), Catch::Contains("instances[2] \"r2\" duplicates the controller address "
                                     "10.0.0.2:3306"));
  s.instances[2].admin_port = 3307;
  CHECK(validate(s));
  s = spec;
  s.policy.relay_apply_timeout = std::chrono::milliseconds(10);
  CHECK_THAT(err(s), Catch::Contains("policy.relay_apply_timeout 10 ms"));
  s = spec;
  s.policy.connect_timeout = std::chrono::seconds(0);
  CHECK_THAT(err(s), Catch::Contains("policy.connect_timeout 0 s"));
}

TEST_CASE("the controller connects to admin_host/admin_port, replicas to host/port",
          "[mysql][cluster_state]") {
  ClusterSpec spec = spec3();
  spec.instances[0].admin_host = "127.0.0.1";
  spec.instances[0].admin_port = 13306;
  REQUIRE(validate(spec));
  const Access credentials;
  const auto proxied = admin_options(spec, spec.instances[0], credentials);
  CHECK(proxied.host == "127.0.0.1");
  CHECK(proxied.port == 13306);
  const auto direct = admin_options(spec, spec.instances[1], credentials);
  CHECK(direct.host == "10.0.0.2");
  CHECK(direct.port == 3306);
  // Replication is still judged against host:port: r1 replicating from 10.0.0.1:3306 sees p.
  auto obs = at(0, {primary("p", "0-1-10"), replica("r1", "10.0.0.1", "Yes", "0-1-10", "0-1-10"),
                    replica("r2", "10.0.0.1", "Yes", "0-1-10", "0-1-10")});
  auto d = decide(spec, obs, {});
  CHECK(d.state == ClusterState::healthy);
}

TEST_CASE("a healthy cluster needs nothing", "[mysql][cluster_state]") {
  auto d =
      decide(spec3(),
             at(0, {primary("p", "0-1-10"), replica("r1", "10.0.0.1", "Yes", "0-1-10", "0-1-10"),
                    replica("r2", "10.0.0.1", "Yes", "0-1-10", "0-1-9")}),
             {});
  CHECK(d.state == ClusterState::healthy);
  op_as<op::None>(d);
  CHECK(d.primary == "p");
  CHECK(d.memory.primary == "p");
}

TEST_CASE("no flap: a primary a replica still sees is not failed over", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  // The controller cannot reach p, but r2 still receives from it.
  for (std::int64_t now : {0, 5000, 60000}) {
    auto d = decide(spec3(),
                    at(now, {down("p"), replica("r1", "10.0.0.1", "Connecting", "0-1-10", "0-1-10"),
                             replica("r2", "10.0.0.1", "Yes", "0-1-10", "0-1-10")}),
                    m);
    CHECK(d.state == ClusterState::suspect);
    op_as<op::None>(d);
    CHECK_THAT(d.reason, Catch::Contains("r2 still replicate from it"));
    CHECK_FALSE(d.memory.failover);
    CHECK_FALSE(d.memory.primary_failed_since_ms);
    m = d.memory;
  }
}

TEST_CASE("a replica silent past the window has lost the primary, whatever its IO thread says",
          "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  auto obs = at(0, {down("p"), replica("r1", "10.0.0.1", "Yes", "0-1-10", "0-1-10"),
                    replica("r2", "10.0.0.1", "No", "0-1-10", "0-1-10")});
  obs.instances[1].silent_ms = 2999;  // policy.replica_silence is 3000 ms
  auto d = decide(spec3(), obs, m);
  CHECK_THAT(d.reason, Catch::Contains("r1 still replicate from it"));
  CHECK_FALSE(d.memory.primary_failed_since_ms);
  obs.instances[1].silent_ms = 3000;
  d = decide(spec3(), obs, m);
  CHECK(d.state == ClusterState::suspect);
  CHECK(d.memory.primary_failed_since_ms == 0);
  CHECK_THAT(d.reason, Catch::Contains("lost by every reachable replica"));
  obs.now_ms = 1000;
  d = decide(spec3(), obs, d.memory);
  CHECK(op_as<op::FenceReplicasIo>(d).replicas == std::vector<std::string>{"r1"});
}

TEST_CASE("the failure must last the confirmation window", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  auto lost = [](std::int64_t now) {
    return at(now, {down("p"), replica("r1", "10.0.0.1", "Connecting", "0-1-10", "0-1-10"),
                    replica("r2", "10.0.0.1", "No", "0-1-10", "0-1-10")});
  };
  auto d = decide(spec3(), lost(1000), m);
  CHECK(d.state == ClusterState::suspect);
  CHECK(d.memory.primary_failed_since_ms == 1000);
  d = decide(spec3(), lost(1999), d.memory);
  CHECK(d.state == ClusterState::suspect);
  // The primary comes back within the window: the window restarts.
  auto back =
      decide(spec3(),
             at(1500, {primary("p", "0-1-10"), replica("r1", "10.0.0.1", "Yes", "0-1-10", "0-1-10"),
                       replica("r2", "10.0.0.1", "Yes", "0-1-10", "0-1-10")}),
             d.memory);
  CHECK_FALSE(back.memory.primary_failed_since_ms);
  d = decide(spec3(), lost(2000), d.memory);
  CHECK(d.state == ClusterState::failing_over);
  CHECK(d.memory.failover->old_primary == "p");
  // r1 is still connecting: fenced; r2's IO thread is already stopped.
  CHECK(op_as<op::FenceReplicasIo>(d).replicas == std::vector<std::string>{"r1"});

  SECTION("failover disabled: reported, nothing done") {
    ClusterSpec spec = spec3();
    spec.policy.failover = false;
    ClusterMemory window;
    window.primary = "p";
    window.primary_failed_since_ms = 0;
    auto off = decide(spec, lost(5000), window);
    CHECK(off.state == ClusterState::failed);
    op_as<op::None>(off);
    CHECK_THAT(off.reason, Catch::Contains("failover is disabled"));
  }
}

TEST_CASE("failover steps, each redone safely after a crash", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  m.failover = ClusterMemory::Failover{"p", "", 0};
  const ClusterSpec spec = spec3();

  // Fenced; r1 received more than r2 but has not applied it all: r1 is chosen, then waited for.
  auto fenced = at(10, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-12", "0-1-11"),
                        replica("r2", "10.0.0.1", "No", "0-1-11", "0-1-11")});
  auto d = decide(spec, fenced, m);
  CHECK(d.memory.failover->candidate == "r1");
  const auto& wait = op_as<op::WaitRelayApply>(d);
  CHECK(wait.candidate == "r1");
  CHECK(wait.target == pos("0-1-12"));
  // Redone (crash after the wait started): same step.
  auto again = decide(spec, fenced, d.memory);
  CHECK(op_as<op::WaitRelayApply>(again).candidate == "r1");

  // Applied: promote.
  auto applied = at(20, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-12", "0-1-12"),
                         replica("r2", "10.0.0.1", "No", "0-1-11", "0-1-11")});
  d = decide(spec, applied, d.memory);
  CHECK(op_as<op::Promote>(d).instance == "r1");

  // A crash during promotion (STOP SLAVE done, RESET not): still not promoted, promote again.
  auto half = applied;
  half.instances[1].status->replication[0].sql_running = false;
  CHECK(op_as<op::Promote>(decide(spec, half, d.memory)).instance == "r1");

  // Promoted: r2 is repointed, and only r2.
  auto promoted = at(30, {down("p"), primary("r1", "0-1-12"),
                          replica("r2", "10.0.0.1", "No", "0-1-11", "0-1-11")});
  d = decide(spec, promoted, d.memory);
  const auto& repoint = op_as<op::Repoint>(d);
  CHECK(repoint.primary == "r1");
  CHECK(repoint.replicas == std::vector<std::string>{"r2"});
  CHECK(d.state == ClusterState::failing_over);

  // Repointed: done; r1 is the primary; the old primary is not rejoined while it is down.
  auto done = at(40, {down("p"), primary("r1", "0-1-12"),
                      replica("r2", "10.0.0.2", "Yes", "0-1-12", "0-1-12")});
  d = decide(spec, done, d.memory);
  CHECK_FALSE(d.memory.failover);
  CHECK(d.memory.primary == "r1");
  CHECK(d.memory.failovers == 1);
  CHECK(d.state == ClusterState::degraded);
  op_as<op::None>(d);

  // The old primary returns writable: fenced, then rejoined once read-only.
  auto back = at(50, {primary("p", "0-1-12"), primary("r1", "0-1-13"),
                      replica("r2", "10.0.0.2", "Yes", "0-1-13", "0-1-13")});
  auto f = decide(spec, back, d.memory);
  CHECK(f.state == ClusterState::split_brain);
  CHECK(op_as<op::Fence>(f).instance == "p");
  back.instances[0].status->read_only = true;
  auto r = decide(spec, back, f.memory);
  const auto& rejoin = op_as<op::Rejoin>(r);
  CHECK(rejoin.instance == "p");
  CHECK(rejoin.primary == "r1");
}

TEST_CASE("a returning old primary with errant writes stays fenced", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "r1";
  // p committed 0-1-13 that never reached anyone (binlogged, not acknowledged).
  auto obs = at(0, {primary("p", "0-1-13"), primary("r1", "0-2-13"),
                    replica("r2", "10.0.0.2", "Yes", "0-2-13", "0-2-13")});
  obs.instances[0].status->read_only = true;
  obs.instances[0].status->gtid_current_pos = pos("0-1-13");
  auto d = decide(spec3(), obs, m);
  CHECK(d.errant == std::vector<std::string>{"p"});
  op_as<op::None>(d);
  CHECK(d.state == ClusterState::degraded);
  CHECK_THAT(d.reason, Catch::Contains("p has errant transactions"));
}

TEST_CASE("an errant replica is never chosen", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  // While p is healthy, r1 shows a transaction p does not have.
  auto healthy =
      at(0, {primary("p", "0-1-10"), replica("r1", "10.0.0.1", "Yes", "0-1-10", "0-1-10,5-2-1"),
             replica("r2", "10.0.0.1", "Yes", "0-1-10", "0-1-10")});
  auto d = decide(spec3(), healthy, m);
  CHECK(d.errant == std::vector<std::string>{"r1"});
  CHECK(d.state == ClusterState::degraded);
  // p dies; r1 even looks the most advanced: r2 is chosen anyway.
  m = d.memory;
  m.failover = ClusterMemory::Failover{"p", "", 0};
  auto fenced = at(10, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-11", "0-1-11,5-2-1"),
                        replica("r2", "10.0.0.1", "No", "0-1-10", "0-1-10")});
  d = decide(spec3(), fenced, m);
  CHECK(d.memory.failover->candidate == "r2");
  CHECK(op_as<op::Promote>(d).instance == "r2");
  // After promotion the errant replica is not repointed: failover completes without it.
  auto promoted = at(20, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-11", "0-1-11,5-2-1"),
                          primary("r2", "0-1-10")});
  d = decide(spec3(), promoted, d.memory);
  CHECK(d.memory.primary == "r2");
  op_as<op::None>(d);
  CHECK_THAT(d.reason, Catch::Contains("r1 has errant transactions"));
}

TEST_CASE("only errant replicas left: the cluster is failed", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  m.errant = {"r1", "r2"};
  m.failover = ClusterMemory::Failover{"p", "", 0};
  auto d = decide(spec3(),
                  at(0, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-10", "0-1-10"),
                         replica("r2", "10.0.0.1", "No", "0-1-10", "0-1-10")}),
                  m);
  CHECK(d.state == ClusterState::failed);
  op_as<op::None>(d);
  CHECK(d.memory.failover->candidate.empty());
}

TEST_CASE("a candidate whose SQL thread stopped is waited for, never promoted short",
          "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  m.failover = ClusterMemory::Failover{"p", "r1", 0};
  auto obs = at(0, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-12", "0-1-11", false),
                    replica("r2", "10.0.0.1", "No", "0-1-11", "0-1-11")});
  obs.instances[1].status->replication[0].last_sql_error = "Duplicate entry";
  auto d = decide(spec3(), obs, m);
  CHECK(d.state == ClusterState::failing_over);
  op_as<op::None>(d);
  CHECK_THAT(d.reason, Catch::Contains("SQL thread is stopped (Duplicate entry)"));
  // An unreachable candidate is waited for too (it may have been promoted already).
  obs.instances[1] = down("r1");
  d = decide(spec3(), obs, m);
  op_as<op::None>(d);
  CHECK_THAT(d.reason, Catch::Contains("candidate r1 is unreachable"));
}

TEST_CASE("a candidate whose SQL thread was stopped without an error gets it started",
          "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  m.failover = ClusterMemory::Failover{"p", "", 0};
  // r1 received the most but applied the least; r2 applied more than r1 but received less.
  auto obs = at(0, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-20", "0-1-5", false),
                    replica("r2", "10.0.0.1", "No", "0-1-12", "0-1-12")});
  auto d = decide(spec3(), obs, m);
  CHECK(d.state == ClusterState::failing_over);
  CHECK(d.memory.failover->candidate == "r1");
  CHECK(op_as<op::StartSqlThread>(d).candidate == "r1");
  CHECK(kind(d.operation) == "start_sql_thread");
  CHECK(describe(d.operation) == "start_sql_thread r1");
  CHECK_THAT(d.reason, Catch::Contains("SQL thread is stopped without an error: starting it"));
  // Redone after a crash: the same step while it is still stopped.
  auto again = decide(spec3(), obs, d.memory);
  CHECK(op_as<op::StartSqlThread>(again).candidate == "r1");
  // Once it runs: wait for the whole relay log, then promote r1 (never r2).
  obs.instances[1].status->replication[0].sql_running = true;
  auto wait = decide(spec3(), obs, d.memory);
  CHECK(op_as<op::WaitRelayApply>(wait).candidate == "r1");
  CHECK(op_as<op::WaitRelayApply>(wait).target == pos("0-1-20"));
  obs.instances[1].status->gtid_current_pos = pos("0-1-20");
  auto promote = decide(spec3(), obs, d.memory);
  CHECK(op_as<op::Promote>(promote).instance == "r1");
}

TEST_CASE("a candidate whose SQL thread stopped on an error is waited for, never replaced",
          "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  m.failover = ClusterMemory::Failover{"p", "", 0};
  auto obs = at(0, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-20", "0-1-5", false),
                    replica("r2", "10.0.0.1", "No", "0-1-12", "0-1-12")});
  obs.instances[1].status->replication[0].last_sql_error =
      "Could not execute Write_rows_v1 event on table t.w; Duplicate entry '7'";
  for (int turn = 0; turn < 3; ++turn) {
    auto d = decide(spec3(), obs, m);
    CHECK(d.state == ClusterState::failing_over);
    op_as<op::None>(d);
    CHECK(d.memory.failover->candidate == "r1");
    CHECK_THAT(d.reason, Catch::Contains("candidate r1 has applied 0-1-5 of 0-1-20 received"));
    CHECK_THAT(d.reason, Catch::Contains("Duplicate entry '7'"));
    m = d.memory;
  }
}

TEST_CASE("the old primary writable again during a failover is fenced first",
          "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  m.failover = ClusterMemory::Failover{"p", "r1", 0};
  auto d =
      decide(spec3(),
             at(0, {primary("p", "0-1-12"), replica("r1", "10.0.0.1", "No", "0-1-12", "0-1-12"),
                    replica("r2", "10.0.0.1", "No", "0-1-12", "0-1-12")}),
             m);
  CHECK(op_as<op::Fence>(d).instance == "p");
  // A replica that reconnected to it (IO restarted by hand) is fenced again.
  auto again = decide(spec3(),
                      at(0, {down("p"), replica("r1", "10.0.0.1", "No", "0-1-12", "0-1-12"),
                             replica("r2", "10.0.0.1", "Yes", "0-1-12", "0-1-12")}),
                      m);
  CHECK(op_as<op::FenceReplicasIo>(again).replicas == std::vector<std::string>{"r2"});
}

TEST_CASE("two writable instances: the one that is not the primary is fenced",
          "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  auto d = decide(spec3(),
                  at(0, {primary("p", "0-1-10"), primary("r1", "0-1-10"),
                         replica("r2", "10.0.0.1", "Yes", "0-1-10", "0-1-10")}),
                  m);
  CHECK(d.state == ClusterState::split_brain);
  CHECK(op_as<op::Fence>(d).instance == "r1");
  // Without memory it refuses to guess.
  auto blind = decide(spec3(),
                      at(0, {primary("p", "0-1-10"), primary("r1", "0-1-10"),
                             replica("r2", "10.0.0.1", "Yes", "0-1-10", "0-1-10")}),
                      {});
  CHECK(blind.state == ClusterState::split_brain);
  op_as<op::None>(blind);
}

TEST_CASE("nothing reachable is lost; a read-only primary is made writable",
          "[mysql][cluster_state]") {
  auto d = decide(spec3(), at(0, {down("p"), down("r1"), down("r2")}), {});
  CHECK(d.state == ClusterState::lost);
  auto boot = at(0, {primary("p", ""), replica("r1", "10.0.0.1", "Yes", "", ""),
                     replica("r2", "10.0.0.1", "Yes", "", "")});
  boot.instances[0].status->read_only = true;
  d = decide(spec3(), boot, {});
  CHECK(op_as<op::Promote>(d).instance == "p");
  // A stopped replica is restarted; one replicating elsewhere is rejoined.
  auto stopped = at(0, {primary("p", "0-1-3"), replica("r1", "10.0.0.1", "No", "0-1-3", "0-1-3"),
                        replica("r2", "10.0.0.9", "Yes", "", "")});
  d = decide(spec3(), stopped, {});
  CHECK(op_as<op::Rejoin>(d).instance == "r1");
}

TEST_CASE("switchover steps", "[mysql][cluster_state]") {
  const ClusterSpec spec = spec3();
  ClusterMemory m;
  m.primary = "p";
  CHECK(request_switchover(spec, m, "nope", 0).error().code == Errc::not_found);
  CHECK(request_switchover(spec, m, "p", 0).error().code == Errc::failed_precondition);
  REQUIRE(request_switchover(spec, m, "r2", 100));
  CHECK(request_switchover(spec, m, "r1", 0).error().code == Errc::failed_precondition);

  auto running =
      at(200, {primary("p", "0-1-20"), replica("r1", "10.0.0.1", "Yes", "0-1-20", "0-1-20"),
               replica("r2", "10.0.0.1", "Yes", "0-1-19", "0-1-18")});
  auto d = decide(spec, running, m);
  CHECK(d.state == ClusterState::switching_over);
  CHECK(op_as<op::BlockWrites>(d).instance == "p");
  // Read-only but the kill has not been confirmed: block again (idempotent).
  running.instances[0].status->read_only = true;
  d = decide(spec, running, d.memory);
  const auto blocked_memory = after_success(d.memory, d.operation);
  CHECK(blocked_memory.switchover->writes_blocked);
  d = decide(spec, running, blocked_memory);
  const auto& wait = op_as<op::WaitCatchup>(d);
  CHECK(wait.target == "r2");
  CHECK(wait.position == pos("0-1-20"));
  running.instances[2] = replica("r2", "10.0.0.1", "Yes", "0-1-20", "0-1-20");
  d = decide(spec, running, d.memory);
  CHECK(op_as<op::Promote>(d).instance == "r2");
  auto promoted =
      at(300, {primary("p", "0-1-20"), replica("r1", "10.0.0.1", "Yes", "0-1-20", "0-1-20"),
               primary("r2", "0-1-20")});
  promoted.instances[0].status->read_only = true;
  d = decide(spec, promoted, d.memory);
  CHECK(op_as<op::Repoint>(d).replicas == std::vector<std::string>{"r1"});
  promoted.instances[1] = replica("r1", "10.0.0.3", "Yes", "0-1-20", "0-1-20");
  d = decide(spec, promoted, d.memory);
  CHECK(op_as<op::Rejoin>(d).instance == "p");
  promoted.instances[0] = replica("p", "10.0.0.3", "Yes", "0-1-20", "0-1-20");
  d = decide(spec, promoted, d.memory);
  CHECK_FALSE(d.memory.switchover);
  CHECK(d.memory.primary == "r2");
  CHECK(d.memory.switchovers == 1);
  CHECK(d.state == ClusterState::healthy);
}

TEST_CASE("no replica is branded errant while a switchover's new primary takes writes",
          "[mysql][cluster_state]") {
  // Regression: the turn after the promotion compared r1, already following r2 and ahead of
  // the old primary, with the old primary's binlog (gathered last) and marked r1 (and r2)
  // errant for good.
  ClusterMemory m;
  m.primary = "p";
  REQUIRE(request_switchover(spec3(), m, "r2", 0));
  m.switchover->writes_blocked = true;
  auto obs = at(300, {primary("p", "0-1-20"), replica("r1", "10.0.0.3", "Yes", "0-3-24", "0-3-24"),
                      primary("r2", "0-3-25")});
  obs.instances[0].status->read_only = true;
  auto d = decide(spec3(), obs, m);
  CHECK(d.memory.errant.empty());
  CHECK(op_as<op::Rejoin>(d).instance == "p");
  obs.instances[0] = replica("p", "10.0.0.3", "Yes", "0-3-25", "0-3-25");
  d = decide(spec3(), obs, d.memory);
  CHECK(d.memory.errant.empty());
  CHECK(d.memory.primary == "r2");
  CHECK(d.state == ClusterState::healthy);
}

TEST_CASE("a switchover to a target found errant is abandoned and the primary writable again",
          "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  REQUIRE(request_switchover(spec3(), m, "r1", 0));
  m.switchover->writes_blocked = true;
  // r1 has 0-9-7, which the primary never had: errant, so never promoted.
  auto obs = at(300, {primary("p", "0-1-20"), replica("r1", "10.0.0.1", "Yes", "0-1-20", "0-1-20"),
                      replica("r2", "10.0.0.1", "Yes", "0-1-20", "0-1-20")});
  obs.instances[0].status->read_only = true;
  obs.instances[1].status->gtid_current_pos = pos("0-9-21");
  const auto d = decide(spec3(), obs, m);
  CHECK(d.memory.errant == std::vector<std::string>{"r1"});
  CHECK_FALSE(d.memory.switchover);
  CHECK(op_as<op::Promote>(d).instance == "p");
}

TEST_CASE("a replica the primary refuses as diverged (error 1236) is errant",
          "[mysql][cluster_state]") {
  // An old primary whose unacknowledged tail was committed by crash recovery: 0-1-51 where
  // the new primary wrote 0-2-51. Positions alone look contained (51 < 60).
  ClusterMemory m;
  m.primary = "p";
  auto obs = at(0, {primary("p", "0-2-60"), replica("r1", "10.0.0.1", "Yes", "0-2-60", "0-2-60"),
                    replica("r2", "10.0.0.1", "No", "0-1-51", "0-1-51")});
  auto d = decide(spec3(), obs, m);
  CHECK(d.memory.errant.empty());  // an IO thread down alone says nothing
  obs.instances[2].status->replication[0].last_io_error =
      "Got fatal error 1236 from master when reading data from binary log: 'Error: connecting "
      "slave requested to start from GTID 0-1-51, which is not in the master's binlog. Since "
      "the master's binlog contains GTIDs with higher sequence numbers, it probably means that "
      "the slave has diverged due to executing extra erroneous transactions'";
  d = decide(spec3(), obs, m);
  CHECK(d.memory.errant == std::vector<std::string>{"r2"});
  CHECK(d.state == ClusterState::degraded);
}

TEST_CASE("a switchover whose old primary vanishes is abandoned", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "p";
  REQUIRE(request_switchover(spec3(), m, "r1", 0));
  auto d = decide(spec3(),
                  at(0, {down("p"), replica("r1", "10.0.0.1", "Yes", "0-1-1", "0-1-1"),
                         replica("r2", "10.0.0.1", "Connecting", "0-1-1", "0-1-1")}),
                  m);
  CHECK_FALSE(d.memory.switchover);
  CHECK(d.state == ClusterState::suspect);
}

TEST_CASE("a memory naming an instance the spec lacks is not acted on", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "gone";
  auto d = decide(spec3(),
                  at(0, {primary("p", "0-1-1"), replica("r1", "10.0.0.1", "Yes", "0-1-1", "0-1-1"),
                         replica("r2", "10.0.0.1", "Yes", "0-1-1", "0-1-1")}),
                  m);
  CHECK(d.state == ClusterState::failed);
  op_as<op::None>(d);
  CHECK_THAT(d.reason, Catch::Contains("instance \"gone\", which is not in the spec of db"));
}

TEST_CASE("the memory round-trips through JSON", "[mysql][cluster_state]") {
  ClusterMemory m;
  m.primary = "r1";
  m.primary_failed_since_ms = 1234;
  m.failover = ClusterMemory::Failover{"p", "r1", 99};
  m.switchover = ClusterMemory::Switchover{"p", "r2", 5, true};
  m.errant = {"r3"};
  m.failovers = 2;
  m.switchovers = 3;
  auto back = memory_from_json(to_json(m));
  REQUIRE(back);
  CHECK(*back == m);
  CHECK(*memory_from_json(to_json(ClusterMemory{})) == ClusterMemory{});
  auto bad = memory_from_json(R"({"primary": 3})");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("primary has the wrong type"));
  bad = memory_from_json(R"({"primary": "p", "primary_failed_since_ms": null, "errant": [],
                             "failovers": 0, "switchovers": 0, "failover": {"old_primary": "p"}})");
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("failover.candidate is missing"));
  CHECK_FALSE(memory_from_json("not json"));
}

TEST_CASE("the loop turns again at once after an operation and wakes when confirmation ends",
          "[mysql][loop]") {
  using std::chrono::milliseconds;
  const ClusterPolicy policy = spec3().policy;  // failure_confirm 1 s
  const milliseconds period(500);
  int quick = 0;
  RunResult acted;
  acted.decision.operation = op::Promote{"r1"};
  ClusterMemory memory;
  // An operation that succeeded: no wait, at most kMaxQuickTurns in a row.
  for (int i = 0; i < kMaxQuickTurns; ++i)
    CHECK(next_turn_in(acted, memory, policy, period, quick) == milliseconds(0));
  CHECK(next_turn_in(acted, memory, policy, period, quick) == period);
  CHECK(quick == 0);
  // One that failed waits the period (a failing server is not hammered).
  RunResult failed = acted;
  failed.error = Error{Errc::unavailable, "down"};
  CHECK(next_turn_in(failed, memory, policy, period, quick) == period);
  // Nothing to do: the period, unless a lost primary is being confirmed.
  const RunResult idle;
  CHECK(next_turn_in(idle, memory, policy, period, quick) == period);
  memory.primary_failed_since_ms = wall_clock_ms() - 800;  // 200 ms of the window left
  const milliseconds wait = next_turn_in(idle, memory, policy, period, quick);
  CHECK(wait <= milliseconds(200));
  CHECK(wait >= milliseconds(150));
  memory.primary_failed_since_ms = wall_clock_ms() - 5000;  // overdue: soon, not at once
  CHECK(next_turn_in(idle, memory, policy, period, quick) == kMinWait);
  memory.primary_failed_since_ms = wall_clock_ms();  // the whole window: at most a period
  CHECK(next_turn_in(idle, memory, policy, period, quick) == period);
  memory.failover = ClusterMemory::Failover{"p", "", 1};  // failing over: the operations pace it
  CHECK(next_turn_in(idle, memory, policy, period, quick) == period);
}

}  // namespace neco::mysql
