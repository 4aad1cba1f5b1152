// The mysql module: on a node with modules.mysql.local, a LocalServer beside the node's own
// mariadbd (option file, optional start and restart, health; controller or not). On the leader
// controller, one failover loop (ClusterLoop) per MariaDB
// cluster of the role file, whose memory lives in the store under
// /neco/mysql/clusters/<name>/memory and is written, fenced by the leader's term, before each
// operation runs, so a leader that crashed mid-operation has it redone by the next one and a
// deposed leader never acts. Clusters come from the role file or from the admin API (their
// definitions stored under /neco/mysql/clusters/<name>/spec, see api_clusters.hpp); the leader
// follows the stored ones with a watch. Loops start and stop on the worker pool, never on the
// event loop (a stop waits for the turn in progress). One thread per cluster: a cluster's turn
// blocks on its instances' timeouts, and one hung cluster must not delay another's failover.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/config/schema.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/module/module.hpp"
#include "modules/mysql/cluster_state.hpp"
#include "modules/mysql/local_server.hpp"
#include "modules/mysql/operations.hpp"

namespace neco {
class WorkerPool;
}

namespace neco::mysql {

struct InstanceSection {
  std::string name;
  std::string host;
  std::int64_t port = 3306;
  bool primary = false;
  std::string admin_host;       // "" = host
  std::int64_t admin_port = 0;  // 0 = port
};

struct CredentialsSection {
  std::string admin_user;
  std::string admin_password_file;  // read at start; the password is never logged
  std::string repl_user;
  std::string repl_password_file;
};

struct PolicySection {
  bool failover = true;
  config::Duration replica_silence = std::chrono::seconds(3);
  config::Duration failure_confirm = std::chrono::seconds(1);
  config::Duration relay_apply_timeout = std::chrono::seconds(5);
  config::Duration kill_grace = std::chrono::milliseconds(500);
  config::Duration catchup_timeout = std::chrono::seconds(5);
  config::Duration connect_timeout = std::chrono::seconds(1);
  config::Duration read_timeout = std::chrono::seconds(2);
  // After an automatic failover, the next automatic one on the cluster waits this long unless
  // an operator acted (switchover or start-clustering).
  config::Duration anti_flap_window = std::chrono::minutes(10);
};

struct ClusterSection {
  std::string name;
  std::vector<InstanceSection> instances;
  CredentialsSection credentials;
  PolicySection policy;
};

struct MysqlConfig {
  config::Duration interval = std::chrono::milliseconds(500);  // between turns
  std::vector<ClusterSection> clusters;
  LocalSection local;  // the node side: this node's own mariadbd (optional)
};

const config::Schema<MysqlConfig>& mysql_schema();
// The schema of one clusters[] entry (also what PUT /v1/mysql/clusters/{name} accepts).
const config::Schema<ClusterSection>& cluster_schema();

// The ClusterSpec of a section, validated; errors name the field under `path`
// ("modules.mysql.clusters[0]: instances: two primaries ...").
Expected<ClusterSpec> cluster_spec(const ClusterSection& section, const std::string& path);

// The users and the passwords read from the credentials' files; errors name the field under
// `path` and the file, never the password.
Expected<Access> read_access(const CredentialsSection& credentials, const std::string& path);

// Parses and validates a whole section (what configure does), errors naming the field.
Expected<MysqlConfig> parse_config(const config::Section& section);

// Store keys of a cluster.
std::string memory_key(const std::string& cluster);
std::string paused_key(const std::string& cluster);
std::string last_failover_key(const std::string& cluster);

class MysqlModule final : public Module {
 public:
  MysqlModule();
  ~MysqlModule() override;

  std::string_view name() const override { return "mysql"; }
  Expected<void> configure(const config::Section& section) override;
  void add_routes(ModuleRoutes& routes) override;
  Expected<void> start(ModuleContext& context) override;
  void on_leader(std::int64_t term) override;
  void on_follower() override;
  void stop() override;
  Health health() const override;
  nlohmann::json effective_config() const override;

  struct Cluster;  // one managed cluster: spec, access, loop and last status (mysql_module.cpp)
  struct Shared;   // what the module shares with its worker jobs and watch (mysql_module.cpp)

 private:
  std::shared_ptr<Cluster> find(const std::string& name) const;
  std::vector<std::shared_ptr<Cluster>> clusters() const;
  bool declared_in_role_file(const std::string& name) const;

  MysqlConfig pending_;
  MysqlConfig live_;
  ModuleContext* context_ = nullptr;
  WorkerPool* workers_ = nullptr;
  std::shared_ptr<Shared> shared_;
  metrics::CollectorHandle metrics_;
  std::unique_ptr<LocalServer> local_;  // with modules.mysql.local, on any node
  metrics::CollectorHandle local_metrics_;
  bool running_ = false;
};

}  // namespace neco::mysql
