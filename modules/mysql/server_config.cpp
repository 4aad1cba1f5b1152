// Renders the mariadbd option file of a managed instance and the CHANGE MASTER statement of a
// replica (see server_config.hpp for why each setting is what it is).
#include "modules/mysql/server_config.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace neco::mysql {

namespace {

// Longest unix socket path the kernel accepts (sun_path holds 108 bytes with the NUL).
constexpr std::size_t kMaxSocketPath = 107;

// An option-file value must not end the line, start a comment or need quoting.
Expected<void> check_option_value(std::string_view field, std::string_view value) {
  if (value.empty()) return fail(Errc::invalid_argument, fmt::format("{} is empty", field));
  const auto bad = std::find_if(value.begin(), value.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f || c == '#' || c == '"' || c == '\'' || c == ' ' || c == '\\';
  });
  if (bad != value.end()) {
    return fail(Errc::invalid_argument,
                fmt::format("{} \"{}\": character {:#04x} is not allowed in an option file value",
                            field, value, static_cast<unsigned char>(*bad)));
  }
  return {};
}

Expected<void> check_absolute_path(std::string_view field, std::string_view path) {
  if (auto ok = check_option_value(field, path); !ok) return ok;
  if (path.front() != '/') {
    return fail(Errc::invalid_argument,
                fmt::format("{} \"{}\" is not an absolute path", field, path));
  }
  return {};
}

}  // namespace

Expected<void> validate(const ServerConfig& config) {
  if (config.server_id == 0) {
    return fail(Errc::invalid_argument,
                "server_id 0 is not allowed (1..4294967295; 0 refuses replication)");
  }
  if (config.port == 0) return fail(Errc::invalid_argument, "port 0 is not allowed (1..65535)");
  if (auto ok = check_option_value("bind_address", config.bind_address); !ok) return ok;
  if (auto ok = check_absolute_path("socket", config.socket); !ok) return ok;
  if (config.socket.size() > kMaxSocketPath) {
    return fail(Errc::invalid_argument,
                fmt::format("socket \"{}\" is {} bytes long (at most {})", config.socket,
                            config.socket.size(), kMaxSocketPath));
  }
  if (auto ok = check_absolute_path("datadir", config.datadir); !ok) return ok;
  if (config.slave_net_timeout_s < 2 || config.slave_net_timeout_s > 31536000) {
    return fail(Errc::invalid_argument,
                fmt::format("slave_net_timeout_s {} is out of range (2..31536000: the heartbeat "
                            "must fit below it)",
                            config.slave_net_timeout_s));
  }
  return {};
}

Expected<std::string> render_server_config(const ServerConfig& c) {
  if (auto ok = validate(c); !ok) return std::unexpected(ok.error());
  std::string out;
  auto line = [&out](std::string_view text) {
    out += text;
    out += '\n';
  };
  line(fmt::format("# mariadbd options of a neco-managed instance (server_id {}).", c.server_id));
  line("# Written by neco: edits here are overwritten.");
  line("[mariadbd]");
  line(fmt::format("server_id = {}", c.server_id));
  line(fmt::format("port = {}", c.port));
  line(fmt::format("bind_address = {}", c.bind_address));
  line(fmt::format("socket = {}", c.socket));
  line(fmt::format("datadir = {}", c.datadir));
  line("");
  line("# Replication identity: GTIDs in strict mode; every member keeps a binary log with what");
  line("# it replicated, so any replica can be promoted and serve the others.");
  line(fmt::format("gtid_domain_id = {}", c.gtid_domain_id));
  line("gtid_strict_mode = ON");
  line("log_bin = mysql-bin");
  line("log_bin_index = mysql-bin.index");
  line("relay_log = relay-bin");
  line("relay_log_index = relay-bin.index");
  line("log_slave_updates = ON");
  line("binlog_format = ROW");
  line("");
  line("# Durable commits: binary log and InnoDB log flushed at every commit.");
  line("sync_binlog = 1");
  line("innodb_flush_log_at_trx_commit = 1");
  line("");
  line("# Boot fenced: writes refused and replication stopped until neco assigns the role; a");
  line("# relay log that may be torn by a crash is discarded and fetched again.");
  line("read_only = ON");
  line("skip_slave_start = ON");
  line("relay_log_recovery = ON");
  line("# Crash recovery as a replica: a binary log tail no replica acknowledged (AFTER_SYNC:");
  line("# written and synced, prepared but not committed in InnoDB) is truncated and rolled back");
  line("# at startup instead of committed, so a crashed primary rejoins without errant GTIDs.");
  line("init_rpl_role = SLAVE");
  line("");
  line("# Semi-synchronous replication, AFTER_SYNC: a commit is acknowledged to its client only");
  line("# once a replica has it. The timeout never expires, so the primary never falls back to");
  line("# asynchronous replication (writes wait instead), also when no replica is connected.");
  line("# The master side stays off at boot: on a replica it would hold every applied transaction");
  line("# waiting for an ack nobody sends. neco turns it on when it makes an instance primary.");
  line("rpl_semi_sync_master_enabled = OFF");
  line("rpl_semi_sync_slave_enabled = ON");
  line("rpl_semi_sync_master_wait_point = AFTER_SYNC");
  line("rpl_semi_sync_master_timeout = 18446744073709551615");
  line("rpl_semi_sync_master_wait_no_slave = ON");
  line("");
  line("# Failure detection: a replica gives up on a silent primary after this many seconds");
  line("# (CHANGE MASTER sets the heartbeat below it).");
  line(fmt::format("slave_net_timeout = {}", c.slave_net_timeout_s));
  return out;
}

Expected<void> validate(const ReplicationSource& source, std::uint32_t slave_net_timeout_s) {
  if (source.host.empty()) return fail(Errc::invalid_argument, "source host is empty");
  if (source.host.size() > 255) {
    return fail(Errc::invalid_argument,
                fmt::format("source host is {} bytes long (at most 255)", source.host.size()));
  }
  if (source.port == 0) {
    return fail(Errc::invalid_argument, "source port 0 is not allowed (1..65535)");
  }
  if (source.user.empty()) return fail(Errc::invalid_argument, "source user is empty");
  if (source.user.size() > 128) {
    return fail(Errc::invalid_argument,
                fmt::format("source user is {} bytes long (at most 128)", source.user.size()));
  }
  if (source.password.size() > 96) {
    // The length is safe to say; the password is not.
    return fail(Errc::invalid_argument, fmt::format("source password is {} bytes long (at most 96)",
                                                    source.password.size()));
  }
  const std::uint64_t timeout_ms = std::uint64_t{slave_net_timeout_s} * 1000;
  if (source.heartbeat_period_ms == 0 || source.heartbeat_period_ms >= timeout_ms ||
      source.heartbeat_period_ms > 4294967000U) {
    return fail(Errc::invalid_argument,
                fmt::format("source heartbeat_period_ms {} must be at least 1 and below "
                            "slave_net_timeout ({} ms)",
                            source.heartbeat_period_ms, timeout_ms));
  }
  if (source.connect_retry_s == 0 || source.connect_retry_s > 31536000) {
    return fail(Errc::invalid_argument,
                fmt::format("source connect_retry_s {} is out of range (1..31536000)",
                            source.connect_retry_s));
  }
  return {};
}

Expected<std::string> render_change_master(const ReplicationSource& s,
                                           std::uint32_t slave_net_timeout_s) {
  if (auto ok = validate(s, slave_net_timeout_s); !ok) return std::unexpected(ok.error());
  return fmt::format(
      "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={}, MASTER_USER={}, MASTER_PASSWORD={}, "
      "MASTER_CONNECT_RETRY={}, MASTER_HEARTBEAT_PERIOD={}.{:03}, MASTER_USE_GTID=slave_pos",
      sql_quote(s.host), s.port, sql_quote(s.user), sql_quote(s.password), s.connect_retry_s,
      s.heartbeat_period_ms / 1000, s.heartbeat_period_ms % 1000);
}

std::string sql_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '\'';
  for (const char c : text) {
    switch (c) {
      case '\'':
        out += "\\'";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\0':
        out += "\\0";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\x1a':
        out += "\\Z";
        break;
      default:
        out += c;
    }
  }
  out += '\'';
  return out;
}

}  // namespace neco::mysql
