// Crash recovery of a primary with a transaction no replica acknowledged, against real mariadbd:
// with the option file render_server_config() writes (init_rpl_role = SLAVE) the restarted
// server truncates the unacknowledged binary log tail and rolls the prepared transaction back,
// so it comes back without an errant GTID; the control run overrides the startup role to
// MASTER on the command line and shows the same crash keeps the transaction. That is why every
// managed instance boots with init_rpl_role = SLAVE.
#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "modules/mysql/client.hpp"
#include "modules/mysql/gtid.hpp"
#include "tests/unit/modules/mysql/mariadb_cluster.hpp"

namespace {

using neco::mysql::Client;
using neco::mysql::GtidPosition;
using neco::mysql::read_instance_status;
using neco::mysql::testing::MariadbCluster;
using neco::mysql::testing::poll_until;
using std::chrono::seconds;

struct CrashOutcome {
  GtidPosition before;         // the primary's gtid_binlog_pos with the acknowledged history
  GtidPosition with_unacked;   // ... once the unacknowledged commit is in its binary log
  GtidPosition after_restart;  // ... after kill -9 and restart
  GtidPosition current_after;  // gtid_current_pos after the restart
  bool row_present = false;    // the unacknowledged row after the restart
  bool read_only = false;      // after the restart
  std::string recovery_log;    // the error log's lines about truncating the binary log
};

std::optional<std::string> scalar(Client& c, const std::string& sql) {
  auto rows = c.query(sql);
  if (!rows || rows->rows.empty() || rows->rows[0].empty()) return std::nullopt;
  return rows->rows[0][0];
}

// A primary and one semi-sync replica; one acknowledged row; the replica stops receiving; a
// second row's commit blocks waiting for the ack (in the binary log, not committed); kill -9;
// restart with `extra` options.
CrashOutcome crash_with_unacknowledged_commit(const std::vector<std::string>& extra) {
  auto started = MariadbCluster::start(1);
  if (!started) FAIL("starting MariaDB: " << started.error().message);
  MariadbCluster& cluster = **started;
  CrashOutcome out;
  {
    auto primary = cluster.admin(0);
    REQUIRE(primary.has_value());
    REQUIRE(primary->exec("CREATE DATABASE t").has_value());
    REQUIRE(primary->exec("CREATE TABLE t.r (id INT PRIMARY KEY) ENGINE=InnoDB").has_value());
    REQUIRE(primary->exec("INSERT INTO t.r VALUES (1)").has_value());
    auto acked = read_instance_status(*primary);
    REQUIRE(acked.has_value());
    out.before = acked->gtid_binlog_pos;
    REQUIRE(cluster.wait_applied(1, out.before));

    auto replica = cluster.admin(1);
    REQUIRE(replica.has_value());
    REQUIRE(replica->exec("STOP SLAVE IO_THREAD").has_value());
    // The primary sees its only semi-sync client gone before the next commit waits on it.
    REQUIRE(poll_until(
        [&] {
          auto st = read_instance_status(*primary);
          return st && st->semi_sync_master_clients == 0;
        },
        seconds(10)));

    // The commit waits for an ack that never comes; its connection dies with the server.
    std::atomic<bool> returned{false};
    std::thread writer([&cluster, &returned] {
      auto o = cluster.options(0);
      o.read_timeout = seconds(30);
      auto c = Client::connect(o);
      if (c) (void)c->exec("INSERT INTO t.r VALUES (2)");
      returned.store(true);
    });
    const bool in_binlog = poll_until(
        [&] {
          auto st = read_instance_status(*primary);
          if (!st || !neco::mysql::ahead_of(st->gtid_binlog_pos, out.before)) return false;
          out.with_unacked = st->gtid_binlog_pos;
          return true;
        },
        seconds(10));
    const bool waited = !returned.load();
    cluster.kill(0);
    writer.join();
    REQUIRE(in_binlog);
    REQUIRE(waited);  // the commit was never acknowledged to its client
  }
  auto restarted = cluster.restart(0, extra);
  if (!restarted) FAIL("restarting the primary: " << restarted.error().message);
  auto primary = cluster.admin(0);
  REQUIRE(primary.has_value());
  auto st = read_instance_status(*primary);
  REQUIRE(st.has_value());
  out.after_restart = st->gtid_binlog_pos;
  out.current_after = st->gtid_current_pos;
  out.read_only = st->read_only;
  out.row_present = scalar(*primary, "SELECT COUNT(*) FROM t.r WHERE id = 2") == "1";
  {
    std::ifstream in(cluster.at(0).dir / "error.log");
    for (std::string line; std::getline(in, line);) {
      if (line.find("truncat") != std::string::npos || line.find("Truncat") != std::string::npos) {
        out.recovery_log += line + "\n";
      }
    }
  }
  REQUIRE(scalar(*primary, "SELECT COUNT(*) FROM t.r WHERE id = 1") == "1");
  return out;
}

}  // namespace

TEST_CASE("a crashed primary rolls back its unacknowledged tail at restart", "[mysql][recovery]") {
  neco::mysql::testing::skip_unless_installed();
  const CrashOutcome o = crash_with_unacknowledged_commit({});
  CHECK_THAT(o.recovery_log, Catch::Contains("Successfully truncated binlog file"));
  CHECK(o.read_only);
  CHECK(o.after_restart == o.before);
  CHECK(o.current_after == o.before);
  CHECK_FALSE(neco::mysql::contains(o.after_restart, o.with_unacked));
  CHECK_FALSE(o.row_present);
  WARN("init_rpl_role=SLAVE: binlog before crash "
       << to_string(o.with_unacked) << ", after restart " << to_string(o.after_restart) << "\n"
       << o.recovery_log);
}

TEST_CASE("control: started as MASTER the same crash keeps the unacknowledged transaction",
          "[mysql][recovery]") {
  neco::mysql::testing::skip_unless_installed();
  const CrashOutcome o = crash_with_unacknowledged_commit({"--init-rpl-role=MASTER"});
  CHECK(o.recovery_log.empty());
  CHECK(o.after_restart == o.with_unacked);
  CHECK(o.row_present);
  WARN("init_rpl_role=MASTER: binlog before crash "
       << to_string(o.with_unacked) << ", after restart " << to_string(o.after_restart));
}
