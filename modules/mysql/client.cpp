// The blocking MariaDB client over Connector/C and the instance status reader (see client.hpp).
#include "modules/mysql/client.hpp"

#include <errmsg.h>
#include <fmt/format.h>
#include <mysql.h>
#include <mysqld_error.h>

#include <charconv>
#include <fstream>
#include <mutex>
#include <sstream>
#include <utility>

namespace neco::mysql {

namespace {

// mysql_library_init is not thread-safe and must run once before any connection.
bool library_ready() {
  static std::once_flag once;
  static bool ok = false;
  std::call_once(once, [] { ok = mysql_library_init(0, nullptr, nullptr) == 0; });
  return ok;
}

Expected<void> check_timeout(std::string_view field, std::chrono::seconds value) {
  if (value.count() < 1 || value.count() > 31536000) {
    return fail(Errc::invalid_argument,
                fmt::format("{} {} s is out of range (1..31536000 s)", field, value.count()));
  }
  return {};
}

Expected<void> check(const ConnectOptions& o) {
  if (o.unix_socket.empty()) {
    if (o.host.empty()) return fail(Errc::invalid_argument, "host is empty (and no unix_socket)");
    if (o.port == 0) return fail(Errc::invalid_argument, "port 0 is not allowed (1..65535)");
  } else if (o.unix_socket.front() != '/') {
    return fail(Errc::invalid_argument,
                fmt::format("unix_socket \"{}\" is not an absolute path", o.unix_socket));
  }
  if (o.user.empty()) return fail(Errc::invalid_argument, "user is empty");
  if (auto ok = check_timeout("connect_timeout", o.connect_timeout); !ok) return ok;
  if (auto ok = check_timeout("read_timeout", o.read_timeout); !ok) return ok;
  return check_timeout("write_timeout", o.write_timeout);
}

// A timed-out socket read surfaces as a lost connection; it is a deadline when the call took
// (nearly) the whole timeout. The slack covers timer granularity of the library's poll().
bool took_whole_timeout(std::chrono::steady_clock::duration elapsed,
                        std::chrono::steady_clock::duration timeout) {
  return elapsed * 10 >= timeout * 9;
}

}  // namespace

Errc classify_error(unsigned mysql_errno, std::chrono::steady_clock::duration elapsed,
                    std::chrono::steady_clock::duration timeout) {
  switch (mysql_errno) {
    case ER_ACCESS_DENIED_ERROR:
    case ER_DBACCESS_DENIED_ERROR:
    case ER_TABLEACCESS_DENIED_ERROR:
    case ER_COLUMNACCESS_DENIED_ERROR:
    case ER_SPECIFIC_ACCESS_DENIED_ERROR:
    case ER_PROCACCESS_DENIED_ERROR:
    case ER_ACCESS_DENIED_NO_PASSWORD_ERROR:
      return Errc::permission_denied;
    case CR_SOCKET_CREATE_ERROR:
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case CR_IPSOCK_ERROR:
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_HANDSHAKE_ERR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
      return took_whole_timeout(elapsed, timeout) ? Errc::deadline_exceeded : Errc::unavailable;
    case CR_UNKNOWN_HOST:
    case ER_CON_COUNT_ERROR:
    case ER_SERVER_SHUTDOWN:
    case ER_CONNECTION_KILLED:
      return Errc::unavailable;
    case ER_LOCK_WAIT_TIMEOUT:
    case ER_STATEMENT_TIMEOUT:
      return Errc::deadline_exceeded;
    case ER_OPTION_PREVENTS_STATEMENT:  // read_only, among others
      return Errc::failed_precondition;
    case ER_PARSE_ERROR:
    case ER_SYNTAX_ERROR:
    case ER_UNKNOWN_SYSTEM_VARIABLE:
      return Errc::invalid_argument;
    case ER_NO_SUCH_TABLE:
    case ER_BAD_DB_ERROR:
      return Errc::not_found;
    default:
      return Errc::internal;
  }
}

std::optional<std::size_t> Rows::column(std::string_view name) const {
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (columns[i] == name) return i;
  }
  return std::nullopt;
}

Expected<Client> Client::connect(const ConnectOptions& options) {
  if (auto ok = check(options); !ok) return std::unexpected(ok.error());
  std::string endpoint = options.unix_socket.empty()
                             ? fmt::format("{}:{}", options.host, options.port)
                             : options.unix_socket;
  if (!library_ready()) {
    return fail(Errc::internal, "MariaDB client library failed to initialise");
  }
  MYSQL* mysql = mysql_init(nullptr);
  if (mysql == nullptr) {
    return fail(Errc::internal, fmt::format("MariaDB {}: out of memory", endpoint));
  }
  const auto connect_s = static_cast<unsigned>(options.connect_timeout.count());
  const auto read_s = static_cast<unsigned>(options.read_timeout.count());
  const auto write_s = static_cast<unsigned>(options.write_timeout.count());
  const unsigned protocol =
      options.unix_socket.empty() ? MYSQL_PROTOCOL_TCP : MYSQL_PROTOCOL_SOCKET;
  const my_bool no_reconnect = 0;
  if (mysql_optionsv(mysql, MYSQL_OPT_CONNECT_TIMEOUT, &connect_s) != 0 ||
      mysql_optionsv(mysql, MYSQL_OPT_READ_TIMEOUT, &read_s) != 0 ||
      mysql_optionsv(mysql, MYSQL_OPT_WRITE_TIMEOUT, &write_s) != 0 ||
      mysql_optionsv(mysql, MYSQL_OPT_PROTOCOL, &protocol) != 0 ||
      mysql_optionsv(mysql, MYSQL_OPT_RECONNECT, &no_reconnect) != 0 ||
      mysql_optionsv(mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4") != 0) {
    mysql_close(mysql);
    return fail(Errc::internal, fmt::format("MariaDB {}: setting client options failed", endpoint));
  }
  Client client(mysql, std::move(endpoint), options.read_timeout);
  const auto start = std::chrono::steady_clock::now();
  const bool tcp = options.unix_socket.empty();
  if (mysql_real_connect(mysql, tcp ? options.host.c_str() : nullptr, options.user.c_str(),
                         options.password.c_str(), nullptr, tcp ? options.port : 0,
                         tcp ? nullptr : options.unix_socket.c_str(), 0) == nullptr) {
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const unsigned number = mysql_errno(mysql);
    return fail(classify_error(number, elapsed, options.connect_timeout),
                fmt::format("MariaDB {}: connect as \"{}\" failed: error {}: {}", client.endpoint_,
                            options.user, number, mysql_error(mysql)));
  }
  return client;
}

Client::Client(st_mysql* mysql, std::string endpoint, std::chrono::seconds read_timeout)
    : mysql_(mysql), endpoint_(std::move(endpoint)), read_timeout_(read_timeout) {}

Client::Client(Client&& other) noexcept
    : mysql_(std::exchange(other.mysql_, nullptr)),
      endpoint_(std::move(other.endpoint_)),
      read_timeout_(other.read_timeout_),
      last_errno_(other.last_errno_) {}

Client& Client::operator=(Client&& other) noexcept {
  if (this != &other) {
    if (mysql_ != nullptr) mysql_close(mysql_);
    mysql_ = std::exchange(other.mysql_, nullptr);
    endpoint_ = std::move(other.endpoint_);
    read_timeout_ = other.read_timeout_;
    last_errno_ = other.last_errno_;
  }
  return *this;
}

Client::~Client() {
  if (mysql_ != nullptr) mysql_close(mysql_);
}

Error Client::last_error(std::string_view what, std::chrono::steady_clock::duration elapsed) {
  last_errno_ = mysql_errno(mysql_);
  return Error{classify_error(last_errno_, elapsed, read_timeout_),
               fmt::format("MariaDB {}: {} failed: error {} ({}): {}", endpoint_, what, last_errno_,
                           mysql_sqlstate(mysql_), mysql_error(mysql_))};
}

Expected<Rows> Client::query(std::string_view sql) {
  if (mysql_ == nullptr) return fail(Errc::failed_precondition, "MariaDB client moved from");
  const auto start = std::chrono::steady_clock::now();
  if (mysql_real_query(mysql_, sql.data(), sql.size()) != 0) {
    return std::unexpected(last_error("query", std::chrono::steady_clock::now() - start));
  }
  Rows rows;
  MYSQL_RES* result = mysql_store_result(mysql_);
  if (result == nullptr) {
    if (mysql_field_count(mysql_) != 0) {
      return std::unexpected(
          last_error("reading the result", std::chrono::steady_clock::now() - start));
    }
    last_errno_ = 0;
    return rows;  // a statement without a result set
  }
  const unsigned n = mysql_num_fields(result);
  const MYSQL_FIELD* fields = mysql_fetch_fields(result);
  rows.columns.reserve(n);
  for (unsigned i = 0; i < n; ++i)
    rows.columns.emplace_back(fields[i].name, fields[i].name_length);
  while (MYSQL_ROW row = mysql_fetch_row(result)) {
    const unsigned long* lengths = mysql_fetch_lengths(result);
    auto& out = rows.rows.emplace_back();
    out.reserve(n);
    for (unsigned i = 0; i < n; ++i) {
      if (row[i] == nullptr) {
        out.emplace_back(std::nullopt);
      } else {
        out.emplace_back(std::string(row[i], lengths[i]));
      }
    }
  }
  mysql_free_result(result);
  last_errno_ = 0;
  return rows;
}

Expected<void> Client::exec(std::string_view sql) {
  auto rows = query(sql);
  if (!rows) return std::unexpected(rows.error());
  return {};
}

namespace {

// Status parsing: every failure names the field and value the server sent.
class RowReader {
 public:
  RowReader(const Rows& rows, std::size_t row, std::string_view source)
      : rows_(rows), row_(row), source_(source) {}

  Expected<std::optional<std::string>> nullable(std::string_view name) const {
    const auto index = rows_.column(name);
    if (!index) {
      return fail(Errc::internal, fmt::format("{}: no column {}", source_, name));
    }
    return rows_.rows[row_][*index];
  }
  Expected<std::string> text(std::string_view name) const {
    auto value = nullable(name);
    if (!value) return std::unexpected(value.error());
    return value->value_or("");
  }
  template <class T>
  Expected<T> number(std::string_view name) const {
    auto value = text(name);
    if (!value) return std::unexpected(value.error());
    T out{};
    const auto [end, ec] = std::from_chars(value->data(), value->data() + value->size(), out);
    if (ec != std::errc{} || end != value->data() + value->size() || value->empty()) {
      return fail(Errc::internal,
                  fmt::format("{}: {} \"{}\" is not a number", source_, name, *value));
    }
    return out;
  }
  Expected<GtidPosition> gtid(std::string_view name) const {
    auto value = text(name);
    if (!value) return std::unexpected(value.error());
    auto position = parse_gtid_position(*value);
    if (!position) {
      return fail(Errc::internal,
                  fmt::format("{}: {}: {}", source_, name, position.error().message));
    }
    return position;
  }

 private:
  const Rows& rows_;
  std::size_t row_;
  std::string_view source_;
};

// Moves a value out of `result` into `out`, or its error into `error`; false on error. Keeps
// the field-by-field parsing below to one line per field.
template <class T, class U>
bool take(Expected<U> result, T& out, Error& error) {
  if (!result) {
    error = std::move(result.error());
    return false;
  }
  out = std::move(*result);
  return true;
}

Expected<ReplicaStatus> replica_status(const Rows& rows, std::size_t i, std::string_view source) {
  const RowReader r(rows, i, source);
  ReplicaStatus s;
  Error error;
  if (!take(r.text("Connection_name"), s.connection_name, error)) return std::unexpected(error);
  if (!take(r.text("Master_Host"), s.master_host, error)) return std::unexpected(error);
  if (!take(r.number<std::uint16_t>("Master_Port"), s.master_port, error))
    return std::unexpected(error);
  if (!take(r.text("Slave_IO_Running"), s.io_running, error)) return std::unexpected(error);
  std::string sql_running;
  if (!take(r.text("Slave_SQL_Running"), sql_running, error)) return std::unexpected(error);
  s.sql_running = sql_running == "Yes";
  if (!take(r.gtid("Gtid_IO_Pos"), s.gtid_io_pos, error)) return std::unexpected(error);
  std::optional<std::string> behind;
  if (!take(r.nullable("Seconds_Behind_Master"), behind, error)) return std::unexpected(error);
  if (behind &&
      !take(r.number<std::uint64_t>("Seconds_Behind_Master"), s.seconds_behind_master, error))
    return std::unexpected(error);
  if (!take(r.text("Last_IO_Error"), s.last_io_error, error)) return std::unexpected(error);
  if (!take(r.text("Last_SQL_Error"), s.last_sql_error, error)) return std::unexpected(error);
  if (!take(r.text("Using_Gtid"), s.using_gtid, error)) return std::unexpected(error);
  if (!take(r.number<std::uint64_t>("Slave_received_heartbeats"), s.received_heartbeats, error))
    return std::unexpected(error);
  return s;
}

Expected<bool> on_off(std::string_view source, std::string_view name, std::string_view value) {
  if (value == "ON") return true;
  if (value == "OFF") return false;
  return fail(Errc::internal,
              fmt::format("{}: {} \"{}\" is neither ON nor OFF", source, name, value));
}

}  // namespace

Expected<InstanceStatus> read_instance_status(Client& client) {
  InstanceStatus status;
  Error error;
  const std::string vars_source = fmt::format("MariaDB {} variables", client.endpoint());
  auto vars = client.query(
      "SELECT @@server_id AS server_id, @@read_only AS read_only, "
      "@@gtid_current_pos AS gtid_current_pos, @@gtid_binlog_pos AS gtid_binlog_pos, "
      "@@gtid_slave_pos AS gtid_slave_pos");
  if (!vars) return std::unexpected(vars.error());
  if (vars->rows.size() != 1) {
    return fail(Errc::internal,
                fmt::format("{}: {} rows instead of 1", vars_source, vars->rows.size()));
  }
  {
    const RowReader r(*vars, 0, vars_source);
    if (!take(r.number<std::uint32_t>("server_id"), status.server_id, error))
      return std::unexpected(error);
    int read_only = 0;
    if (!take(r.number<int>("read_only"), read_only, error)) return std::unexpected(error);
    status.read_only = read_only != 0;
    if (!take(r.gtid("gtid_current_pos"), status.gtid_current_pos, error))
      return std::unexpected(error);
    if (!take(r.gtid("gtid_binlog_pos"), status.gtid_binlog_pos, error))
      return std::unexpected(error);
    if (!take(r.gtid("gtid_slave_pos"), status.gtid_slave_pos, error))
      return std::unexpected(error);
  }

  const std::string slaves_source =
      fmt::format("MariaDB {} SHOW ALL SLAVES STATUS", client.endpoint());
  auto slaves = client.query("SHOW ALL SLAVES STATUS");
  if (!slaves) return std::unexpected(slaves.error());
  for (std::size_t i = 0; i < slaves->rows.size(); ++i) {
    auto replica = replica_status(*slaves, i, slaves_source);
    if (!replica) return std::unexpected(replica.error());
    status.replication.push_back(std::move(*replica));
  }

  const std::string semi_source = fmt::format("MariaDB {} semi-sync status", client.endpoint());
  auto semi = client.query(
      "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', "
      "'Rpl_semi_sync_master_clients', 'Rpl_semi_sync_slave_status')");
  if (!semi) return std::unexpected(semi.error());
  int seen = 0;
  for (std::size_t i = 0; i < semi->rows.size(); ++i) {
    const RowReader r(*semi, i, semi_source);
    std::string name;
    if (!take(r.text("Variable_name"), name, error)) return std::unexpected(error);
    std::string value;
    if (!take(r.text("Value"), value, error)) return std::unexpected(error);
    if (name == "Rpl_semi_sync_master_status") {
      if (!take(on_off(semi_source, name, value), status.semi_sync_master_on, error))
        return std::unexpected(error);
    } else if (name == "Rpl_semi_sync_slave_status") {
      if (!take(on_off(semi_source, name, value), status.semi_sync_slave_on, error))
        return std::unexpected(error);
    } else if (name == "Rpl_semi_sync_master_clients") {
      if (!take(r.number<std::uint64_t>("Value"), status.semi_sync_master_clients, error))
        return std::unexpected(error);
    } else {
      continue;
    }
    ++seen;
  }
  if (seen != 3) {
    return fail(Errc::internal,
                fmt::format("{}: {} of the 3 semi-sync status variables present (is semi-sync "
                            "replication compiled in?)",
                            semi_source, seen));
  }
  return status;
}

Expected<std::string> read_password_file(const std::string& file, const std::string& field) {
  if (file.empty()) return fail(Errc::invalid_argument, field + ": no file given");
  std::ifstream in(file, std::ios::binary);
  if (!in) return fail(Errc::invalid_argument, fmt::format("{}: cannot read {}", field, file));
  std::ostringstream s;
  s << in.rdbuf();
  std::string v = s.str();
  while (!v.empty() && (v.back() == '\n' || v.back() == '\r'))
    v.pop_back();
  if (v.empty()) return fail(Errc::invalid_argument, fmt::format("{}: {} is empty", field, file));
  return v;
}

}  // namespace neco::mysql
