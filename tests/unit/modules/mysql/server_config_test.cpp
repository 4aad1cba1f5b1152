// Unit tests of the managed instance's option file (exact text) and the CHANGE MASTER
// statement, and every validation error with the field it names.
#include <catch2/catch.hpp>

#include "modules/mysql/server_config.hpp"

using neco::Errc;
using neco::mysql::ReplicationSource;
using neco::mysql::ServerConfig;

namespace {

ServerConfig example() {
  ServerConfig c;
  c.server_id = 42;
  c.port = 3307;
  c.bind_address = "10.0.0.5";
  c.socket = "/run/neco-mysql/mariadbd.sock";
  c.datadir = "/var/lib/neco-mysql";
  c.gtid_domain_id = 3;
  c.slave_net_timeout_s = 4;
  return c;
}

std::string config_error(const ServerConfig& c) {
  auto r = neco::mysql::render_server_config(c);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::invalid_argument);
  return r.error().message;
}

ReplicationSource source() {
  ReplicationSource s;
  s.host = "10.0.0.1";
  s.port = 3306;
  s.user = "repl";
  s.password = "s3cret";
  s.heartbeat_period_ms = 1500;
  s.connect_retry_s = 2;
  return s;
}

std::string source_error(const ReplicationSource& s, std::uint32_t timeout = 4) {
  auto r = neco::mysql::render_change_master(s, timeout);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == Errc::invalid_argument);
  return r.error().message;
}

}  // namespace

TEST_CASE("the option file of a managed instance", "[server_config]") {
  auto text = neco::mysql::render_server_config(example());
  REQUIRE(text.has_value());
  CHECK(*text ==
        "# mariadbd options of a neco-managed instance (server_id 42).\n"
        "# Written by neco: edits here are overwritten.\n"
        "[mariadbd]\n"
        "server_id = 42\n"
        "port = 3307\n"
        "bind_address = 10.0.0.5\n"
        "socket = /run/neco-mysql/mariadbd.sock\n"
        "datadir = /var/lib/neco-mysql\n"
        "\n"
        "# Replication identity: GTIDs in strict mode; every member keeps a binary log with what\n"
        "# it replicated, so any replica can be promoted and serve the others.\n"
        "gtid_domain_id = 3\n"
        "gtid_strict_mode = ON\n"
        "log_bin = mysql-bin\n"
        "log_bin_index = mysql-bin.index\n"
        "relay_log = relay-bin\n"
        "relay_log_index = relay-bin.index\n"
        "log_slave_updates = ON\n"
        "binlog_format = ROW\n"
        "\n"
        "# Durable commits: binary log and InnoDB log flushed at every commit.\n"
        "sync_binlog = 1\n"
        "innodb_flush_log_at_trx_commit = 1\n"
        "\n"
        "# Boot fenced: writes refused and replication stopped until neco assigns the role; a\n"
        "# relay log that may be torn by a crash is discarded and fetched again.\n"
        "read_only = ON\n"
        "skip_slave_start = ON\n"
        "relay_log_recovery = ON\n"
        "# Crash recovery as a replica: a binary log tail no replica acknowledged (AFTER_SYNC:\n"
        "# written and synced, prepared but not committed in InnoDB) is truncated and rolled "
        "back\n"
        "# at startup instead of committed, so a crashed primary rejoins without errant GTIDs.\n"
        "init_rpl_role = SLAVE\n"
        "\n"
        "# Semi-synchronous replication, AFTER_SYNC: a commit is acknowledged to its client only\n"
        "# once a replica has it. The timeout never expires, so the primary never falls back to\n"
        "# asynchronous replication (writes wait instead), also when no replica is connected.\n"
        "# The master side stays off at boot: on a replica it would hold every applied "
        "transaction\n"
        "# waiting for an ack nobody sends. neco turns it on when it makes an instance primary.\n"
        "rpl_semi_sync_master_enabled = OFF\n"
        "rpl_semi_sync_slave_enabled = ON\n"
        "rpl_semi_sync_master_wait_point = AFTER_SYNC\n"
        "rpl_semi_sync_master_timeout = 18446744073709551615\n"
        "rpl_semi_sync_master_wait_no_slave = ON\n"
        "\n"
        "# Failure detection: a replica gives up on a silent primary after this many seconds\n"
        "# (CHANGE MASTER sets the heartbeat below it).\n"
        "slave_net_timeout = 4\n");

  ServerConfig max = example();
  max.server_id = 4294967295U;
  max.port = 65535;
  max.gtid_domain_id = 4294967295U;
  auto max_text = neco::mysql::render_server_config(max);
  REQUIRE(max_text.has_value());
  CHECK_THAT(*max_text, Catch::Contains("server_id = 4294967295\n") &&
                            Catch::Contains("port = 65535\n") &&
                            Catch::Contains("gtid_domain_id = 4294967295\n"));
}

TEST_CASE("option file validation names the field", "[server_config]") {
  ServerConfig c = example();
  c.server_id = 0;
  CHECK_THAT(config_error(c), Catch::StartsWith("server_id 0 is not allowed"));
  c = example();
  c.port = 0;
  CHECK_THAT(config_error(c), Catch::StartsWith("port 0"));
  c = example();
  c.socket = "run/x.sock";
  CHECK(config_error(c) == "socket \"run/x.sock\" is not an absolute path");
  c = example();
  c.socket = "/" + std::string(107, 's');
  CHECK_THAT(config_error(c), Catch::Contains("is 108 bytes long (at most 107)"));
  c = example();
  c.datadir = "";
  CHECK(config_error(c) == "datadir is empty");
  c = example();
  c.datadir = "var/lib/mysql";
  CHECK(config_error(c) == "datadir \"var/lib/mysql\" is not an absolute path");
  c = example();
  c.datadir = "/var/lib/my sql";
  CHECK_THAT(config_error(c), Catch::StartsWith("datadir \"/var/lib/my sql\": character 0x20"));
  c = example();
  c.datadir = "/var/lib/x\nread_only=OFF";
  CHECK_THAT(config_error(c), Catch::Contains("character 0x0a is not allowed"));
  c = example();
  c.bind_address = "1.2.3.4 # x";
  CHECK_THAT(config_error(c), Catch::StartsWith("bind_address"));
  c = example();
  c.slave_net_timeout_s = 1;
  CHECK_THAT(config_error(c), Catch::StartsWith("slave_net_timeout_s 1 is out of range"));

  CHECK(neco::mysql::validate(example()).has_value());
}

TEST_CASE("CHANGE MASTER statement", "[server_config]") {
  auto sql = neco::mysql::render_change_master(source(), 4);
  REQUIRE(sql.has_value());
  CHECK(*sql ==
        "CHANGE MASTER TO MASTER_HOST='10.0.0.1', MASTER_PORT=3306, MASTER_USER='repl', "
        "MASTER_PASSWORD='s3cret', MASTER_CONNECT_RETRY=2, MASTER_HEARTBEAT_PERIOD=1.500, "
        "MASTER_USE_GTID=slave_pos");

  ReplicationSource quoted = source();
  quoted.password = "it's\\a\ntest";
  quoted.heartbeat_period_ms = 3999;
  auto q = neco::mysql::render_change_master(quoted, 4);
  REQUIRE(q.has_value());
  CHECK_THAT(*q, Catch::Contains("MASTER_PASSWORD='it\\'s\\\\a\\ntest'") &&
                     Catch::Contains("MASTER_HEARTBEAT_PERIOD=3.999,"));
  CHECK(neco::mysql::sql_quote(std::string_view("a\0b\x1a", 4)) == "'a\\0b\\Z'");
}

TEST_CASE("CHANGE MASTER validation names the field and never the password", "[server_config]") {
  ReplicationSource s = source();
  s.host = "";
  CHECK(source_error(s) == "source host is empty");
  s = source();
  s.port = 0;
  CHECK_THAT(source_error(s), Catch::StartsWith("source port 0"));
  s = source();
  s.user = "";
  CHECK(source_error(s) == "source user is empty");
  s = source();
  s.password = std::string(97, 'p');
  const std::string long_password = source_error(s);
  CHECK(long_password == "source password is 97 bytes long (at most 96)");
  s = source();
  s.heartbeat_period_ms = 4000;  // not below slave_net_timeout 4 s
  CHECK_THAT(source_error(s), Catch::Contains("heartbeat_period_ms 4000 must be at least 1 and "
                                              "below slave_net_timeout (4000 ms)"));
  s.heartbeat_period_ms = 0;
  CHECK_THAT(source_error(s), Catch::Contains("heartbeat_period_ms 0"));
  s = source();
  s.connect_retry_s = 0;
  CHECK_THAT(source_error(s), Catch::StartsWith("source connect_retry_s 0"));
  // A longer slave_net_timeout allows a longer heartbeat.
  s = source();
  s.heartbeat_period_ms = 4000;
  CHECK(neco::mysql::render_change_master(s, 5).has_value());
}
