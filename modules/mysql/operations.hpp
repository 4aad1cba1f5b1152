// Executes one Operation chosen by decide() against the MariaDB instances of a cluster, with
// the blocking client and bounded timeouts. Every operation is idempotent: re-running one that
// finished, or finishing one that crashed halfway, is harmless, because each statement either
// sets an absolute state (read_only, semi-sync, the replication source) or waits for a
// position. Blocks: run it on a worker thread.
#pragma once

#include <cstdint>
#include <string>

#include "agent/util/error.hpp"
#include "modules/mysql/client.hpp"
#include "modules/mysql/cluster_state.hpp"

namespace neco::mysql {

// How the controller reaches the instances and how replicas reach their primary.
struct Access {
  std::string admin_user;  // needs SUPER/ALL (read_only, KILL, replication control)
  std::string admin_password;
  std::string repl_user;  // REPLICATION SLAVE on every instance
  std::string repl_password;
  std::uint32_t heartbeat_period_ms = 1000;  // below the instances' slave_net_timeout
  std::uint32_t connect_retry_s = 1;
  std::uint32_t slave_net_timeout_s = 4;  // what the instances were started with
};

// Options for the controller's admin connection to `instance` (at its admin_host/admin_port
// when set, else host/port), with the spec's timeouts and
// the read timeout raised to at least `read_at_least` (for statements that wait).
ConnectOptions admin_options(const ClusterSpec& spec, const InstanceSpec& instance,
                             const Access& access,
                             std::chrono::seconds read_at_least = std::chrono::seconds(0));

// Runs `operation`. Errors name the instance and the failed step; a wait that timed out is
// deadline_exceeded (the next run waits again).
Expected<void> execute(const ClusterSpec& spec, const Access& access, const Operation& operation);

// Kills every client connection of the instance (not replication threads, not system threads,
// not this connection); returns how many were killed.
Expected<std::size_t> kill_client_connections(Client& client);

}  // namespace neco::mysql
