#include "agent/config/role_config.hpp"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include <cerrno>
#include <cstring>

namespace neco::config {
namespace {}  // namespace

std::string check_node_name(const std::string& v) {
  // Node names end up in certificates, store keys and metric labels: keep them DNS-label-like.
  if (v.empty() || v.size() > 63) return "must be 1 to 63 characters";
  for (char c : v) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
    if (!ok) return fmt::format("{} may only hold a-z, 0-9, '-' and '.'", quote(v));
  }
  if (v.front() == '-' || v.back() == '-') return "must not start or end with '-'";
  return "";
}

namespace {

std::string check_address(const std::string& v) {
  if (v.empty()) return "must not be empty";
  if (v.find(':') != std::string::npos && v.find('.') != std::string::npos) {
    return fmt::format("{} looks like host:port; give the port in the 'port' field", quote(v));
  }
  return "";
}

std::string check_absolute_or_empty(const std::string& v) {
  if (!v.empty() && v.front() != '/') return fmt::format("{} must be an absolute path", quote(v));
  return "";
}

std::string check_urls(const std::vector<std::string>& urls) {
  for (const auto& u : urls) {
    const bool scheme = u.starts_with("http://") || u.starts_with("https://");
    const auto host = u.substr(u.find("://") == std::string::npos ? 0 : u.find("://") + 3);
    if (!scheme || host.empty() || host.front() == '/') {
      return fmt::format("{} must be a URL like https://10.0.0.1:9443", quote(u));
    }
  }
  return "";
}

std::string check_fingerprint(const std::string& v) {
  if (v.empty()) return "";
  constexpr std::string_view kPrefix = "sha256:";
  const bool hex = v.size() == kPrefix.size() + 64 && v.starts_with(kPrefix) &&
                   v.find_first_not_of("0123456789abcdef", kPrefix.size()) == std::string::npos;
  if (!hex) return fmt::format("{} must be sha256: and 64 lowercase hex digits", quote(v));
  return "";
}

std::string check_absolute(const std::string& v) {
  if (v.empty() || v.front() != '/') return fmt::format("{} must be an absolute path", quote(v));
  return "";
}

Schema<NodeConfig> node_schema() {
  Schema<NodeConfig> s;
  s.field("name", &NodeConfig::name, "node name, unique in the cluster (a-z, 0-9, '-', '.')",
          {.required = true, .check = check_node_name});
  s.field("labels", &NodeConfig::labels, "free-form labels (rack, zone, ...)");
  return s;
}

Schema<StoreConfig> store_schema() {
  Schema<SqliteConfig> sqlite;
  sqlite.field("path", &SqliteConfig::path, "database file; empty means <state_dir>/store.db",
               {.check = check_absolute_or_empty});
  Schema<EtcdConfig> etcd;
  etcd.field("endpoints", &EtcdConfig::endpoints,
             "client URLs of the etcd members (http:// or https://), tried in order",
             {.check = check_urls});
  etcd.field("ca_file", &EtcdConfig::ca_file, "CA certificate that signed etcd's certificates",
             {.check = check_absolute_or_empty});
  etcd.field("cert_file", &EtcdConfig::cert_file, "client certificate for etcd",
             {.check = check_absolute_or_empty});
  etcd.field("key_file", &EtcdConfig::key_file, "key of the client certificate",
             {.check = check_absolute_or_empty});
  etcd.field("request_timeout", &EtcdConfig::request_timeout, "deadline of one etcd request",
             {.min = Duration(100), .max = Duration(300'000)});
  etcd.field("dial_timeout", &EtcdConfig::dial_timeout, "deadline of connecting to one member",
             {.min = Duration(50), .max = Duration(60'000)});
  Schema<StoreConfig> s;
  s.field("backend", &StoreConfig::backend, "store backend: sqlite (one controller) or etcd",
          {.one_of = {"sqlite", "etcd"}});
  s.section("sqlite", &StoreConfig::sqlite, sqlite, "SQLite backend settings");
  s.section("etcd", &StoreConfig::etcd, etcd, "etcd backend settings");
  s.field("election_ttl", &StoreConfig::election_ttl,
          "leader lease TTL; a dead leader is replaced after about this long",
          {.min = Duration(1000), .max = Duration(300'000)});
  s.field("history_revisions", &StoreConfig::history_revisions,
          "how many revisions of history watches can resume from",
          {.min = std::int64_t{100}, .max = std::int64_t{10'000'000}});
  return s;
}

Schema<ClusterConfig> cluster_schema() {
  Schema<ClusterApiConfig> api;
  api.field("enabled", &ClusterApiConfig::enabled,
            "serve the cluster API (controllers only): join, heartbeats, desired state");
  api.field("address", &ClusterApiConfig::address, "IP address of the cluster API listener",
            {.check = check_address});
  api.field("port", &ClusterApiConfig::port, "TCP port of the cluster API (HTTPS, mutual TLS)",
            {.min = std::int64_t{1}, .max = std::int64_t{65535}});
  api.field("advertise", &ClusterApiConfig::advertise,
            "DNS names and IPs nodes use to reach this controller (certificate SANs)");
  api.field("max_connections", &ClusterApiConfig::max_connections,
            "concurrent connections (each node holds one long-poll)",
            {.min = std::int64_t{16}, .max = std::int64_t{1'000'000}});
  Schema<JoinConfig> join;
  join.field("controllers", &JoinConfig::controllers,
             "cluster API URLs of the controllers (https://host:port)", {.check = check_urls});
  join.field("token", &JoinConfig::token, "single-use join token (neco join-token create)",
             {.secret = true});
  join.field("ca_fingerprint", &JoinConfig::ca_fingerprint,
             "sha256:<hex> of the cluster CA, printed with the token",
             {.check = check_fingerprint});
  Schema<ClusterConfig> s;
  s.section("api", &ClusterConfig::api, api, "the cluster API controllers serve");
  s.section("join", &ClusterConfig::join, join, "how a node joins the cluster");
  s.field("heartbeat_interval", &ClusterConfig::heartbeat_interval,
          "how often nodes report their status",
          {.min = Duration(100), .max = Duration(3'600'000)});
  s.field("unreachable_after", &ClusterConfig::unreachable_after,
          "missed heartbeats before the leader marks a node unreachable",
          {.min = std::int64_t{2}, .max = std::int64_t{1000}});
  s.field("cert_validity", &ClusterConfig::cert_validity,
          "lifetime of node certificates; renewed when a third is left",
          {.min = Duration(10'000), .max = Duration(std::int64_t{24} * 3600 * 1000 * 825)});
  return s;
}

Schema<AdminConfig> admin_schema() {
  Schema<AdminConfig> s;
  s.field("address", &AdminConfig::address, "IP address of the admin HTTP listener (keep it local)",
          {.check = check_address});
  s.field("port", &AdminConfig::port, "TCP port of the admin HTTP listener",
          {.min = std::int64_t{1}, .max = std::int64_t{65535}});
  s.field("socket", &AdminConfig::socket, "unix socket path (mode 0600); empty disables it",
          {.check = check_absolute_or_empty});
  s.field("max_connections", &AdminConfig::max_connections, "concurrent connections accepted",
          {.min = std::int64_t{1}, .max = std::int64_t{100'000}});
  s.field("header_timeout", &AdminConfig::header_timeout,
          "time a client has to send a whole request header",
          {.min = Duration(100), .max = Duration(600'000)});
  s.field("max_body_bytes", &AdminConfig::max_body_bytes, "largest request body accepted",
          {.min = std::int64_t{1024}, .max = std::int64_t{1} << 32});
  return s;
}

Schema<MetricsConfig> metrics_schema() {
  Schema<MetricsConfig> s;
  s.field("enabled", &MetricsConfig::enabled, "serve /metrics on its own read-only listener");
  s.field("address", &MetricsConfig::address, "IP address of the metrics listener",
          {.check = check_address});
  s.field("port", &MetricsConfig::port, "TCP port of the metrics listener",
          {.min = std::int64_t{1}, .max = std::int64_t{65535}});
  return s;
}

Schema<CoreConfig> make_core_schema() {
  Schema<CoreConfig> s;
  s.section("node", &CoreConfig::node, node_schema(), "identity of this machine", true);
  s.field("controller", &CoreConfig::controller,
          "run the store and campaign for leadership (controllers only)");
  s.field("state_dir", &CoreConfig::state_dir, "directory for the store and module state",
          {.check = check_absolute});
  s.field("log_level", &CoreConfig::log_level, "error, warning, info or debug",
          {.one_of = {"error", "warning", "info", "debug"}});
  s.field("shutdown_timeout", &CoreConfig::shutdown_timeout,
          "bound on a graceful stop (modules, in-flight requests)",
          {.min = Duration(100), .max = Duration(300'000)});
  s.field("workers", &CoreConfig::workers, "threads for blocking work (store, files, processes)",
          {.min = std::int64_t{1}, .max = std::int64_t{256}});
  s.section("store", &CoreConfig::store, store_schema(), "the controllers' store");
  s.section("admin", &CoreConfig::admin, admin_schema(), "the local admin endpoint");
  s.section("metrics", &CoreConfig::metrics, metrics_schema(), "the metrics listener");
  s.section("cluster", &CoreConfig::cluster, cluster_schema(),
            "the cluster API, joining and membership");
  s.external("modules", "one section per enabled module, keyed by module name");
  return s;
}

// Rules that span sections: what a controller may not set, what a node needs to join.
void check_cluster(const YAML::Node& root, const CoreConfig& core, Diagnostics& diag) {
  // Where to point a message: the deepest of the keys that is present (yaml-cpp's Node
  // assignment writes through, so walk with reset(), never operator=).
  const auto mark = [&](std::initializer_list<const char*> keys) {
    YAML::Node n;
    n.reset(root);
    for (const char* k : keys) {
      if (!n.IsDefined() || !n.IsMap() || !n[k].IsDefined()) break;
      YAML::Node child = n[k];
      n.reset(child);
    }
    return n.Mark();
  };
  const auto& join = core.cluster.join;
  if (core.controller && !join.controllers.empty()) {
    diag.error(mark({"cluster", "join"}),
               "cluster.join: controllers do not join; they share the store. Remove this "
               "section or set 'controller: false'");
  }
  if (!core.controller && !join.controllers.empty() && join.ca_fingerprint.empty()) {
    diag.error(mark({"cluster", "join"}),
               "cluster.join.ca_fingerprint is required to trust the controllers; it is printed "
               "by 'neco join-token create'");
  }
  const auto cluster = root["cluster"];  // yaml-cpp: Type() of a missing key throws
  if (!core.controller && cluster.IsDefined() && cluster.IsMap() && cluster["api"].IsDefined()) {
    diag.error(mark({"cluster", "api"}),
               "cluster.api: only controllers serve the cluster API; set 'controller: true' or "
               "remove this section");
  }
  if (core.controller && core.store.backend == "etcd" && core.store.etcd.endpoints.empty()) {
    diag.error(mark({"store", "backend"}),
               "store.etcd.endpoints: the etcd backend needs at least one endpoint");
  }
  const auto& e = core.store.etcd;
  if (e.cert_file.empty() != e.key_file.empty()) {
    diag.error(mark({"store", "etcd"}),
               "store.etcd: cert_file and key_file go together (client certificate and its key)");
  }
}

Expected<RoleFile> parse_node(const YAML::Node& root, const std::string& name) {
  Diagnostics diag(name);
  RoleFile role;
  role.path = name;
  if (!root.IsDefined() || root.IsNull()) {
    diag.error(root.Mark(), "the role file is empty; it needs at least 'node: {name: ...}'");
    return std::unexpected(diag.to_error());
  }
  if (!root.IsMap()) {
    diag.error(root.Mark(),
               fmt::format("expected a mapping at the top, got {}", describe_kind(root)));
    return std::unexpected(diag.to_error());
  }
  // `modules` is declared external in the core schema: the modules parse their own sections.
  YAML::Node modules;
  bool modules_seen = false;
  for (const auto& kv : root) {
    if (kv.first.IsScalar() && kv.first.Scalar() == "modules" && !modules_seen) {
      modules_seen = true;
      modules = kv.second;
    }
  }
  core_schema().parse(root, "", role.core, diag);

  if (modules_seen && !modules.IsNull()) {
    if (!modules.IsMap()) {
      diag.error(modules.Mark(),
                 fmt::format("modules: expected a mapping of module name to its section, got {}",
                             describe_kind(modules)));
    } else {
      for (const auto& kv : modules) {
        if (!kv.first.IsScalar()) {
          diag.error(kv.first.Mark(), "modules: keys must be module names");
          continue;
        }
        const std::string mod = kv.first.Scalar();
        bool dup = false;
        for (const auto& m : role.modules)
          dup = dup || m.name == mod;
        if (dup) {
          diag.error(kv.first.Mark(), fmt::format("duplicate module {}", quote(mod)));
          continue;
        }
        role.modules.push_back({mod, kv.second, YAML::Dump(kv.second), kv.first.Mark()});
      }
    }
  }
  if (role.core.controller == false && root["store"].IsDefined()) {
    diag.error(root["store"].Mark(),
               "store: only controllers have a store; set 'controller: true' or remove this "
               "section");
  }
  check_cluster(root, role.core, diag);
  if (!diag.ok()) return std::unexpected(diag.to_error());
  return role;
}

}  // namespace

const Schema<CoreConfig>& core_schema() {
  static const Schema<CoreConfig> schema = make_core_schema();
  return schema;
}

Expected<RoleFile> parse_role_text(const std::string& text, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    Diagnostics diag(name);
    diag.error(e.mark, "YAML syntax error: " + e.msg);
    return std::unexpected(diag.to_error());
  }
  return parse_node(root, name);
}

Expected<RoleFile> load_role_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return fail(Errc::not_found,
                fmt::format("{}: cannot read the role file: {}", path, std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > (4u << 20)) {
    return fail(Errc::invalid_argument,
                fmt::format("{}: larger than 4 MiB; not a role file", path));
  }
  return parse_role_text(text.str(), path);
}

nlohmann::json dump_core(const CoreConfig& core) {
  return core_schema().dump(core);
}

std::vector<std::string> restart_only_changes(const CoreConfig& before, const CoreConfig& after) {
  std::vector<std::string> changed;
  const auto a = dump_core(before);
  const auto b = dump_core(after);
  // Everything but the log level and node labels is wired into sockets, files or the store.
  for (const auto& key : {"node", "controller", "state_dir", "shutdown_timeout", "workers", "store",
                          "admin", "metrics", "cluster"}) {
    if (std::string_view(key) == "node") {
      if (a["node"]["name"] != b["node"]["name"]) changed.emplace_back("node.name");
      continue;
    }
    if (a[key] != b[key]) changed.emplace_back(key);
  }
  return changed;
}

}  // namespace neco::config
