// The mariadbd option file of a managed instance, and the CHANGE MASTER statement that points a
// replica at its primary. Pure: the settings that make failover lossless live here in one place
// (GTID strict mode, binary log on every member, durable commits, semi-sync AFTER_SYNC that
// never falls back to async, read-only boot with replication stopped, short network timeouts so
// a dead primary is noticed within seconds). Validation names the offending field.
// Every instance boots as a fenced replica-to-be: the semi-sync master side is configured
// (wait point, endless timeout) but off, because on a replica with a binary log MariaDB holds
// each applied transaction until an ack that never comes ("Waiting for semi-sync ACK from
// slave"); promotion sets rpl_semi_sync_master_enabled=ON before replicas connect.
// init_rpl_role=SLAVE (MariaDB 10.6.19 / 10.11.9 and later, MDEV-33465; read at startup only)
// turns on semi-sync crash recovery: a crashed primary's binary log tail that no replica
// acknowledged is truncated and its prepared transactions rolled back, instead of being committed
// into an errant transaction. It only acts on a crash recovery; a clean restart keeps everything,
// and a promoted instance is a primary whatever this startup role said.
#pragma once

#include <cstdint>
#include <string>

#include "agent/util/error.hpp"

namespace neco::mysql {

// What differs between managed instances; everything else is fixed by render_server_config().
struct ServerConfig {
  std::uint32_t server_id = 0;  // 1..4294967295, unique in the cluster
  std::uint16_t port = 3306;    // 1..65535
  std::string bind_address = "127.0.0.1";
  std::string socket;                     // absolute path of the unix socket
  std::string datadir;                    // absolute path of the data directory
  std::uint32_t gtid_domain_id = 0;       // the domain this instance writes in when primary
  std::uint32_t slave_net_timeout_s = 4;  // a replica declares its primary dead after this
};

// Checks every field; the error (invalid_argument) names the field and its value.
Expected<void> validate(const ServerConfig& config);

// The option file text ([mariadbd] section), after validate().
Expected<std::string> render_server_config(const ServerConfig& config);

// Where a replica reads from.
struct ReplicationSource {
  std::string host;
  std::uint16_t port = 3306;
  std::string user;
  std::string password;
  // Heartbeats from the primary, strictly below the replica's slave_net_timeout so an idle
  // primary is never mistaken for a dead one. Milliseconds, 1..4294967000.
  std::uint32_t heartbeat_period_ms = 1000;
  std::uint32_t connect_retry_s = 1;  // between reconnect attempts, 1..31536000
};

// Checks every field against the replica's slave_net_timeout (heartbeat below it).
Expected<void> validate(const ReplicationSource& source, std::uint32_t slave_net_timeout_s);

// "CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos" with every string quoted for SQL. Holds the
// password: never log it.
Expected<std::string> render_change_master(const ReplicationSource& source,
                                           std::uint32_t slave_net_timeout_s);

// A single-quoted SQL string literal (backslash and quote escaped, NUL as \0).
std::string sql_quote(std::string_view text);

}  // namespace neco::mysql
