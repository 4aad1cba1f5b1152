// The failover loop against real mariadbd instances (a primary and three replicas per test,
// semi-sync AFTER_SYNC): kill -9 of the primary under write load loses no acknowledged write
// and never has two writable instances; a SIGSTOPped primary is failed over, then fenced and
// rejoined when it wakes; an errant replica is never promoted; a planned switchover loses
// nothing. Failover and write-block times are measured and printed.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "modules/mysql/cluster_loop.hpp"
#include "tests/unit/modules/mysql/mariadb_cluster.hpp"

namespace neco::mysql {
namespace {

using testing::MariadbCluster;
using testing::poll_until;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

long long ms_since(Clock::time_point start, Clock::time_point end = Clock::now()) {
  return std::chrono::duration_cast<milliseconds>(end - start).count();
}

ClusterSpec spec_of(const MariadbCluster& cluster) {
  ClusterSpec spec;
  spec.name = "test";
  for (const auto& instance : cluster.instances()) {
    spec.instances.push_back(
        {instance.name, "127.0.0.1", instance.port, instance.name == "primary"});
  }
  spec.policy.failure_confirm = milliseconds(300);
  spec.policy.replica_silence = milliseconds(2000);
  spec.policy.relay_apply_timeout = milliseconds(3000);
  spec.policy.kill_grace = milliseconds(200);
  spec.policy.catchup_timeout = milliseconds(3000);
  REQUIRE(validate(spec));
  return spec;
}

Access access() {
  Access a;
  a.admin_user = testing::kAdminUser;
  a.admin_password = testing::kAdminPassword;
  a.repl_user = testing::kReplUser;
  a.repl_password = testing::kReplPassword;
  return a;
}

std::unique_ptr<MariadbCluster> start_cluster() {
  testing::skip_unless_installed();
  auto cluster = MariadbCluster::start(3);
  if (!cluster) FAIL("starting the MariaDB cluster failed: " << cluster.error().message);
  auto admin = (*cluster)->admin(0);
  REQUIRE(admin);
  REQUIRE(admin->exec("CREATE DATABASE t"));
  REQUIRE(admin->exec("CREATE TABLE t.w (id BIGINT PRIMARY KEY, at TIMESTAMP(6) DEFAULT NOW(6))"));
  return std::move(*cluster);
}

std::size_t index_of(const MariadbCluster& cluster, const std::string& name) {
  for (std::size_t i = 0; i < cluster.instances().size(); ++i) {
    if (cluster.at(i).name == name) return i;
  }
  FAIL("no instance " << name);
  return 0;
}

// Inserts increasing ids with autocommit as the application user, into whichever instance
// accepts them (a read-only or dead one refuses; it then tries the next), never retrying an id
// whose fate is unknown. Records every id the server acknowledged, when, and where.
class Writer {
 public:
  struct Ack {
    std::int64_t id;
    Clock::time_point at;
    std::size_t instance;
  };

  explicit Writer(const MariadbCluster& cluster) : cluster_(cluster) {
    thread_ = std::thread([this] { run(); });
  }
  ~Writer() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Ack> acks() const {
    const std::lock_guard lock(mutex_);
    return acks_;
  }
  std::size_t count() const {
    const std::lock_guard lock(mutex_);
    return acks_.size();
  }
  // The first acknowledgement at or after `t` by an instance other than `not_instance`.
  std::optional<Ack> first_after(Clock::time_point t, std::size_t not_instance) const {
    const std::lock_guard lock(mutex_);
    for (const Ack& ack : acks_) {
      if (ack.at >= t && ack.instance != not_instance) return ack;
    }
    return std::nullopt;
  }

 private:
  void run() {
    std::size_t target = 0;
    std::optional<Client> client;
    std::int64_t next_id = 1;
    while (!stop_) {
      if (!client) {
        auto c =
            Client::connect(cluster_.options(target, testing::kAppUser, testing::kAppPassword));
        if (c) client = std::move(*c);
      }
      const std::int64_t id = next_id++;
      if (client && client->exec(fmt::format("INSERT INTO t.w (id) VALUES ({})", id))) {
        const std::lock_guard lock(mutex_);
        acks_.push_back({id, Clock::now(), target});
        continue;
      }
      client.reset();
      target = (target + 1) % cluster_.instances().size();
      std::this_thread::sleep_for(milliseconds(5));
    }
  }

  const MariadbCluster& cluster_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Ack> acks_;
  std::thread thread_;
};

// Samples @@read_only of every reachable instance in turn and remembers the most instances
// seen writable in one pass.
class Sampler {
 public:
  explicit Sampler(const MariadbCluster& cluster) : cluster_(cluster) {
    thread_ = std::thread([this] { run(); });
  }
  ~Sampler() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int max_writable() const { return max_writable_; }
  int passes() const { return passes_; }

 private:
  void run() {
    std::vector<std::optional<Client>> clients(cluster_.instances().size());
    while (!stop_) {
      int writable = 0;
      for (std::size_t i = 0; i < clients.size(); ++i) {
        if (!clients[i]) {
          auto c = cluster_.admin(i);
          if (!c) continue;
          clients[i] = std::move(*c);
        }
        auto rows = clients[i]->query("SELECT @@read_only");
        if (!rows) {
          clients[i].reset();
          continue;
        }
        if (rows->rows.at(0).at(0) == "0") ++writable;
      }
      max_writable_ = std::max(max_writable_.load(), writable);
      ++passes_;
      std::this_thread::sleep_for(milliseconds(10));
    }
  }

  const MariadbCluster& cluster_;
  std::atomic<bool> stop_{false};
  std::atomic<int> max_writable_{0};
  std::atomic<int> passes_{0};
  std::thread thread_;
};

// The loop, with its last decision kept for the test.
struct Loop {
  Loop(const ClusterSpec& spec, ClusterMemory memory = {})
      : loop(spec, access(), std::move(memory), milliseconds(100),
             [this](const RunResult& r, const ClusterMemory&) {
               const std::lock_guard lock(mutex);
               const bool changed = r.decision.state != last.state;
               last = r.decision;
               if (changed || !std::holds_alternative<op::None>(r.decision.operation) || r.error) {
                 std::fprintf(stderr, "  loop +%lld ms: %s: %s -> %s%s%s\n", ms_since(started),
                              std::string(to_string(r.decision.state)).c_str(),
                              r.decision.reason.c_str(), describe(r.decision.operation).c_str(),
                              r.error ? " FAILED: " : "", r.error ? r.error->message.c_str() : "");
               }
             }) {}
  Decision decision() {
    const std::lock_guard lock(mutex);
    return last;
  }
  bool settled_on_new_primary(const std::string& old) {
    const ClusterMemory m = loop.memory();
    return !m.failover && !m.primary.empty() && m.primary != old;
  }

  const Clock::time_point started = Clock::now();
  std::mutex mutex;
  Decision last;
  ClusterLoop loop;
};

std::set<std::int64_t> ids_on(const MariadbCluster& cluster, std::size_t i) {
  auto admin = cluster.admin(i);
  REQUIRE(admin);
  auto rows = admin->query("SELECT id FROM t.w");
  REQUIRE(rows);
  std::set<std::int64_t> ids;
  for (const auto& row : rows->rows)
    ids.insert(std::stoll(*row.at(0)));
  return ids;
}

void require_all_acked_on(const MariadbCluster& cluster, std::size_t i,
                          const std::vector<Writer::Ack>& acks) {
  const auto ids = ids_on(cluster, i);
  std::size_t missing = 0;
  for (const auto& ack : acks)
    missing += ids.count(ack.id) == 0 ? 1 : 0;
  INFO(acks.size() << " acknowledged ids, " << ids.size() << " on " << cluster.at(i).name);
  CHECK(missing == 0);
}

InstanceStatus status_of(const MariadbCluster& cluster, std::size_t i) {
  auto admin = cluster.admin(i);
  REQUIRE(admin);
  auto status = read_instance_status(*admin);
  REQUIRE(status);
  return *status;
}

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
  require_all_acked_on(*cluster, new_primary, writer.acks());
  CHECK(sampler.passes() > 10);
  CHECK(sampler.max_writable() == 1);
  // The other replicas follow the new primary and have everything.
  for (std::size_t i = 1; i < cluster->instances().size(); ++i) {
    if (i == new_primary) continue;
    const auto status = status_of(*cluster, i);
    REQUIRE(status.replication.size() == 1);
    CHECK(status.replication[0].master_port == cluster->at(new_primary).port);
    CHECK(status.read_only);
    require_all_acked_on(*cluster, i, {});
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
  require_all_acked_on(*cluster, new_primary, acks);
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
  CHECK(ids_on(*cluster, 0).count(1000001) == 1);
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
  auto result = run_once(spec, access(), memory);
  CHECK(result.decision.errant == std::vector<std::string>{"r1"});
  CHECK(result.decision.state == ClusterState::degraded);

  cluster->kill(0);
  const auto killed_at = Clock::now();
  REQUIRE(poll_until(
      [&] {
        run_once(spec, access(), memory);
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
  CHECK(ids_on(*cluster, new_primary).count(999) == 0);
  result = run_once(spec, access(), memory);
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
  require_all_acked_on(*cluster, r2, acks);
  const auto old = status_of(*cluster, 0);
  REQUIRE(old.replication.size() == 1);
  CHECK(old.replication[0].master_port == cluster->at(r2).port);
  CHECK(old.read_only);
  CHECK_FALSE(old.semi_sync_master_on);
  std::fprintf(stderr, "switchover test: %lld ms in all\n", ms_since(test_start));
}

}  // namespace neco::mysql
