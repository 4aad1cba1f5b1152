// Execution of the failover operations (see operations.hpp).
#include "modules/mysql/operations.hpp"

#include <fmt/format.h>
#include <mysqld_error.h>

#include <thread>
#include <vector>

#include "modules/mysql/server_config.hpp"

namespace neco::mysql {

namespace {

Error with_step(const Error& error, std::string_view instance, std::string_view step) {
  return Error{error.code, fmt::format("{}: {}: {}", instance, step, error.message)};
}

class Executor {
 public:
  Executor(const ClusterSpec& spec, const Access& access) : spec_(spec), access_(access) {}

  Expected<Client> connect(std::string_view name, std::chrono::seconds read_at_least = {}) {
    const InstanceSpec* instance = spec_.find(name);
    if (instance == nullptr) {
      return fail(Errc::invalid_argument,
                  fmt::format("instance \"{}\" is not in cluster {}", name, spec_.name));
    }
    auto client = Client::connect(admin_options(spec_, *instance, access_, read_at_least));
    if (!client) return std::unexpected(with_step(client.error(), name, "connect"));
    return client;
  }

  // Runs statements in order; the first failure is the result.
  static Expected<void> run(Client& client, std::string_view name,
                            std::initializer_list<std::string_view> statements) {
    for (std::string_view sql : statements) {
      if (auto ok = client.exec(sql); !ok) return std::unexpected(with_step(ok.error(), name, sql));
    }
    return {};
  }

  Expected<std::string> change_master(std::string_view primary) {
    const InstanceSpec* source = spec_.find(primary);
    if (source == nullptr) {
      return fail(Errc::invalid_argument,
                  fmt::format("primary \"{}\" is not in cluster {}", primary, spec_.name));
    }
    ReplicationSource s;
    s.host = source->host;
    s.port = source->port;
    s.user = access_.repl_user;
    s.password = access_.repl_password;
    s.heartbeat_period_ms = access_.heartbeat_period_ms;
    s.connect_retry_s = access_.connect_retry_s;
    return render_change_master(s, access_.slave_net_timeout_s);
  }

  // MASTER_GTID_WAIT bounded by `timeout`; deadline_exceeded when the position is not reached.
  Expected<void> wait_position(std::string_view name, const GtidPosition& position,
                               std::chrono::milliseconds timeout) {
    const auto read =
        std::chrono::duration_cast<std::chrono::seconds>(timeout) + std::chrono::seconds(2);
    auto client = connect(name, read);
    if (!client) return std::unexpected(client.error());
    auto rows = client->query(fmt::format("SELECT MASTER_GTID_WAIT({}, {}.{:03})",
                                          sql_quote(to_string(position)), timeout.count() / 1000,
                                          timeout.count() % 1000));
    if (!rows) return std::unexpected(with_step(rows.error(), name, "MASTER_GTID_WAIT"));
    if (rows->rows.size() != 1 || rows->rows[0].empty() || !rows->rows[0][0]) {
      return fail(Errc::internal, fmt::format("{}: MASTER_GTID_WAIT returned no value", name));
    }
    if (*rows->rows[0][0] != "0") {
      return fail(Errc::deadline_exceeded, fmt::format("{}: {} not applied within {} ms", name,
                                                       to_string(position), timeout.count()));
    }
    return {};
  }

  Expected<void> operator()(const op::None&) { return {}; }

  Expected<void> operator()(const op::FenceReplicasIo& o) {
    // In parallel, and allowed a whole slave_net_timeout: an IO thread stuck connecting to a
    // hung primary only stops when its connect times out, and the replicas wait at once.
    const std::chrono::seconds stop_bound(access_.slave_net_timeout_s + 2);
    std::vector<Expected<void>> results(o.replicas.size());
    std::vector<std::thread> threads;
    threads.reserve(o.replicas.size());
    for (std::size_t i = 0; i < o.replicas.size(); ++i) {
      threads.emplace_back([&, i] {
        const std::string& name = o.replicas[i];
        auto client = connect(name, stop_bound);
        results[i] = client ? run(*client, name, {"STOP SLAVE IO_THREAD"})
                            : Expected<void>(std::unexpected(client.error()));
      });
    }
    for (auto& thread : threads)
      thread.join();
    for (auto& result : results) {
      if (!result) return result;
    }
    return {};
  }

  Expected<void> operator()(const op::WaitRelayApply& o) {
    return wait_position(o.candidate, o.target, o.timeout);
  }

  Expected<void> operator()(const op::StartSqlThread& o) {
    auto client = connect(o.candidate);
    if (!client) return std::unexpected(client.error());
    auto rows = client->query("SHOW SLAVE STATUS");
    if (!rows) return std::unexpected(with_step(rows.error(), o.candidate, "SHOW SLAVE STATUS"));
    auto field = [&](std::string_view name) -> std::string {
      const auto column = rows->column(name);
      if (!column || rows->rows.size() != 1) return {};
      return rows->rows[0][*column].value_or("");
    };
    if (rows->rows.size() != 1) {
      return fail(Errc::failed_precondition,
                  fmt::format("{}: has no replication configured: nothing to start", o.candidate));
    }
    if (field("Slave_SQL_Running") == "Yes") return {};
    if (const std::string error = field("Last_SQL_Error"); !error.empty()) {
      return fail(Errc::failed_precondition,
                  fmt::format("{}: the SQL thread stopped on an error, which needs an operator: {}",
                              o.candidate, error));
    }
    // With GTID, MariaDB discards the relay log when a thread starts while both are stopped
    // (so would restarting the IO thread): the unapplied events, maybe the only copy of
    // acknowledged writes, would be gone. With the IO thread stopped, switch the connection
    // to file/position mode at the SQL thread's own relay log position first (CHANGE MASTER
    // keeps the relay log when given one); the IO thread is never started again (the candidate
    // is promoted, RESET SLAVE ALL, or repointed with GTID).
    if (field("Slave_IO_Running") == "No" && field("Using_Gtid") != "No") {
      const std::string file = field("Relay_Log_File");
      const std::string position = field("Relay_Log_Pos");
      if (file.empty() || position.empty() ||
          position.find_first_not_of("0123456789") != std::string::npos) {
        return fail(Errc::internal,
                    fmt::format("{}: SHOW SLAVE STATUS has no usable Relay_Log_File \"{}\" / "
                                "Relay_Log_Pos \"{}\"",
                                o.candidate, file, position));
      }
      const std::string keep = fmt::format(
          "CHANGE MASTER TO MASTER_USE_GTID = no, RELAY_LOG_FILE = {}, RELAY_LOG_POS = {}",
          sql_quote(file), position);
      if (auto ok = run(*client, o.candidate, {keep}); !ok) return ok;
    }
    return run(*client, o.candidate, {"START SLAVE SQL_THREAD"});
  }

  Expected<void> operator()(const op::Promote& o) {
    auto client = connect(o.instance);
    if (!client) return std::unexpected(client.error());
    // Semi-sync before writes: no commit of the new primary is acknowledged without a replica.
    return run(*client, o.instance,
               {"STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL rpl_semi_sync_master_enabled = ON",
                "SET GLOBAL read_only = OFF"});
  }

  Expected<void> operator()(const op::Repoint& o) {
    auto change = change_master(o.primary);
    if (!change) return std::unexpected(change.error());
    Expected<void> result;
    for (const auto& name : o.replicas) {
      auto client = connect(name);
      auto ok = client ? run(*client, name, {"STOP SLAVE", *change, "START SLAVE"})
                       : Expected<void>(std::unexpected(client.error()));
      if (!ok && result) result = ok;
    }
    return result;
  }

  Expected<void> operator()(const op::Fence& o) {
    auto client = connect(o.instance);
    if (!client) return std::unexpected(client.error());
    // Kill first: a commit waiting for a semi-sync ack that never comes would make
    // SET read_only wait for it; then again, for whoever connected in between.
    if (auto killed = kill_client_connections(*client); !killed)
      return std::unexpected(with_step(killed.error(), o.instance, "killing clients"));
    if (auto ok = run(*client, o.instance, {"SET GLOBAL read_only = ON"}); !ok) return ok;
    if (auto killed = kill_client_connections(*client); !killed)
      return std::unexpected(with_step(killed.error(), o.instance, "killing clients"));
    return {};
  }

  Expected<void> operator()(const op::Rejoin& o) {
    auto change = change_master(o.primary);
    if (!change) return std::unexpected(change.error());
    auto client = connect(o.instance);
    if (!client) return std::unexpected(client.error());
    // A former primary's own writes are in its binary log, not in gtid_slave_pos: replicate
    // from what it has (decide() made sure the primary has all of it).
    if (auto ok = run(*client, o.instance,
                      {"SET GLOBAL read_only = ON", "SET GLOBAL rpl_semi_sync_master_enabled = OFF",
                       "STOP SLAVE"});
        !ok) {
      return ok;
    }
    auto rows = client->query("SELECT @@gtid_current_pos");
    if (!rows) return std::unexpected(with_step(rows.error(), o.instance, "@@gtid_current_pos"));
    if (rows->rows.size() != 1 || rows->rows[0].empty()) {
      return fail(Errc::internal, fmt::format("{}: @@gtid_current_pos: no row", o.instance));
    }
    const std::string pos = rows->rows[0][0].value_or("");
    const std::string set_pos = fmt::format("SET GLOBAL gtid_slave_pos = {}", sql_quote(pos));
    return run(*client, o.instance, {set_pos, *change, "START SLAVE"});
  }

  Expected<void> operator()(const op::BlockWrites& o) {
    auto client = connect(o.instance);
    if (!client) return std::unexpected(client.error());
    if (auto ok = run(*client, o.instance, {"SET GLOBAL read_only = ON"}); !ok) return ok;
    // Users with READ_ONLY ADMIN (SUPER, ALL) still write: after the grace, cut them off.
    std::this_thread::sleep_for(o.grace);
    if (auto killed = kill_client_connections(*client); !killed)
      return std::unexpected(with_step(killed.error(), o.instance, "killing clients"));
    return {};
  }

  Expected<void> operator()(const op::WaitCatchup& o) {
    return wait_position(o.target, o.position, o.timeout);
  }

 private:
  const ClusterSpec& spec_;
  const Access& access_;
};

}  // namespace

ConnectOptions admin_options(const ClusterSpec& spec, const InstanceSpec& instance,
                             const Access& access, std::chrono::seconds read_at_least) {
  ConnectOptions o;
  o.host = instance.controller_host();
  o.port = instance.controller_port();
  o.user = access.admin_user;
  o.password = access.admin_password;
  o.connect_timeout = spec.policy.connect_timeout;
  o.read_timeout = std::max(spec.policy.read_timeout, read_at_least);
  o.write_timeout = spec.policy.read_timeout;
  return o;
}

Expected<std::size_t> kill_client_connections(Client& client) {
  auto rows = client.query(
      "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND "
      "COMMAND NOT IN ('Binlog Dump', 'Daemon', 'Slave_IO', 'Slave_SQL', 'Slave_worker') AND "
      "USER NOT IN ('system user', 'event_scheduler', '')");
  if (!rows) return std::unexpected(rows.error());
  std::size_t killed = 0;
  for (const auto& row : rows->rows) {
    if (row.empty() || !row[0]) continue;
    auto ok = client.exec(fmt::format("KILL CONNECTION {}", *row[0]));
    if (ok) {
      ++killed;
    } else if (client.last_errno() != ER_NO_SUCH_THREAD) {  // gone meanwhile: fine
      return std::unexpected(ok.error());
    }
  }
  return killed;
}

Expected<void> execute(const ClusterSpec& spec, const Access& access, const Operation& operation) {
  Executor executor(spec, access);
  return std::visit(executor, operation);
}

}  // namespace neco::mysql
