// The failover loop against real mariadbd instances (a primary and three replicas per test,
// semi-sync AFTER_SYNC): kill -9 of the primary under write load loses no acknowledged write
// and never has two writable instances; a SIGSTOPped primary is failed over, then fenced and
// rejoined when it wakes; an errant replica is never promoted; a planned switchover loses
// nothing. Failover and write-block times are measured and printed.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <cstdio>
#include <thread>
#include <vector>

#include "modules/mysql/cluster_loop.hpp"
#include "tests/unit/modules/mysql/failover_harness.hpp"

namespace neco::mysql {
namespace {

using std::chrono::milliseconds;
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
using testing::Writer;

}  // namespace

TEST_CASE("kill -9 of the primary under writes: no acknowledged write lost, one writer",
          "[mysql][real][failover]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  const ClusterSpec spec = spec_of(*cluster);
  Loop loop(spec);
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::healthy; },
                     std::chrono::seconds(10)));
  Sampler sampler(*cluster);
  Writer writer(*cluster);
  REQUIRE(poll_until([&] { return writer.count() >= 300; }, std::chrono::seconds(20)));

  const auto killed_at = Clock::now();
  cluster->kill(0);
  REQUIRE(poll_until([&] { return writer.first_after(killed_at, 0).has_value(); },
                     std::chrono::seconds(30)));
  const auto first = *writer.first_after(killed_at, 0);
  std::fprintf(stderr, "failover (kill -9 -> first write acknowledged by %s): %lld ms\n",
               cluster->at(first.instance).name.c_str(), ms_since(killed_at, first.at));
  REQUIRE(
      poll_until([&] { return loop.settled_on_new_primary("primary"); }, std::chrono::seconds(10)));
  std::this_thread::sleep_for(milliseconds(200));
  writer.stop();
  sampler.stop();
  loop.loop.stop();

  const ClusterMemory memory = loop.loop.memory();
  CHECK(memory.failovers == 1);
  const std::size_t new_primary = index_of(*cluster, memory.primary);
  CHECK(new_primary == first.instance);
  testing::require_all_acked_on(*cluster, new_primary, writer.acks());
  CHECK(sampler.passes() > 10);
  CHECK(sampler.max_writable() == 1);
  // The other replicas follow the new primary and have everything.
  for (std::size_t i = 1; i < cluster->instances().size(); ++i) {
    if (i == new_primary) continue;
    const auto status = status_of(*cluster, i);
    REQUIRE(status.replication.size() == 1);
    CHECK(status.replication[0].master_port == cluster->at(new_primary).port);
    CHECK(status.read_only);
    testing::require_all_acked_on(*cluster, i, {});
  }
  std::fprintf(stderr, "kill -9 test: %zu acknowledged writes, %d samples, %lld ms in all\n",
               writer.acks().size(), sampler.passes(), ms_since(test_start));
}

TEST_CASE("a SIGSTOPped primary is failed over, then fenced and rejoined when it wakes",
          "[mysql][real][failover]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  const ClusterSpec spec = spec_of(*cluster);
  Loop loop(spec);
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::healthy; },
                     std::chrono::seconds(10)));
  std::vector<Writer::Ack> acks;
  {
    Writer writer(*cluster);
    REQUIRE(poll_until([&] { return writer.count() >= 100; }, std::chrono::seconds(20)));
    writer.stop();  // nothing in flight when the primary stops
    acks = writer.acks();
  }
  const auto paused_at = Clock::now();
  REQUIRE(cluster->pause(0));
  REQUIRE(
      poll_until([&] { return loop.settled_on_new_primary("primary"); }, std::chrono::seconds(30)));
  std::fprintf(stderr, "failover of a stopped primary (SIGSTOP -> new primary settled): %lld ms\n",
               ms_since(paused_at));
  const std::size_t new_primary = index_of(*cluster, loop.loop.memory().primary);
  testing::require_all_acked_on(*cluster, new_primary, acks);
  {
    auto app =
        Client::connect(cluster->options(new_primary, testing::kAppUser, testing::kAppPassword));
    REQUIRE(app);
    REQUIRE(app->exec("INSERT INTO t.w (id) VALUES (1000001)"));
  }

  cluster->resume(0);
  // Fenced: read-only; an application write there fails.
  REQUIRE(poll_until(
      [&] {
        auto admin = cluster->admin(0);
        if (!admin) return false;
        auto status = read_instance_status(*admin);
        return status && status->read_only;
      },
      std::chrono::seconds(15)));
  {
    auto app = Client::connect(cluster->options(0, testing::kAppUser, testing::kAppPassword));
    REQUIRE(app);
    auto write = app->exec("INSERT INTO t.w (id) VALUES (1000002)");
    REQUIRE_FALSE(write);
    CHECK(write.error().code == Errc::failed_precondition);
  }
  // Rejoined: replicates from the new primary and receives its writes.
  const auto target = status_of(*cluster, new_primary).gtid_binlog_pos;
  REQUIRE(poll_until(
      [&] {
        auto admin = cluster->admin(0);
        if (!admin) return false;
        auto status = read_instance_status(*admin);
        return status && status->replication.size() == 1 &&
               status->replication[0].master_port == cluster->at(new_primary).port &&
               status->replication[0].io_running == "Yes" && status->read_only &&
               contains(status->gtid_current_pos, target);
      },
      std::chrono::seconds(15)));
  CHECK(testing::ids_on(*cluster, 0).count(1000001) == 1);
  CHECK_FALSE(status_of(*cluster, 0).semi_sync_master_on);
  CHECK(poll_until([&] { return loop.decision().state == ClusterState::healthy; },
                   std::chrono::seconds(5)));
  INFO(loop.decision().reason);
  CHECK(loop.decision().errant.empty());
  std::fprintf(stderr, "SIGSTOP test: %lld ms in all\n", ms_since(test_start));
}

TEST_CASE("a replica with an errant write is never promoted", "[mysql][real][failover]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  const ClusterSpec spec = spec_of(*cluster);
  ClusterMemory memory;
  {
    auto admin = cluster->admin(0);
    REQUIRE(admin);
    for (int i = 1; i <= 20; ++i)
      REQUIRE(admin->exec(fmt::format("INSERT INTO t.w (id) VALUES ({})", i)));
    const auto pos = read_instance_status(*admin)->gtid_binlog_pos;
    for (std::size_t i = 1; i <= 3; ++i)
      REQUIRE(cluster->wait_applied(i, pos));
  }
  {
    // r1 (the first by name, so the tie-break favours it) takes a write of its own.
    auto r1 = cluster->admin(1);
    REQUIRE(r1);
    REQUIRE(r1->exec("INSERT INTO t.w (id) VALUES (999)"));
  }
  auto result = run_once(spec, testing::access(), memory);
  CHECK(result.decision.errant == std::vector<std::string>{"r1"});
  CHECK(result.decision.state == ClusterState::degraded);

  cluster->kill(0);
  const auto killed_at = Clock::now();
  REQUIRE(poll_until(
      [&] {
        run_once(spec, testing::access(), memory);
        return !memory.failover && memory.primary != "primary";
      },
      std::chrono::seconds(20)));
  std::fprintf(stderr, "failover with an errant replica: %lld ms\n", ms_since(killed_at));
  CHECK(memory.primary != "r1");
  CHECK(memory.errant == std::vector<std::string>{"r1"});
  CHECK(status_of(*cluster, 1).read_only);
  const std::size_t new_primary = index_of(*cluster, memory.primary);
  auto app =
      Client::connect(cluster->options(new_primary, testing::kAppUser, testing::kAppPassword));
  REQUIRE(app);
  REQUIRE(app->exec("INSERT INTO t.w (id) VALUES (21)"));
  CHECK(testing::ids_on(*cluster, new_primary).count(999) == 0);
  result = run_once(spec, testing::access(), memory);
  CHECK_THAT(result.decision.reason, Catch::Contains("r1 has errant transactions"));
  std::fprintf(stderr, "errant test: %lld ms in all\n", ms_since(test_start));
}

TEST_CASE("a planned switchover loses nothing", "[mysql][real][failover]") {
  const auto test_start = Clock::now();
  auto cluster = start_cluster();
  const ClusterSpec spec = spec_of(*cluster);
  Loop loop(spec);
  REQUIRE(poll_until([&] { return loop.decision().state == ClusterState::healthy; },
                     std::chrono::seconds(10)));
  Writer writer(*cluster);
  REQUIRE(poll_until([&] { return writer.count() >= 200; }, std::chrono::seconds(20)));
  const auto requested_at = Clock::now();
  REQUIRE(loop.loop.update(
      [&](ClusterMemory& m) { return request_switchover(spec, m, "r2", wall_clock_ms()); }));
  REQUIRE(poll_until(
      [&] {
        const auto m = loop.loop.memory();
        return !m.switchover && m.primary == "r2" && m.switchovers == 1;
      },
      std::chrono::seconds(20)));
  const auto done_at = Clock::now();
  REQUIRE(poll_until([&] { return writer.first_after(done_at, 0).has_value(); },
                     std::chrono::seconds(10)));
  writer.stop();
  loop.loop.stop();

  const auto acks = writer.acks();
  // The write block: the longest gap between consecutive acknowledgements from the request on.
  long long block = 0;
  for (std::size_t i = 1; i < acks.size(); ++i) {
    if (acks[i].at < requested_at) continue;
    block = std::max(block, ms_since(acks[i - 1].at, acks[i].at));
  }
  std::fprintf(stderr, "switchover: %lld ms from request to done, writes blocked %lld ms\n",
               ms_since(requested_at, done_at), block);
  const std::size_t r2 = index_of(*cluster, "r2");
  testing::require_all_acked_on(*cluster, r2, acks);
  const auto old = status_of(*cluster, 0);
  REQUIRE(old.replication.size() == 1);
  CHECK(old.replication[0].master_port == cluster->at(r2).port);
  CHECK(old.read_only);
  CHECK_FALSE(old.semi_sync_master_on);
  std::fprintf(stderr, "switchover test: %lld ms in all\n", ms_since(test_start));
}

}  // namespace neco::mysql
