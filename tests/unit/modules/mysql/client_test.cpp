// The client and the status reader against real mariadbd instances (a primary and three
// replicas shared by every test case, see mariadb_cluster.hpp): status fields after writes,
// GTID positions moving as the pure code expects, an errant write found by errant(), and each
// failure mapped to its code within its bound (wrong password, nothing listening, a stopped
// server). r1 and r2 stay healthy; r3 is the one an errant write breaks; r2 is paused once.
#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <chrono>

#include "modules/mysql/client.hpp"
#include "modules/mysql/gtid.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/mysql/mariadb_cluster.hpp"

using neco::Errc;
using namespace neco::mysql;
using namespace neco::mysql::testing;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

Client connect_or_fail(const ConnectOptions& options) {
  auto client = Client::connect(options);
  if (!client) FAIL(client.error().message);
  return std::move(*client);
}

InstanceStatus status_of(Client& client) {
  auto status = read_instance_status(client);
  if (!status) FAIL(status.error().message);
  return std::move(*status);
}

// Inserts `rows` rows as the application user: one transaction each.
void write_on_primary(MariadbCluster& cluster, int rows) {
  Client app = connect_or_fail(cluster.options(0, kAppUser, kAppPassword));
  for (int i = 0; i < rows; ++i) {
    auto ok = app.exec("INSERT INTO t.items (note) VALUES ('hello')");
    if (!ok) FAIL(ok.error().message);
  }
}

GtidPosition primary_binlog_pos(MariadbCluster& cluster) {
  Client admin = connect_or_fail(cluster.options(0));
  return status_of(admin).gtid_binlog_pos;
}

// The database and table the tests write in, created by the first test that runs (replicated
// like any write; the IF NOT EXISTS statements that find them are not logged).
void ensure_database(MariadbCluster& cluster) {
  Client admin = connect_or_fail(cluster.options(0));
  REQUIRE(admin.exec("CREATE DATABASE IF NOT EXISTS t").has_value());
  REQUIRE(admin
              .exec("CREATE TABLE IF NOT EXISTS t.items (id INT AUTO_INCREMENT PRIMARY KEY, "
                    "note VARCHAR(64)) ENGINE=InnoDB")
              .has_value());
}

}  // namespace

TEST_CASE("status of a primary and two replicas after writes", "[mysql][real]") {
  MariadbCluster& cluster = shared_cluster();
  ensure_database(cluster);
  write_on_primary(cluster, 5);
  const GtidPosition target = primary_binlog_pos(cluster);
  REQUIRE_FALSE(target.empty());
  REQUIRE(cluster.wait_applied(1, target));
  REQUIRE(cluster.wait_applied(2, target));

  // The primary, over its unix socket as root.
  ConnectOptions socket_root;
  socket_root.unix_socket = cluster.at(0).socket.string();
  socket_root.user = "root";
  Client primary = connect_or_fail(socket_root);
  CHECK(primary.endpoint() == cluster.at(0).socket.string());
  const InstanceStatus p = status_of(primary);
  CHECK(p.server_id == 1);
  CHECK_FALSE(p.read_only);
  CHECK(p.replication.empty());
  CHECK(p.semi_sync_master_on);
  CHECK(p.semi_sync_master_clients >= 2);
  CHECK_FALSE(p.semi_sync_slave_on);
  CHECK(p.gtid_binlog_pos == target);
  CHECK(p.gtid_current_pos == target);
  REQUIRE(p.gtid_binlog_pos.find(0) != nullptr);
  CHECK(p.gtid_binlog_pos.find(0)->server_id == 1);  // all its own transactions
  CHECK(p.gtid_slave_pos.empty());

  for (std::size_t i : {1U, 2U}) {
    INFO(cluster.at(i).name);
    Client replica = connect_or_fail(cluster.options(i));
    const InstanceStatus r = status_of(replica);
    CHECK(r.server_id == cluster.at(i).server_id);
    CHECK(r.read_only);
    CHECK(r.semi_sync_slave_on);
    CHECK(r.gtid_current_pos == target);
    CHECK(r.gtid_binlog_pos == target);  // log_slave_updates: the same GTIDs, same server_id
    CHECK(r.gtid_slave_pos == target);
    CHECK(errant(r.gtid_current_pos, p.gtid_binlog_pos).empty());
    REQUIRE(r.replication.size() == 1);
    const ReplicaStatus& s = r.replication[0];
    CHECK(s.connection_name.empty());
    CHECK(s.master_host == "127.0.0.1");
    CHECK(s.master_port == cluster.at(0).port);
    CHECK(s.io_running == "Yes");
    CHECK(s.sql_running);
    CHECK(s.using_gtid == "Slave_Pos");
    CHECK(contains(s.gtid_io_pos, target));
    REQUIRE(s.seconds_behind_master.has_value());
    CHECK(*s.seconds_behind_master == 0);
    CHECK(s.last_io_error.empty());
    CHECK(s.last_sql_error.empty());
  }

  // read_only holds for an ordinary account on a replica, and maps to failed_precondition.
  Client app = connect_or_fail(cluster.options(1, kAppUser, kAppPassword));
  auto refused = app.exec("INSERT INTO t.items (note) VALUES ('nope')");
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == Errc::failed_precondition);
  CHECK(app.last_errno() == 1290);
  CHECK_THAT(refused.error().message,
             Catch::Contains("error 1290") && Catch::Contains("--read-only"));
}

TEST_CASE("GTID positions advance and compare as the pure code says", "[mysql][real]") {
  MariadbCluster& cluster = shared_cluster();
  ensure_database(cluster);
  write_on_primary(cluster, 1);
  const GtidPosition before = primary_binlog_pos(cluster);
  REQUIRE(cluster.wait_applied(1, before));
  REQUIRE(cluster.wait_applied(2, before));

  write_on_primary(cluster, 3);
  const GtidPosition after = primary_binlog_pos(cluster);
  CHECK(ahead_of(after, before));
  CHECK(after.seq_no(0) == before.seq_no(0) + 3);
  REQUIRE(cluster.wait_applied(1, after));
  REQUIRE(cluster.wait_applied(2, after));

  Client r1 = connect_or_fail(cluster.options(1));
  Client r2 = connect_or_fail(cluster.options(2));
  const InstanceStatus s1 = status_of(r1);
  const InstanceStatus s2 = status_of(r2);
  CHECK(compare(s1.gtid_current_pos, after) == std::partial_ordering::equivalent);
  CHECK(contains(s1.gtid_current_pos, before));
  CHECK(ahead_of(s1.gtid_current_pos, before));
  CHECK(errant(s1.gtid_current_pos, after).empty());

  // Both caught up: equal positions, so the smaller name wins; the live positions parse back.
  std::vector<CandidateInfo> candidates = {
      {"r2", s2.replication.at(0).gtid_io_pos, s2.gtid_current_pos, false, true},
      {"r1", s1.replication.at(0).gtid_io_pos, s1.gtid_current_pos, false, true}};
  auto chosen = choose_candidate(candidates);
  REQUIRE(chosen.has_value());
  CHECK(*chosen == "r1");
  // With r1 known to be behind (an older IO position), r2 is chosen.
  candidates[1].io_pos = before;
  candidates[1].current_pos = before;
  chosen = choose_candidate(candidates);
  REQUIRE(chosen.has_value());
  CHECK(*chosen == "r2");

  // A second domain: the primary writes in domain 7 too; positions become multi-domain.
  Client admin = connect_or_fail(cluster.options(0));
  REQUIRE(admin.exec("SET SESSION gtid_domain_id = 7").has_value());
  REQUIRE(admin.exec("INSERT INTO t.items (note) VALUES ('domain 7')").has_value());
  const GtidPosition multi = primary_binlog_pos(cluster);
  REQUIRE(multi.gtids().size() == 2);
  CHECK(multi.seq_no(7) == 1);
  CHECK(to_string(multi) == fmt::format("0-1-{},7-1-1", after.seq_no(0)));
  CHECK(ahead_of(multi, after));
  REQUIRE(cluster.wait_applied(1, multi));
  Client r1_again = connect_or_fail(cluster.options(1));
  CHECK(status_of(r1_again).gtid_current_pos == multi);
}

TEST_CASE("an errant write on a replica is detected", "[mysql][real]") {
  MariadbCluster& cluster = shared_cluster();
  ensure_database(cluster);
  write_on_primary(cluster, 1);
  const GtidPosition base = primary_binlog_pos(cluster);
  REQUIRE(cluster.wait_applied(3, base));

  // r3 with read_only off takes a plain write: a transaction of its own in domain 0.
  Client r3 = connect_or_fail(cluster.options(3));
  REQUIRE(r3.exec("SET GLOBAL read_only = OFF").has_value());
  Client app = connect_or_fail(cluster.options(3, kAppUser, kAppPassword));
  REQUIRE(app.exec("INSERT INTO t.items (note) VALUES ('errant')").has_value());
  REQUIRE(r3.exec("SET GLOBAL read_only = ON").has_value());

  const InstanceStatus s3 = status_of(r3);
  const GtidPosition primary = primary_binlog_pos(cluster);
  auto found = errant(s3.gtid_current_pos, primary);
  REQUIRE(found.size() == 1);
  CHECK(found[0].reason == ErrantGtid::Reason::ahead);
  CHECK(found[0].replica == Gtid{0, 4, base.seq_no(0) + 1});
  CHECK_THAT(describe(found), Catch::Contains("ahead of the primary's"));
  // The healthy replicas are not errant.
  Client r1 = connect_or_fail(cluster.options(1));
  CHECK(errant(status_of(r1).gtid_current_pos, primary).empty());

  // Never the candidate, although it is the most advanced.
  auto chosen =
      choose_candidate({{"r3", s3.replication.at(0).gtid_io_pos, s3.gtid_current_pos, true, true},
                        {"r1", primary, primary, false, true}});
  REQUIRE(chosen.has_value());
  CHECK(*chosen == "r1");

  // The primary's next transaction takes the same seq_no: now a divergence, and strict mode
  // stops r3's SQL thread (the replica cannot apply it).
  write_on_primary(cluster, 1);
  const GtidPosition next = primary_binlog_pos(cluster);
  REQUIRE(next.seq_no(0) == base.seq_no(0) + 1);
  auto diverged = errant(s3.gtid_current_pos, next);
  REQUIRE(diverged.size() == 1);
  CHECK(diverged[0].reason == ErrantGtid::Reason::diverged);
  const bool stopped = poll_until(
      [&] {
        auto s = read_instance_status(r3);
        return s && !s->replication.empty() && !s->replication[0].sql_running &&
               !s->replication[0].last_sql_error.empty();
      },
      seconds(20));
  CHECK(stopped);
}

TEST_CASE("wrong credentials are permission_denied", "[mysql][real]") {
  MariadbCluster& cluster = shared_cluster();
  auto client = Client::connect(cluster.options(0, kAdminUser, "not-the-password"));
  REQUIRE_FALSE(client.has_value());
  CHECK(client.error().code == Errc::permission_denied);
  CHECK_THAT(client.error().message, Catch::Contains("error 1045") && Catch::Contains("\"neco\"") &&
                                         !Catch::Contains("not-the-password"));
}

TEST_CASE("nothing listening is unavailable, fast", "[mysql][real]") {
  ConnectOptions options;
  options.host = "127.0.0.1";
  options.port = neco::testing::free_port();
  options.user = "nobody";
  options.password = "secret-pw";
  options.connect_timeout = seconds(2);
  const auto start = Clock::now();
  auto client = Client::connect(options);
  const auto took = Clock::now() - start;
  REQUIRE_FALSE(client.has_value());
  CHECK(client.error().code == Errc::unavailable);
  CHECK(took < milliseconds(500));
  CHECK_THAT(client.error().message,
             Catch::Contains("error 2002") && !Catch::Contains("secret-pw"));

  options.unix_socket = "/nonexistent/mariadbd.sock";
  client = Client::connect(options);
  REQUIRE_FALSE(client.has_value());
  CHECK(client.error().code == Errc::unavailable);
}

TEST_CASE("a stopped server is deadline_exceeded within the timeouts", "[mysql][real]") {
  MariadbCluster& cluster = shared_cluster();
  Client connected = connect_or_fail(cluster.options(2));  // read timeout 2 s
  REQUIRE(connected.exec("SELECT 1").has_value());

  REQUIRE(cluster.pause(2));
  const auto start = Clock::now();
  auto rows = connected.query("SELECT @@server_id");
  const auto query_took = Clock::now() - start;
  // A new connection: the kernel accepts it, the server never greets (connect timeout 1 s).
  const auto connect_start = Clock::now();
  auto fresh = Client::connect(cluster.options(2));
  const auto connect_took = Clock::now() - connect_start;
  cluster.resume(2);
  INFO("query " << std::chrono::duration_cast<milliseconds>(query_took).count() << " ms, connect "
                << std::chrono::duration_cast<milliseconds>(connect_took).count()
                << " ms: " << (rows ? std::string("no error") : rows.error().message) << " / "
                << (fresh ? std::string("no error") : fresh.error().message));

  REQUIRE_FALSE(rows.has_value());
  CHECK(rows.error().code == Errc::deadline_exceeded);
  CHECK(query_took >= milliseconds(1800));
  CHECK(query_took < milliseconds(3500));
  REQUIRE_FALSE(fresh.has_value());
  CHECK(fresh.error().code == Errc::deadline_exceeded);
  CHECK(connect_took >= milliseconds(900));
  CHECK(connect_took < milliseconds(2500));

  // The connection is gone; the server is back.
  auto again = connected.exec("SELECT 1");
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == Errc::unavailable);
  const bool back =
      poll_until([&] { return Client::connect(cluster.options(2)).has_value(); }, seconds(10));
  CHECK(back);
}

TEST_CASE("client options are validated", "[mysql]") {
  ConnectOptions o;
  o.user = "";
  auto c = Client::connect(o);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().code == Errc::invalid_argument);
  CHECK(c.error().message == "user is empty");
  o.user = "x";
  o.read_timeout = seconds(0);
  c = Client::connect(o);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().message == "read_timeout 0 s is out of range (1..31536000 s)");
  o.read_timeout = seconds(1);
  o.unix_socket = "relative.sock";
  c = Client::connect(o);
  REQUIRE_FALSE(c.has_value());
  CHECK(c.error().message == "unix_socket \"relative.sock\" is not an absolute path");

  CHECK(classify_error(1045, {}, seconds(1)) == Errc::permission_denied);
  CHECK(classify_error(2013, milliseconds(100), seconds(1)) == Errc::unavailable);
  CHECK(classify_error(2013, milliseconds(990), seconds(1)) == Errc::deadline_exceeded);
  CHECK(classify_error(2003, {}, seconds(1)) == Errc::unavailable);
  CHECK(classify_error(1290, {}, seconds(1)) == Errc::failed_precondition);
  CHECK(classify_error(1064, {}, seconds(1)) == Errc::invalid_argument);
  CHECK(classify_error(1146, {}, seconds(1)) == Errc::not_found);
  CHECK(classify_error(9999, {}, seconds(1)) == Errc::internal);
}
