// A small blocking client for MariaDB over Connector/C (libmariadb), and the status of one
// instance as failover needs it. Every call is bounded by the connect/read/write timeouts, so a
// stopped or partitioned server costs at most that long. Errors are values whose code says what
// a caller can do (permission_denied, unavailable, deadline_exceeded, ...) and whose message
// carries the server's error number and text; credentials are never put into a message.
//
// Threads: one Client per thread at a time (a connection is not thread-safe); different Clients
// may be used concurrently from different threads. The library is initialised once, on first
// connect. Calls block: run them on a worker thread, never on the event loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/util/error.hpp"
#include "modules/mysql/gtid.hpp"

struct st_mysql;  // Connector/C's MYSQL, kept out of this header

namespace neco::mysql {

// Where and how to connect. The password is only handed to the library.
struct ConnectOptions {
  std::string host = "127.0.0.1";  // TCP host (ignored when unix_socket is set)
  std::uint16_t port = 3306;
  std::string unix_socket;  // absolute path: connect over this socket instead of TCP
  std::string user;
  std::string password;
  std::chrono::seconds connect_timeout{2};  // TCP connect and handshake, at least 1 s
  std::chrono::seconds read_timeout{5};     // waiting for each reply, at least 1 s
  std::chrono::seconds write_timeout{5};    // sending each request, at least 1 s
};

// A result set: column names and rows of nullable text values.
struct Rows {
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;

  // The index of a column by name (exact match), or nullopt.
  std::optional<std::size_t> column(std::string_view name) const;
};

// One connection. Movable, not copyable; the destructor closes it.
class Client {
 public:
  // Connects and authenticates. unavailable: nothing listens / connection lost / unknown host;
  // permission_denied: wrong credentials; deadline_exceeded: no handshake within the timeout;
  // invalid_argument: bad options.
  static Expected<Client> connect(const ConnectOptions& options);

  Client(Client&& other) noexcept;
  Client& operator=(Client&& other) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // Runs one statement and returns its result set (empty Rows for a statement without one).
  Expected<Rows> query(std::string_view sql);
  // Runs one statement, discarding any result set.
  Expected<void> exec(std::string_view sql);

  // "host:port" or the socket path, for messages.
  const std::string& endpoint() const { return endpoint_; }
  // The MariaDB error number of the last failed call (0 after a success).
  unsigned last_errno() const { return last_errno_; }

 private:
  Client(st_mysql* mysql, std::string endpoint, std::chrono::seconds read_timeout);
  // The error of the last failed call on mysql_, classified, with its number remembered.
  Error last_error(std::string_view what, std::chrono::steady_clock::duration elapsed);

  st_mysql* mysql_ = nullptr;  // Connector/C's MYSQL
  std::string endpoint_;
  std::chrono::seconds read_timeout_{5};
  unsigned last_errno_ = 0;
};

// The error code for a MariaDB error number (client CR_* and server ER_* numbers) of a call
// that took `elapsed` under a `timeout`: a lost connection that took the whole timeout is a
// deadline, access errors are permission_denied, connection errors unavailable.
Errc classify_error(unsigned mysql_errno, std::chrono::steady_clock::duration elapsed,
                    std::chrono::steady_clock::duration timeout);

// One replication connection of a replica (a row of SHOW ALL SLAVES STATUS).
struct ReplicaStatus {
  std::string connection_name;  // "" for the default connection
  std::string master_host;
  std::uint16_t master_port = 0;
  std::string io_running;    // Slave_IO_Running: "Yes", "No" or "Connecting"
  bool sql_running = false;  // Slave_SQL_Running
  GtidPosition gtid_io_pos;  // Gtid_IO_Pos: received from the primary
  std::optional<std::uint64_t> seconds_behind_master;  // NULL when not replicating
  std::string last_io_error;
  std::string last_sql_error;
  std::string using_gtid;  // "No", "Current_Pos" or "Slave_Pos"
  // Slave_received_heartbeats: with gtid_io_pos, what shows the primary still sends something
  // (a hung primary keeps the IO thread "Yes" until slave_net_timeout and a reconnect pass).
  std::uint64_t received_heartbeats = 0;
};

// What the leader reads of an instance.
struct InstanceStatus {
  std::uint32_t server_id = 0;
  bool read_only = false;
  GtidPosition gtid_current_pos;
  GtidPosition gtid_binlog_pos;
  GtidPosition gtid_slave_pos;
  std::vector<ReplicaStatus> replication;      // empty when it replicates from nobody
  bool semi_sync_master_on = false;            // Rpl_semi_sync_master_status
  std::uint64_t semi_sync_master_clients = 0;  // Rpl_semi_sync_master_clients
  bool semi_sync_slave_on = false;             // Rpl_semi_sync_slave_status
};

// Reads the instance's status with three queries. Fails like Client::query, or with internal
// when the server answers something unparseable (message names the field and value).
Expected<InstanceStatus> read_instance_status(Client& client);

// The password held in `file` (trailing newlines dropped). invalid_argument naming `field` when
// no file is given, it cannot be read or it is empty. Never log the result.
Expected<std::string> read_password_file(const std::string& file, const std::string& field);

}  // namespace neco::mysql
