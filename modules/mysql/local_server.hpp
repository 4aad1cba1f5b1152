// The node side of the mysql module: the agent beside a local mariadbd. It writes the option
// file render_server_config() produces (atomically, only when the text changed), optionally
// initializes an empty data directory and starts mariadbd itself, and checks the server's
// health every few seconds.
//
// A mariadbd the agent starts runs detached in a session of its own (double fork + setsid), so
// restarting or upgrading the agent never restarts the database: on stop the agent leaves it
// running and on start it adopts it again through its pid file (the process must be a mariadbd
// whose command line names this data directory). A mariadbd that died is started again with a
// backoff (1 s doubling to 30 s). That restart is safe for a crashed primary because every
// managed instance boots fenced: read_only, replication stopped, and init_rpl_role = SLAVE
// rolls back a binary log tail no replica acknowledged; only the leader makes it writable again.
//
// All blocking work (files, child processes, the MariaDB client) runs on the manager's own
// thread; status(), health and metrics read a snapshot under a mutex.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>

#include "agent/config/schema.hpp"
#include "agent/util/error.hpp"
#include "modules/mysql/client.hpp"
#include "modules/mysql/server_config.hpp"

namespace neco::mysql {

// modules.mysql.local of the role file. Optional: without it the agent manages no local server.
// Fields are checked by local_spec() (not by the schema) because the whole section is optional.
struct LocalSection {
  bool present = false;  // set by parse_config() when the key is in the role file
  std::int64_t server_id = 0;
  std::int64_t port = 3306;
  std::string bind_address = "127.0.0.1";
  std::string datadir;
  std::string socket;
  std::int64_t gtid_domain_id = 0;
  config::Duration slave_net_timeout = std::chrono::seconds(4);
  std::string option_file;
  bool start = false;
  std::string mariadbd;  // empty: found in PATH or /usr/sbin
  bool initialize = false;
  std::string install_db;  // empty: mariadb-install-db found in PATH or /usr/bin, /usr/sbin
  std::string os_user = "mysql";
  std::string pid_file;  // empty: <datadir>/mariadbd.pid
  std::string log_file;  // empty: mariadbd.log beside the data directory
  std::string admin_user;
  std::string admin_password_file;
  config::Duration health_interval = std::chrono::seconds(2);
  config::Duration connect_timeout = std::chrono::seconds(1);
  config::Duration read_timeout = std::chrono::seconds(2);
};

const config::Schema<LocalSection>& local_schema();

// A validated local section: what LocalServer runs.
struct LocalSpec {
  ServerConfig server;
  std::filesystem::path option_file;
  bool start = false;
  bool initialize = false;
  std::string mariadbd;    // absolute, executable (when start)
  std::string install_db;  // absolute, executable (when start and initialize)
  std::string os_user;
  std::filesystem::path pid_file;
  std::filesystem::path log_file;
  std::string admin_user;  // empty: root over the unix socket
  std::string admin_password_file;
  std::chrono::milliseconds health_interval{2000};
  std::chrono::seconds connect_timeout{1};
  std::chrono::seconds read_timeout{2};
};

// Checks the section and resolves defaults (binaries, pid and log files); errors name the field
// under `path` ("modules.mysql.local.datadir: ..."). Starts nothing.
Expected<LocalSpec> local_spec(const LocalSection& section, const std::string& path);

// The first executable named `name` in $PATH, then in `extra_dirs`; empty when none.
std::string find_executable(const std::string& name, std::initializer_list<const char*> extra_dirs);

// What the manager last saw.
struct LocalStatus {
  bool managed_process = false;  // start: true
  std::optional<pid_t> pid;      // the mariadbd the agent started or adopted, while alive
  bool adopted = false;          // the agent found it running instead of starting it
  bool up = false;               // the last health check connected and read the status
  bool read_only = false;
  std::uint32_t server_id = 0;
  std::string gtid_current_pos;
  std::string gtid_binlog_pos;
  bool replication_configured = false;  // a default replication connection exists
  std::string io_running;               // "Yes", "No", "Connecting" or "" (none)
  bool sql_running = false;
  std::string replication_error;   // Last_IO_Error / Last_SQL_Error
  std::uint64_t restarts = 0;      // mariadbd started again after it died (this agent process)
  std::string problem;             // empty when healthy: why not
  std::int64_t checked_at_ms = 0;  // wall clock of the last health check (0: none yet)
};

class LocalServer {
 public:
  explicit LocalServer(LocalSpec spec);
  ~LocalServer();  // stop()
  LocalServer(const LocalServer&) = delete;
  LocalServer& operator=(const LocalServer&) = delete;

  // Reads the admin password file, then starts the manager thread. Does not block on mariadbd.
  Expected<void> start();
  // Stops the manager thread (bounded by one health check); mariadbd keeps running.
  void stop();

  LocalStatus status() const;
  nlohmann::json status_json() const;
  const LocalSpec& spec() const { return spec_; }

 private:
  void run();
  // One supervision step: option file, process (start / adopt / restart), health.
  void step();
  Expected<void> write_option_file();
  // The pid of a mariadbd running on this data directory (from the pid file), if any.
  std::optional<pid_t> find_running() const;
  Expected<void> initialize_datadir();
  Expected<pid_t> spawn_detached();
  void check_health();
  // Sleeps up to `d`; false when stopping.
  bool wait(std::chrono::milliseconds d);

  LocalSpec spec_;
  std::string password_;
  std::thread thread_;
  std::mutex wake_mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;

  // Manager-thread state.
  std::optional<pid_t> pid_;
  bool seen_running_ = false;  // a death after this is a restart
  std::chrono::milliseconds backoff_{1000};
  std::chrono::steady_clock::time_point next_spawn_{};
  std::chrono::steady_clock::time_point spawned_at_{};
  std::optional<std::string> written_;  // the option file text last written or found

  mutable std::mutex mutex_;
  LocalStatus status_;
};

}  // namespace neco::mysql
