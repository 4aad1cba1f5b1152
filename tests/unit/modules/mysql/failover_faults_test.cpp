// Faults around failover against real mariadbd (a primary and three semi-sync replicas per test,
// the loop in-process, a Writer recording every acknowledged id and a Sampler checking that no
// two instances are ever writable): the most advanced replica with its SQL thread stopped
// (cleanly: started and promoted; on an error: waited for until repaired, nothing promoted
// short), a replica that still sees the primary vetoing failover while the controller's path
// to it is cut (through a TcpProxy), two failovers back to back, and a switchover while a
// long transaction is open on the primary. Measured times go to stderr.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "modules/mysql/cluster_loop.hpp"
#include "tests/unit/modules/mysql/failover_harness.hpp"
#include "tests/unit/modules/mysql/tcp_proxy.hpp"

namespace neco::mysql {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Clock;
using testing::index_of;
using testing::Loop;
using testing::MariadbCluster;
using testing::ms_since;
using testing::poll_until;
using testing::Sampler;
using testing::spec_of;
using testing::start_cluster;
using testing::status_of;
using testing::TcpProxy;
using testing::Writer;

// Runs statements on instance i as the admin user.
void admin_exec(const MariadbCluster& cluster, std::size_t i,
                std::initializer_list<std::string_view> statements) {
  auto admin = cluster.admin(i);
  REQUIRE(admin);
  for (std::string_view sql : statements) {
    INFO(cluster.at(i).name << ": " << sql);
    auto ok = admin->exec(sql);
    if (!ok) FAIL(ok.error().message);
  }
}

const ReplicaStatus& replication_of(const InstanceStatus& status) {
  REQUIRE(status.replication.size() == 1);
  return status.replication[0];
}

bool contains_kind(const std::vector<std::string>& kinds, std::string_view kind) {
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

// r2 and r3 stop receiving (only r1 acknowledges from now on), then r1 stops applying: r1 is
// the most advanced by received position and the least by applied position once `more` further
// writes were acknowledged.
void make_r1_received_most_applied_least(const MariadbCluster& cluster, const Writer& writer,
                                         std::size_t more) {
  admin_exec(cluster, 2, {"STOP SLAVE IO_THREAD"});
  admin_exec(cluster, 3, {"STOP SLAVE IO_THREAD"});
  admin_exec(cluster, 1, {"STOP SLAVE SQL_THREAD"});
  const std::size_t from = writer.count();
  REQUIRE(poll_until([&] { return writer.count() >= from + more; }, seconds(20)));
}

}  // namespace

TEST_CASE("the best candidate's stopped SQL thread is started, and it is promoted: nothing lost",
          "[mysql][real][failover][faults]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  const ClusterSpec spec = spec_of(*cluster);
  Sampler sampler(*cluster);
  Writer writer(*cluster);
  REQUIRE(poll_until([&] { return writer.count() >= 100; }, seconds(20)));
  make_r1_received_most_applied_least(*cluster, writer, 200);
  {
    const auto r1 = status_of(*cluster, 1);
    CHECK_FALSE(replication_of(r1).sql_running);
    CHECK(replication_of(r1).last_sql_error.empty());
    CHECK_FALSE(contains(r1.gtid_current_pos, replication_of(r1).gtid_io_pos));
    CHECK(contains(replication_of(r1).gtid_io_pos, status_of(*cluster, 2).gtid_current_pos));
  }
  // The loop starts after the kill (a leader taking over), so it never "repairs" the
  // arrangement while the primary lives.
  const auto killed_at = Clock::now();
  cluster->kill(0);
  Loop loop(spec);
  REQUIRE(poll_until([&] { return loop.settled_on_new_primary("primary"); }, seconds(20)));
  REQUIRE(poll_until([&] { return writer.first_after(killed_at, 0).has_value(); }, seconds(10)));
  std::fprintf(stderr,
               "failover through a stopped SQL thread (kill -9 -> first write on %s): %lld ms\n",
               cluster->at(writer.first_after(killed_at, 0)->instance).name.c_str(),
               ms_since(killed_at, writer.first_after(killed_at, 0)->at));
  std::this_thread::sleep_for(milliseconds(200));
  writer.stop();
  sampler.stop();
  loop.loop.stop();

  const ClusterMemory memory = loop.loop.memory();
  CHECK(memory.primary == "r1");
  CHECK(memory.failovers == 1);
  const auto kinds = loop.operations();
  CHECK(contains_kind(kinds, "start_sql_thread"));
  testing::require_all_acked_on(*cluster, 1, writer.acks());
  CHECK(sampler.max_writable() == 1);
  std::fprintf(stderr, "stopped SQL thread test: %zu acknowledged writes, %lld ms in all\n",
               writer.acks().size(), ms_since(test_start));
}

TEST_CASE("the best candidate's SQL thread stopped on an error is waited for until repaired",
          "[mysql][real][failover][faults]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  const ClusterSpec spec = spec_of(*cluster);
  Sampler sampler(*cluster);
  Writer writer(*cluster);
  REQUIRE(poll_until([&] { return writer.count() >= 100; }, seconds(20)));
  admin_exec(*cluster, 2, {"STOP SLAVE IO_THREAD"});
  admin_exec(*cluster, 3, {"STOP SLAVE IO_THREAD"});
  // A row only r1 has (not binary-logged, so not errant) that a coming write collides with:
  // r1's SQL thread stops on a duplicate key while its IO thread keeps acknowledging.
  const std::int64_t conflict = static_cast<std::int64_t>(writer.count()) + 150;
  admin_exec(
      *cluster, 1,
      {"SET SESSION sql_log_bin = 0", fmt::format("INSERT INTO t.w (id) VALUES ({})", conflict)});
  REQUIRE(poll_until(
      [&] {
        const auto r1 = status_of(*cluster, 1);
        return !replication_of(r1).sql_running && !replication_of(r1).last_sql_error.empty();
      },
      seconds(20)));
  const std::size_t from = writer.count();
  REQUIRE(poll_until([&] { return writer.count() >= from + 100; }, seconds(20)));

  const auto killed_at = Clock::now();
  cluster->kill(0);
  Loop loop(spec);
  REQUIRE(poll_until(
      [&] {
        const auto m = loop.loop.memory();
        return m.failover && m.failover->candidate == "r1";
      },
      seconds(20)));
  // Well past the confirmation window: still waiting, nothing promoted.
  std::this_thread::sleep_for(milliseconds(1500));
  {
    const Decision d = loop.decision();
    CHECK(d.state == ClusterState::failing_over);
    CHECK(std::holds_alternative<op::None>(d.operation));
    CHECK_THAT(d.reason, Catch::Contains("Duplicate entry"));
    for (std::size_t i = 1; i <= 3; ++i)
      CHECK(status_of(*cluster, i).read_only);
    CHECK_FALSE(contains_kind(loop.operations(), "promote"));
  }
  // The operator's repair: drop the local row, then start the SQL thread where it stopped in
  // file/position mode (a plain START with both threads stopped would discard the relay log in
  // GTID mode, and with it the writes only r1 received).
  const auto repaired_at = Clock::now();
  {
    auto admin = cluster->admin(1);
    REQUIRE(admin);
    auto rows = admin->query("SHOW SLAVE STATUS");
    REQUIRE(rows);
    REQUIRE(rows->rows.size() == 1);
    const std::string file = rows->rows[0].at(rows->column("Relay_Log_File").value()).value();
    const std::string position = rows->rows[0].at(rows->column("Relay_Log_Pos").value()).value();
    admin_exec(
        *cluster, 1,
        {"SET SESSION sql_log_bin = 0", fmt::format("DELETE FROM t.w WHERE id = {}", conflict),
         fmt::format("CHANGE MASTER TO MASTER_USE_GTID = no, RELAY_LOG_FILE = '{}', "
                     "RELAY_LOG_POS = {}",
                     file, position),
         "START SLAVE SQL_THREAD"});
  }
  REQUIRE(poll_until([&] { return loop.settled_on_new_primary("primary"); }, seconds(20)));
  std::fprintf(stderr, "failover held %lld ms on an SQL error; repair -> settled on %s: %lld ms\n",
               ms_since(killed_at, repaired_at), loop.loop.memory().primary.c_str(),
               ms_since(repaired_at));
  REQUIRE(poll_until([&] { return writer.first_after(repaired_at, 0).has_value(); }, seconds(10)));
  writer.stop();
  sampler.stop();
  loop.loop.stop();
  CHECK(loop.loop.memory().primary == "r1");
  testing::require_all_acked_on(*cluster, 1, writer.acks());
  CHECK(sampler.max_writable() == 1);
  std::fprintf(stderr, "SQL error test: %zu acknowledged writes, %lld ms in all\n",
               writer.acks().size(), ms_since(test_start));
}

TEST_CASE("replicas that still see the primary veto failover while the controller is cut off",
          "[mysql][real][failover][faults]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  auto proxy = TcpProxy::start(cluster->at(0).port);
  REQUIRE(proxy);
  // The controller reaches the primary through the proxy; replicas replicate from it directly.
  ClusterSpec spec = spec_of(*cluster);
  spec.instances[0].admin_host = "127.0.0.1";
  spec.instances[0].admin_port = (*proxy)->port();
  REQUIRE(validate(spec));
  Loop loop(spec);
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::healthy; }, seconds(10)));
  CHECK((*proxy)->accepted() > 0);
  Sampler sampler(*cluster);
  Writer writer(*cluster);
  REQUIRE(poll_until([&] { return writer.count() >= 100; }, seconds(20)));

  // Cut well past replica_silence + failure_confirm (2 s + 0.3 s): every replica still receives
  // from the primary, so it is suspect, never failed over, and keeps acknowledging writes.
  const auto watch = [&](milliseconds how_long, const char* phase) {
    const auto operations = loop.operations().size();
    const std::size_t acked = writer.count();
    const auto until = Clock::now() + how_long;
    while (Clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(100));
      const Decision d = loop.decision();
      INFO(phase << ": " << d.reason);
      CHECK(std::holds_alternative<op::None>(d.operation));
    }
    const Decision d = loop.decision();
    INFO(phase << ": " << d.reason);
    CHECK(d.state == ClusterState::suspect);
    CHECK_THAT(d.reason, Catch::Contains("still replicate from it: not failing over"));
    CHECK(loop.operations().size() == operations);
    CHECK(loop.loop.memory().failovers == 0);
    CHECK(writer.count() > acked + 50);
    CHECK(writer.last_by(0).has_value());
    CHECK_FALSE(writer.first_after(test_start, 0).has_value());
  };
  (*proxy)->cut(TcpProxy::Cut::reset);
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::suspect; }, seconds(5)));
  watch(milliseconds(5000), "controller cut off");
  // One replica loses the primary too; the other two still see it: still no failover.
  admin_exec(*cluster, 3, {"STOP SLAVE IO_THREAD"});
  watch(milliseconds(2500), "controller cut off, r3 stopped");
  CHECK_THAT(loop.decision().reason, Catch::Contains("r1, r2 still replicate"));

  const auto healed_at = Clock::now();
  (*proxy)->heal();
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::healthy; }, seconds(10)));
  std::fprintf(stderr, "healed -> healthy (r3 restarted by the loop): %lld ms\n",
               ms_since(healed_at));
  CHECK(loop.loop.memory().failovers == 0);
  CHECK(loop.loop.memory().primary == "primary");

  // Cut again, and now the primary really dies: failover.
  (*proxy)->cut(TcpProxy::Cut::reset);
  const auto killed_at = Clock::now();
  cluster->kill(0);
  REQUIRE(poll_until([&] { return loop.settled_on_new_primary("primary"); }, seconds(20)));
  REQUIRE(poll_until([&] { return writer.first_after(killed_at, 0).has_value(); }, seconds(10)));
  const auto first = *writer.first_after(killed_at, 0);
  std::fprintf(stderr, "cut + kill -9 -> first write acknowledged by %s: %lld ms\n",
               cluster->at(first.instance).name.c_str(), ms_since(killed_at, first.at));
  writer.stop();
  sampler.stop();
  loop.loop.stop();
  const ClusterMemory memory = loop.loop.memory();
  CHECK(memory.failovers == 1);
  const std::size_t new_primary = index_of(*cluster, memory.primary);
  CHECK(new_primary == first.instance);
  testing::require_all_acked_on(*cluster, new_primary, writer.acks());
  CHECK(sampler.max_writable() == 1);
  std::fprintf(stderr, "veto test: %zu acknowledged writes, %lld ms in all\n", writer.acks().size(),
               ms_since(test_start));
}

TEST_CASE("two failovers back to back lose nothing", "[mysql][real][failover][faults]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  const ClusterSpec spec = spec_of(*cluster);
  Loop loop(spec);
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::healthy; }, seconds(10)));
  Sampler sampler(*cluster);
  Writer writer(*cluster);
  REQUIRE(poll_until([&] { return writer.count() >= 200; }, seconds(20)));

  const auto first_kill = Clock::now();
  cluster->kill(0);
  REQUIRE(poll_until([&] { return loop.settled_on_new_primary("primary"); }, seconds(20)));
  const std::string second = loop.loop.memory().primary;
  const std::size_t second_index = index_of(*cluster, second);
  REQUIRE(poll_until([&] { return writer.first_after(first_kill, 0).has_value(); }, seconds(10)));
  const auto first_ack = *writer.first_after(first_kill, 0);
  const std::size_t before_second = writer.count();

  const auto second_kill = Clock::now();
  cluster->kill(second_index);
  REQUIRE(poll_until(
      [&] {
        const auto m = loop.loop.memory();
        return !m.failover && m.failovers == 2 && m.primary != second;
      },
      seconds(20)));
  const std::string third = loop.loop.memory().primary;
  const std::size_t third_index = index_of(*cluster, third);
  REQUIRE(poll_until([&] { return writer.count() > before_second + 50; }, seconds(10)));
  writer.stop();
  sampler.stop();
  loop.loop.stop();

  const auto acks = writer.acks();
  std::optional<Writer::Ack> second_ack;
  for (const auto& ack : acks) {
    if (ack.at >= second_kill && ack.instance == third_index) {
      second_ack = ack;
      break;
    }
  }
  REQUIRE(second_ack);
  std::fprintf(stderr,
               "back-to-back failovers: primary -> %s %lld ms, %s -> %s %lld ms (kill -9 -> "
               "first acknowledged write)\n",
               second.c_str(), ms_since(first_kill, first_ack.at), second.c_str(), third.c_str(),
               ms_since(second_kill, second_ack->at));
  CHECK(first_ack.instance == second_index);
  testing::require_all_acked_on(*cluster, third_index, acks);
  CHECK(sampler.max_writable() == 1);
  // The one replica left follows the last primary and has everything.
  for (std::size_t i = 1; i < cluster->instances().size(); ++i) {
    if (i == second_index || i == third_index) continue;
    const auto status = status_of(*cluster, i);
    CHECK(replication_of(status).master_port == cluster->at(third_index).port);
    CHECK(status.read_only);
    REQUIRE(cluster->wait_applied(i, status_of(*cluster, third_index).gtid_binlog_pos));
    testing::require_all_acked_on(*cluster, i, acks);
  }
  std::fprintf(stderr, "back-to-back test: %zu acknowledged writes, %lld ms in all\n", acks.size(),
               ms_since(test_start));
}

TEST_CASE("a switchover kills a long open transaction, whose rows land nowhere",
          "[mysql][real][failover][faults]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  ClusterSpec spec = spec_of(*cluster);
  spec.policy.kill_grace = milliseconds(500);
  REQUIRE(validate(spec));
  Loop loop(spec);
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::healthy; }, seconds(10)));
  Sampler sampler(*cluster);
  Writer writer(*cluster);
  REQUIRE(poll_until([&] { return writer.count() >= 200; }, seconds(20)));

  constexpr std::int64_t kLongFirst = 50000001;
  constexpr std::int64_t kLongRows = 10;
  auto long_txn = Client::connect(cluster->options(0, testing::kAppUser, testing::kAppPassword));
  REQUIRE(long_txn);
  REQUIRE(long_txn->exec("BEGIN"));
  for (std::int64_t id = kLongFirst; id < kLongFirst + kLongRows; ++id)
    REQUIRE(long_txn->exec(fmt::format("INSERT INTO t.w (id) VALUES ({})", id)));

  const auto requested_at = Clock::now();
  REQUIRE(loop.loop.update(
      [&](ClusterMemory& m) { return request_switchover(spec, m, "r2", wall_clock_ms()); }));
  REQUIRE(poll_until(
      [&] {
        const auto m = loop.loop.memory();
        return !m.switchover && m.primary == "r2" && m.switchovers == 1;
      },
      seconds(20)));
  const auto done_at = Clock::now();
  const std::size_t r2 = index_of(*cluster, "r2");
  REQUIRE(poll_until([&] { return writer.first_after(done_at, 0).has_value(); }, seconds(10)));
  // The old primary rejoined, and nobody looks errant for having followed the new primary.
  CHECK(poll_until([&] { return loop.decision().state == ClusterState::healthy; }, seconds(5)));
  INFO(loop.decision().reason);
  CHECK(loop.decision().errant.empty());
  writer.stop();
  sampler.stop();
  loop.loop.stop();

  // The transaction's connection was killed: its commit fails, and its rows are nowhere.
  auto commit = long_txn->exec("COMMIT");
  CHECK_FALSE(commit);
  if (!commit)
    std::fprintf(stderr, "the long transaction's COMMIT: %s\n", commit.error().message.c_str());
  for (std::size_t i = 0; i < cluster->instances().size(); ++i) {
    const auto ids = testing::ids_on(*cluster, i);
    for (std::int64_t id = kLongFirst; id < kLongFirst + kLongRows; ++id) {
      INFO(cluster->at(i).name << " has id " << id);
      CHECK(ids.count(id) == 0);
    }
  }
  const auto acks = writer.acks();
  const auto last_old = writer.last_by(0);
  const auto first_new = writer.first_after(requested_at, 0);
  REQUIRE(last_old);
  REQUIRE(first_new);
  std::fprintf(stderr,
               "switchover under a long transaction: %lld ms from request to done, writes blocked "
               "%lld ms (last ack on primary -> first on %s)\n",
               ms_since(requested_at, done_at), ms_since(last_old->at, first_new->at),
               cluster->at(first_new->instance).name.c_str());
  CHECK(first_new->instance == r2);
  testing::require_all_acked_on(*cluster, r2, acks);
  CHECK(sampler.max_writable() == 1);
  std::fprintf(stderr, "long transaction test: %lld ms in all\n", ms_since(test_start));
}

}  // namespace neco::mysql
