// The role file: one YAML file per machine saying who this node is, whether it is a
// controller, where its store, listeners and state live, and which modules it runs.
#pragma once

#include <yaml-cpp/yaml.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/config/schema.hpp"
#include "agent/util/error.hpp"

namespace neco::config {

struct NodeConfig {
  std::string name;  // required: the identity certificates and the inventory use
  std::map<std::string, std::string> labels;
};

struct SqliteConfig {
  std::string path;  // empty: <state_dir>/store.db
};

// The etcd v3 cluster the controllers share once a deployment outgrows one machine.
struct EtcdConfig {
  std::vector<std::string> endpoints;  // "http://10.0.0.1:2379", "https://..."
  std::string ca_file;                 // CA that signed etcd's server certificates
  std::string cert_file;               // client certificate for etcd's client-cert-auth
  std::string key_file;                // its key
  Duration request_timeout = std::chrono::seconds(5);
  Duration dial_timeout = std::chrono::seconds(2);
};

struct StoreConfig {
  std::string backend = "sqlite";
  SqliteConfig sqlite;
  EtcdConfig etcd;
  Duration election_ttl = std::chrono::seconds(10);
  std::int64_t history_revisions = 10000;
};

struct AdminConfig {
  std::string address = "127.0.0.1";
  std::int64_t port = 9180;
  std::string socket;  // empty: no unix socket
  std::int64_t max_connections = 512;
  Duration header_timeout = std::chrono::seconds(10);
  std::int64_t max_body_bytes = 1 << 20;
};

struct MetricsConfig {
  bool enabled = true;
  std::string address = "127.0.0.1";
  std::int64_t port = 9181;
};

// The cluster API that controllers serve (HTTPS, mutual TLS) and nodes join.
struct ClusterApiConfig {
  bool enabled = true;                // controllers only
  std::string address = "127.0.0.1";  // listen address
  std::int64_t port = 9443;
  std::vector<std::string> advertise;   // names and IPs for the server certificate; default address
  std::int64_t max_connections = 4096;  // nodes hold one long-poll each
};

// How a node joins: which controllers, with what single-use token, trusting which CA.
struct JoinConfig {
  std::vector<std::string> controllers;  // "https://10.0.0.1:9443", tried in order
  std::string token;                     // from `neco join-token create`; only the first start
  std::string ca_fingerprint;            // "sha256:<hex>" of the cluster CA certificate
};

struct ClusterConfig {
  ClusterApiConfig api;
  JoinConfig join;
  Duration heartbeat_interval = std::chrono::seconds(10);
  std::int64_t unreachable_after = 3;  // missed heartbeats before a node is `unreachable`
  Duration cert_validity = std::chrono::hours(24 * 30);
};

struct CoreConfig {
  NodeConfig node;
  bool controller = false;
  std::string state_dir = "/var/lib/neco";
  std::string log_level = "info";
  Duration shutdown_timeout = std::chrono::seconds(10);
  std::int64_t workers = 4;
  StoreConfig store;
  AdminConfig admin;
  MetricsConfig metrics;
  ClusterConfig cluster;
};

// A module's section as written, parsed later by the module itself.
struct ModuleSection {
  std::string name;
  YAML::Node node;        // the section (may be null: defaults)
  std::string canonical;  // the section re-emitted, to tell whether a reload changed it
  YAML::Mark mark;        // where the module's key stands
};

struct RoleFile {
  std::string path;
  CoreConfig core;
  std::vector<ModuleSection> modules;  // in file order
};

// Why `name` is not a valid node name ("" when it is): names end up in certificates, store
// keys and metric labels.
std::string check_node_name(const std::string& name);

// The schema of the core sections (everything but `modules`).
const Schema<CoreConfig>& core_schema();

// Reads and validates the core part of a role file. Errors carry FILE:LINE:COLUMN.
Expected<RoleFile> load_role_file(const std::string& path);
// The same from text (tests, fuzzing); `name` stands in for the file name in messages.
Expected<RoleFile> parse_role_text(const std::string& text, const std::string& name);

// Effective config of the core as JSON (secrets redacted), for /config.
nlohmann::json dump_core(const CoreConfig& core);

// The core fields that only a restart can change, compared between two configs.
std::vector<std::string> restart_only_changes(const CoreConfig& before, const CoreConfig& after);

// A section handed to a module's configure(): parse it with the module's own schema.
class Section {
 public:
  Section(const ModuleSection& s, std::string file) : section_(s), file_(std::move(file)) {}

  const YAML::Node& node() const { return section_.node; }
  std::string path() const { return "modules." + section_.name; }

  // Parses the section into `out` (holding defaults); errors carry FILE:LINE:COLUMN.
  template <class T>
  Expected<void> read(const Schema<T>& schema, T& out) const {
    Diagnostics diag(file_);
    T value = out;
    schema.parse(section_.node, path(), value, diag);
    if (!diag.ok()) return std::unexpected(diag.to_error());
    out = std::move(value);
    return {};
  }

 private:
  const ModuleSection& section_;
  std::string file_;
};

}  // namespace neco::config
