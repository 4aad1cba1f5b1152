// Real mariadbd instances for C++ tests: a primary and replicas on 127.0.0.1 free ports in a
// temp dir, each started with the option file render_server_config() writes, with users for
// the tests and GTID replication (semi-sync, as in production). mariadb-install-db runs once
// per process; each instance of every cluster starts from a copy of that data directory
// (MariaDB has no per-server UUID in it), so an extra instance or cluster costs its startup
// only. The destructor stops every server (SIGTERM, then SIGKILL after a bound) and removes the
// directory; servers also die with the test process (PR_SET_PDEATHSIG). Meson passes the binaries
// in MARIADBD and MARIADB_INSTALL_DB; without them skip_unless_installed() exits 77 (SKIP).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "agent/util/error.hpp"
#include "modules/mysql/client.hpp"
#include "modules/mysql/gtid.hpp"

namespace neco::mysql::testing {

// Accounts every instance has (created without binary logging, so they are no transactions).
inline constexpr const char* kAdminUser = "neco";  // ALL PRIVILEGES (bypasses read_only)
inline constexpr const char* kAdminPassword = "admin-pw";
inline constexpr const char* kReplUser = "repl";  // REPLICATION SLAVE
inline constexpr const char* kReplPassword = "repl-pw";
inline constexpr const char* kAppUser = "app";  // DML on `t` only (read_only applies)
inline constexpr const char* kAppPassword = "app-pw";

// Exits 77 with a message unless MARIADBD and MARIADB_INSTALL_DB name executables.
void skip_unless_installed();

class MariadbCluster {
 public:
  struct Instance {
    std::string name;  // "primary", "r1", "r2", ...
    std::uint32_t server_id = 0;
    std::uint16_t port = 0;
    std::filesystem::path dir;  // holds data/, my.cnf, mariadbd.sock, error.log
    std::filesystem::path socket;
    pid_t pid = -1;
    std::chrono::steady_clock::time_point spawned_at;
    std::chrono::milliseconds startup{0};  // spawn until the first successful connect
  };

  // Starts instance 0 as primary (read_only off) and 1..replicas as its replicas, connected
  // with GTID replication and acknowledged by the primary's semi-sync. Bounded in time.
  static Expected<std::unique_ptr<MariadbCluster>> start(std::size_t replicas);
  ~MariadbCluster();
  MariadbCluster(const MariadbCluster&) = delete;
  MariadbCluster& operator=(const MariadbCluster&) = delete;

  const std::vector<Instance>& instances() const { return instances_; }
  const Instance& at(std::size_t i) const { return instances_.at(i); }
  std::chrono::milliseconds install_db_time() const { return install_db_time_; }

  // TCP options for instance i as `user` (short timeouts: 1 s connect, 2 s read/write).
  ConnectOptions options(std::size_t i, const char* user = kAdminUser,
                         const char* password = kAdminPassword) const;
  Expected<Client> admin(std::size_t i) const { return Client::connect(options(i)); }

  // Polls instance i's gtid_current_pos until it contains `target` (bounded); false on timeout.
  bool wait_applied(std::size_t i, const GtidPosition& target,
                    std::chrono::milliseconds timeout = std::chrono::seconds(20)) const;

  // SIGSTOP instance i and wait until all its threads are stopped (false if not within 2 s);
  // SIGCONT it.
  bool pause(std::size_t i) const;
  void resume(std::size_t i) const;
  // SIGKILL instance i (a crash: no shutdown, nothing flushed beyond what was synced); it stays
  // down.
  void kill(std::size_t i);
  // Starts instance i again (after kill()) from its data directory and my.cnf, with `extra`
  // command-line options after the option file's (they override it); waits until it accepts
  // connections (bounded). Replication stays stopped (skip_slave_start) and read_only is on.
  Expected<void> restart(std::size_t i, const std::vector<std::string>& extra = {});

 private:
  MariadbCluster() = default;
  Expected<void> spawn(Instance& instance, const std::string& mariadbd,
                       const std::vector<std::string>& extra = {});
  // Waits until root connects over the socket; then creates the test accounts if asked.
  Expected<void> wait_connectable(Instance& instance, bool create_accounts = true);

  std::filesystem::path root_;
  std::vector<Instance> instances_;
  std::chrono::milliseconds install_db_time_{0};
};

// Polls `condition` every 20 ms (each poll is a few round trips) until it holds or `timeout`
// passes; true when it held.
bool poll_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// The cluster shared by every test case of the process (primary + 3 replicas), started on first
// use; a failure to start fails the calling test with the reason.
MariadbCluster& shared_cluster();

}  // namespace neco::mysql::testing
