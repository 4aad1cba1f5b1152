// The mysql module class (see mysql_module.hpp): role-file section, one ClusterLoop per cluster
// on the leader with its memory in the store, operator pause and switchover, admin routes and
// metrics.
#include "modules/mysql/mysql_module.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <sstream>

#include "agent/http/request.hpp"
#include "agent/http/response.hpp"
#include "agent/log/log.hpp"
#include "agent/module/context.hpp"
#include "agent/module/registry.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "agent/store/election.hpp"
#include "agent/store/store.hpp"
#include "modules/mysql/cluster_loop.hpp"

namespace neco::mysql {

using nlohmann::json;

namespace {

std::string check_name(const std::string& n) {
  return n.empty() ? "must not be empty" : std::string();
}

Expected<std::string> read_secret(const std::string& file, const std::string& field) {
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

std::int64_t ms(config::Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

}  // namespace

std::string memory_key(const std::string& cluster) {
  return "/neco/mysql/clusters/" + cluster + "/memory";
}
std::string paused_key(const std::string& cluster) {
  return "/neco/mysql/clusters/" + cluster + "/paused";
}
std::string last_failover_key(const std::string& cluster) {
  return "/neco/mysql/clusters/" + cluster + "/last_failover";
}

const config::Schema<MysqlConfig>& mysql_schema() {
  static const auto schema = [] {
    const config::Duration one_ms = std::chrono::milliseconds(1);
    config::Schema<InstanceSection> inst;
    inst.field("name", &InstanceSection::name, "instance name, unique in the cluster",
               {.required = true, .check = check_name});
    inst.field("host", &InstanceSection::host,
               "host the replicas (and, without admin_host, the controller) connect to",
               {.required = true, .check = check_name});
    inst.field("port", &InstanceSection::port, "TCP port", {.min = 1, .max = 65535});
    inst.field("primary", &InstanceSection::primary,
               "the declared primary (exactly one; used until the store remembers another)");
    inst.field("admin_host", &InstanceSection::admin_host,
               "host the controller connects to, e.g. on a management network or through a "
               "proxy (default: host; replicas always use host)",
               {.check = check_name});
    inst.field("admin_port", &InstanceSection::admin_port,
               "TCP port the controller connects to (default: port)", {.min = 1, .max = 65535});
    config::Schema<CredentialsSection> cred;
    cred.field("admin_user", &CredentialsSection::admin_user,
               "user the controller connects as (SUPER/ALL)", {.required = true});
    cred.field("admin_password_file", &CredentialsSection::admin_password_file,
               "file holding its password (read at start)", {.required = true});
    cred.field("repl_user", &CredentialsSection::repl_user,
               "user replicas replicate as (REPLICATION SLAVE)", {.required = true});
    cred.field("repl_password_file", &CredentialsSection::repl_password_file,
               "file holding its password (read at start)", {.required = true});
    config::Schema<PolicySection> pol;
    pol.field("failover", &PolicySection::failover, "replace a failed primary automatically");
    pol.field("replica_silence", &PolicySection::replica_silence,
              "a replica receiving nothing (not even heartbeats) this long lost its primary",
              {.min = one_ms});
    pol.field("failure_confirm", &PolicySection::failure_confirm,
              "the primary must look failed this long before failover", {.min = one_ms});
    pol.field("relay_apply_timeout", &PolicySection::relay_apply_timeout,
              "one wait for the candidate to apply its relay log", {.min = one_ms});
    pol.field("kill_grace", &PolicySection::kill_grace,
              "switchover: clients of the old primary get this long", {.min = config::Duration(0)});
    pol.field("catchup_timeout", &PolicySection::catchup_timeout,
              "switchover: one wait for the target to catch up", {.min = one_ms});
    pol.field("connect_timeout", &PolicySection::connect_timeout,
              "controller to instance connect timeout (whole seconds)",
              {.min = std::chrono::seconds(1)});
    pol.field("read_timeout", &PolicySection::read_timeout,
              "controller to instance reply timeout (whole seconds)",
              {.min = std::chrono::seconds(1)});
    pol.field("anti_flap_window", &PolicySection::anti_flap_window,
              "after an automatic failover the next one waits this long unless an operator acts",
              {.min = config::Duration(0)});
    config::Schema<ClusterSection> cl;
    cl.field("name", &ClusterSection::name, "cluster name",
             {.required = true, .check = check_name});
    cl.list("instances", &ClusterSection::instances, inst, "the cluster's MariaDB instances");
    cl.section("credentials", &ClusterSection::credentials, cred, "how to connect");
    cl.section("policy", &ClusterSection::policy, pol, "failure detection and failover");
    config::Schema<MysqlConfig> s;
    s.field("interval", &MysqlConfig::interval, "pause between a cluster's turns",
            {.min = std::chrono::milliseconds(100)});
    s.list("clusters", &MysqlConfig::clusters, cl, "MariaDB clusters the leader manages");
    return s;
  }();
  return schema;
}

Expected<ClusterSpec> cluster_spec(const ClusterSection& section, const std::string& path) {
  ClusterSpec spec;
  spec.name = section.name;
  for (const auto& i : section.instances) {
    spec.instances.push_back(InstanceSpec{.name = i.name,
                                          .host = i.host,
                                          .port = static_cast<std::uint16_t>(i.port),
                                          .primary = i.primary,
                                          .admin_host = i.admin_host,
                                          .admin_port = static_cast<std::uint16_t>(i.admin_port)});
  }
  const auto& p = section.policy;
  spec.policy.failover = p.failover;
  spec.policy.replica_silence = p.replica_silence;
  spec.policy.failure_confirm = p.failure_confirm;
  spec.policy.relay_apply_timeout = p.relay_apply_timeout;
  spec.policy.kill_grace = p.kill_grace;
  spec.policy.catchup_timeout = p.catchup_timeout;
  spec.policy.connect_timeout = std::chrono::duration_cast<std::chrono::seconds>(p.connect_timeout);
  spec.policy.read_timeout = std::chrono::duration_cast<std::chrono::seconds>(p.read_timeout);
  if (auto ok = validate(spec); !ok) {
    return fail(Errc::invalid_argument, path + ": " + ok.error().message);
  }
  return spec;
}

Expected<MysqlConfig> parse_config(const config::Section& section) {
  MysqlConfig c;
  if (auto ok = section.read(mysql_schema(), c); !ok) return std::unexpected(ok.error());
  for (std::size_t i = 0; i < c.clusters.size(); ++i) {
    const std::string at = fmt::format("{}.clusters[{}]", section.path(), i);
    if (auto spec = cluster_spec(c.clusters[i], at); !spec) return std::unexpected(spec.error());
    for (std::size_t j = 0; j < i; ++j) {
      if (c.clusters[j].name == c.clusters[i].name) {
        return fail(Errc::invalid_argument,
                    fmt::format("{}.name: \"{}\" is also clusters[{}]", at, c.clusters[i].name, j));
      }
    }
  }
  return c;
}

// One managed cluster. The loop thread writes status and stored memory; routes and metrics read
// them under `mutex`.
struct MysqlModule::Cluster {
  ClusterSpec spec;
  Access access;
  std::int64_t anti_flap_ms = 0;
  std::atomic<bool> active{false};  // false: the gate refuses (stopping or not the leader)

  mutable std::mutex mutex;
  json status;                                   // what GET clusters/{name} answers on the leader
  ClusterMemory stored;                          // the memory as last written to the store
  std::uint64_t failovers_seen = 0;              // memory.failovers when the last one was timed
  std::optional<std::int64_t> last_failover_ms;  // anti-flap: last automatic failover
  bool paused = false;

  std::unique_ptr<ClusterLoop> loop;  // on the leader only
};

namespace {

log::Logger& logger() {
  static log::Logger l("mysql");
  return l;
}

Expected<void> put_fenced(store::Election& el, const std::string& key, const std::string& value) {
  store::Txn t;
  t.success.push_back(store::Op::make_put(key, value));
  auto r = el.fenced_txn(t);
  if (!r) return std::unexpected(r.error());
  return {};
}

Expected<void> delete_fenced(store::Election& el, const std::string& key) {
  store::Txn t;
  t.success.push_back(store::Op::make_delete(store::KeyRange::exact(key)));
  auto r = el.fenced_txn(t);
  if (!r) return std::unexpected(r.error());
  return {};
}

// The value of `key`, nullopt when absent.
Expected<std::optional<std::string>> get_optional(store::Store& s, const std::string& key) {
  auto kv = s.get(key);
  if (kv) return std::optional<std::string>(kv->value);
  if (kv.error().code == Errc::not_found) return std::optional<std::string>();
  return std::unexpected(kv.error());
}

bool replicates_from(const InstanceStatus& st, const InstanceSpec& primary) {
  for (const auto& r : st.replication) {
    if (r.connection_name.empty() && r.master_host == primary.host &&
        r.master_port == primary.port && r.io_running == "Yes" && r.sql_running) {
      return true;
    }
  }
  return false;
}

json status_json(const ClusterSpec& spec, const RunResult& result, const ClusterMemory& memory,
                 bool paused) {
  const auto& d = result.decision;
  json replicas = json::array();
  json ready = json::array();
  json lag = json::object();
  // The decision's primary, or while it is unknown (failed, refused failover) the instance the
  // memory says holds the role.
  const std::string current = !d.primary.empty()        ? d.primary
                              : !memory.primary.empty() ? memory.primary
                                                        : spec.declared_primary();
  const InstanceSpec* primary = spec.find(current);
  for (const auto& i : spec.instances) {
    const auto* o = result.observation.find(i.name);
    if (o != nullptr && o->status) {
      std::optional<std::uint64_t> behind;
      for (const auto& r : o->status->replication) {
        if (r.connection_name.empty()) behind = r.seconds_behind_master;
      }
      lag[i.name] = behind ? json(*behind) : json(nullptr);
    }
    if (i.name == current) continue;
    replicas.push_back(i.name);
    const bool errant = std::find(d.errant.begin(), d.errant.end(), i.name) != d.errant.end();
    if (primary != nullptr && o != nullptr && o->status && !errant &&
        replicates_from(*o->status, *primary)) {
      ready.push_back(i.name);
    }
  }
  const auto& op = d.operation;
  json last = {{"kind", std::string(kind(op))},
               {"description", describe(op)},
               {"duration_ms", result.operation_time.count()},
               {"error", result.error ? json(result.error->message) : json(nullptr)}};
  return json{{"name", spec.name},
              {"state", std::string(to_string(d.state))},
              {"primary", current},
              {"replicas", replicas},
              {"ready_replicas", ready},
              {"errant_replicas", d.errant},
              {"reason", d.reason},
              {"last_operation", last},
              {"paused", paused},
              {"failovers", memory.failovers},
              {"switchovers", memory.switchovers},
              {"lag_seconds", lag},
              {"updated_ms", result.observation.now_ms},
              {"leader", true}};
}

}  // namespace

MysqlModule::MysqlModule() = default;
MysqlModule::~MysqlModule() {
  stop();
}

Expected<void> MysqlModule::configure(const config::Section& section) {
  auto c = parse_config(section);
  if (!c) return std::unexpected(c.error());
  pending_ = std::move(*c);
  return {};
}

std::shared_ptr<MysqlModule::Cluster> MysqlModule::find(const std::string& name) const {
  for (const auto& c : clusters_) {
    if (c->spec.name == name) return c;
  }
  return nullptr;
}

Expected<void> MysqlModule::start(ModuleContext& context) {
  if (!pending_.clusters.empty() && (!context.core().controller || context.store() == nullptr)) {
    return fail(Errc::failed_precondition,
                "modules.mysql.clusters: MariaDB clusters are managed by the controllers (the "
                "leader keeps their memory in the store); set controller: true or remove them");
  }
  std::vector<std::shared_ptr<Cluster>> clusters;
  for (std::size_t i = 0; i < pending_.clusters.size(); ++i) {
    const auto& s = pending_.clusters[i];
    const std::string at = fmt::format("modules.mysql.clusters[{}]", i);
    auto spec = cluster_spec(s, at);
    if (!spec) return std::unexpected(spec.error());
    auto c = std::make_shared<Cluster>();
    c->spec = std::move(*spec);
    c->anti_flap_ms = ms(s.policy.anti_flap_window);
    c->access.admin_user = s.credentials.admin_user;
    c->access.repl_user = s.credentials.repl_user;
    auto admin =
        read_secret(s.credentials.admin_password_file, at + ".credentials.admin_password_file");
    if (!admin) return std::unexpected(admin.error());
    auto repl =
        read_secret(s.credentials.repl_password_file, at + ".credentials.repl_password_file");
    if (!repl) return std::unexpected(repl.error());
    c->access.admin_password = std::move(*admin);
    c->access.repl_password = std::move(*repl);
    c->status = json{{"name", c->spec.name}, {"state", "unknown"}, {"leader", false}};
    clusters.push_back(std::move(c));
  }
  live_ = pending_;
  context_ = &context;
  workers_ = &context.workers();
  clusters_ = std::move(clusters);
  metrics_ = context.metrics().add_collector([this](std::vector<metrics::MetricFamily>& out) {
    auto family = [&](const char* name, const char* help, metrics::MetricType type) {
      auto& f = out.emplace_back();
      f.name = name;
      f.help = help;
      f.type = type;
      return out.size() - 1;
    };
    const auto g = metrics::MetricType::gauge;
    const auto state = family("neco_mysql_cluster_state", "1 for the cluster's current state", g);
    const auto primary = family("neco_mysql_primary_info", "1 for the current primary", g);
    const auto replicas = family("neco_mysql_replicas", "replicas of the cluster", g);
    const auto ready = family("neco_mysql_ready_replicas", "replicas replicating from it", g);
    const auto errant = family("neco_mysql_errant_replicas", "replicas with errant GTIDs", g);
    const auto fo =
        family("neco_mysql_failovers_total", "completed failovers", metrics::MetricType::counter);
    const auto so = family("neco_mysql_switchovers_total", "completed switchovers",
                           metrics::MetricType::counter);
    const auto dur =
        family("neco_mysql_last_operation_duration_seconds", "how long the last operation took", g);
    const auto lag = family("neco_mysql_replication_lag_seconds",
                            "Seconds_Behind_Master of each replicating instance", g);
    static constexpr std::string_view kStates[] = {"healthy",      "degraded",       "suspect",
                                                   "failing_over", "switching_over", "failed",
                                                   "split_brain",  "lost",           "unknown"};
    for (const auto& c : clusters_) {
      json st;
      {
        const std::lock_guard lock(c->mutex);
        st = c->status;
      }
      const std::string& name = c->spec.name;
      const std::string cur = st.value("state", "unknown");
      for (auto s : kStates) {
        out[state].add(s == cur ? 1.0 : 0.0, {{"cluster", name}, {"state", s}});
      }
      if (!st.contains("primary")) continue;  // not the leader: nothing observed
      const std::string p = st.value("primary", "");
      if (!p.empty()) out[primary].add(1.0, {{"cluster", name}, {"instance", p}});
      out[replicas].add(static_cast<double>(st["replicas"].size()), {{"cluster", name}});
      out[ready].add(static_cast<double>(st["ready_replicas"].size()), {{"cluster", name}});
      out[errant].add(static_cast<double>(st["errant_replicas"].size()), {{"cluster", name}});
      out[fo].add(st.value("failovers", 0.0), {{"cluster", name}});
      out[so].add(st.value("switchovers", 0.0), {{"cluster", name}});
      out[dur].add(st["last_operation"].value("duration_ms", 0.0) / 1000.0, {{"cluster", name}});
      for (const auto& [inst, v] : st["lag_seconds"].items()) {
        if (v.is_number()) out[lag].add(v.get<double>(), {{"cluster", name}, {"instance", inst}});
      }
    }
  });
  running_ = true;
  if (auto* el = context.election(); el != nullptr && el->current().is_leader) {
    on_leader(el->current().term);
  }
  return {};
}

void MysqlModule::on_leader(std::int64_t term) {
  stop_loops();
  if (context_ == nullptr || context_->election() == nullptr || context_->store() == nullptr) {
    return;
  }
  store::Store* st = context_->store();
  store::Election* el = context_->election();
  const auto period = std::chrono::duration_cast<std::chrono::milliseconds>(live_.interval);
  for (const auto& c : clusters_) {
    auto text = get_optional(*st, memory_key(c->spec.name));
    auto last = get_optional(*st, last_failover_key(c->spec.name));
    ClusterMemory memory;
    std::string problem;
    if (!text || !last) {
      problem = "reading its memory from the store: " + (!text ? text : last).error().message;
    } else if (text->has_value()) {
      auto m = memory_from_json(**text);
      if (!m) {
        problem = "its memory in the store is unreadable: " + m.error().message;
      } else {
        memory = std::move(*m);
      }
    }
    if (!problem.empty()) {
      logger().error("cluster {}: not managed: {}", c->spec.name, problem);
      const std::lock_guard lock(c->mutex);
      c->status = json{{"name", c->spec.name}, {"state", "unknown"}, {"reason", problem}};
      continue;
    }
    {
      const std::lock_guard lock(c->mutex);
      c->stored = memory;
      c->failovers_seen = memory.failovers;
      c->last_failover_ms.reset();
      if (last->has_value()) {
        try {
          c->last_failover_ms = std::stoll(**last);
        } catch (const std::exception&) {
          c->last_failover_ms.reset();
        }
      }
    }
    c->active.store(true);
    Cluster* cp = c.get();
    auto gate = [cp, st, el](const Decision& d, const ClusterMemory& before) -> Expected<void> {
      if (!cp->active.load()) return fail(Errc::cancelled, "not the leader any more");
      auto paused = get_optional(*st, paused_key(cp->spec.name));
      if (!paused) return std::unexpected(paused.error());
      const bool acts = !std::holds_alternative<op::None>(d.operation);
      {
        const std::lock_guard lock(cp->mutex);
        cp->paused = paused->has_value();
        if (cp->paused) {
          if (!acts) return fail(Errc::failed_precondition, "clustering stopped by an operator");
          return fail(Errc::failed_precondition,
                      "clustering stopped by an operator: not doing " + describe(d.operation));
        }
        const bool starts_failover = !before.failover && d.memory.failover;
        if (starts_failover && cp->last_failover_ms &&
            wall_clock_ms() - *cp->last_failover_ms < cp->anti_flap_ms) {
          return fail(Errc::failed_precondition,
                      fmt::format("anti-flap: the last automatic failover was {} s ago; the next "
                                  "waits {} s (a switchover or start-clustering clears this)",
                                  (wall_clock_ms() - *cp->last_failover_ms) / 1000,
                                  cp->anti_flap_ms / 1000));
        }
        if (!acts && d.memory == cp->stored) return {};
      }
      // Before the operation: a crash from here on is redone by the next leader.
      if (auto ok = put_fenced(*el, memory_key(cp->spec.name), to_json(d.memory)); !ok) {
        cp->active.store(false);
        return fail(ok.error().code, "storing the memory before acting: " + ok.error().message);
      }
      const std::lock_guard lock(cp->mutex);
      cp->stored = d.memory;
      return {};
    };
    auto observer = [cp, el](const RunResult& result, const ClusterMemory& after) {
      bool store_memory = false;
      bool new_failover = false;
      {
        const std::lock_guard lock(cp->mutex);
        store_memory = cp->active.load() && after != cp->stored;
        new_failover = after.failovers > cp->failovers_seen;
        cp->failovers_seen = after.failovers;
        cp->status = status_json(cp->spec, result, after, cp->paused);
        if (cp->paused && !result.error) cp->status["paused"] = true;
      }
      if (result.error && result.error->code != Errc::failed_precondition) {
        logger().warning("cluster {}: {}: {}", cp->spec.name, describe(result.decision.operation),
                         result.error->message);
      } else if (!std::holds_alternative<op::None>(result.decision.operation) && !result.error) {
        logger().info("cluster {}: {} done in {} ms ({})", cp->spec.name,
                      describe(result.decision.operation), result.operation_time.count(),
                      result.decision.reason);
      }
      if (!store_memory && !new_failover) return;
      if (store_memory) {
        if (auto ok = put_fenced(*el, memory_key(cp->spec.name), to_json(after)); !ok) {
          logger().warning("cluster {}: storing the memory: {}", cp->spec.name, ok.error().message);
          return;
        }
      }
      const auto now = wall_clock_ms();
      if (new_failover) {
        if (auto ok = put_fenced(*el, last_failover_key(cp->spec.name), std::to_string(now)); !ok) {
          logger().warning("cluster {}: storing the failover time: {}", cp->spec.name,
                           ok.error().message);
        }
      }
      const std::lock_guard lock(cp->mutex);
      cp->stored = after;
      if (new_failover) cp->last_failover_ms = now;
    };
    logger().info("cluster {}: managing (term {}, primary {})", c->spec.name, term,
                  memory.primary.empty() ? c->spec.declared_primary() : memory.primary);
    c->loop = std::make_unique<ClusterLoop>(c->spec, c->access, std::move(memory), period,
                                            std::move(observer), std::move(gate));
  }
}

void MysqlModule::on_follower() {
  stop_loops();
}

void MysqlModule::stop_loops() {
  // Refuse first (a turn in progress acts no more), then join: a turn is bounded by the
  // instances' timeouts.
  for (const auto& c : clusters_)
    c->active.store(false);
  for (const auto& c : clusters_) {
    if (c->loop) c->loop->stop();
    c->loop.reset();
    const std::lock_guard lock(c->mutex);
    c->status["leader"] = false;
  }
}

void MysqlModule::stop() {
  stop_loops();
  metrics_.reset();
  clusters_.clear();
  workers_ = nullptr;
  context_ = nullptr;
  running_ = false;
}

Health MysqlModule::health() const {
  if (!running_) return {HealthState::stopped, ""};
  for (const auto& c : clusters_) {
    const std::lock_guard lock(c->mutex);
    const std::string s = c->status.value("state", "unknown");
    if (s == "failed" || s == "split_brain" || s == "lost") {
      return {HealthState::degraded, fmt::format("cluster {} is {}", c->spec.name, s)};
    }
  }
  return {HealthState::healthy, ""};
}

json MysqlModule::effective_config() const {
  return mysql_schema().dump(live_);
}

namespace {

// The status of a cluster as a non-leader knows it: the stored memory and pause flag.
Expected<json> stored_status(store::Store& st, const std::string& name, const std::string& leader) {
  auto memory = get_optional(st, memory_key(name));
  if (!memory) return std::unexpected(memory.error());
  auto paused = get_optional(st, paused_key(name));
  if (!paused) return std::unexpected(paused.error());
  json j{{"name", name},
         {"state", "unknown"},
         {"leader", false},
         {"leader_name", leader},
         {"paused", paused->has_value()},
         {"reason", leader.empty()
                        ? "no leader known"
                        : "this controller does not run the cluster; " + leader + " leads"}};
  if (memory->has_value()) {
    auto m = memory_from_json(**memory);
    if (m) {
      j["primary"] = m->primary;
      j["failovers"] = m->failovers;
      j["switchovers"] = m->switchovers;
    }
  }
  return j;
}

Expected<json> cluster_status(MysqlModule::Cluster& c, store::Store* st, store::Election* el) {
  {
    const std::lock_guard lock(c.mutex);
    if (c.loop) return c.status;
  }
  if (st == nullptr) return fail(Errc::unavailable, "no store here");
  const std::string leader = el != nullptr ? el->current().leader : "";
  return stored_status(*st, c.spec.name, leader);
}

}  // namespace

void MysqlModule::add_routes(ModuleRoutes& routes) {
  using http::Request;
  using http::Response;
  using Awaitable = boost::asio::awaitable<Response>;
  const auto timeout = std::chrono::seconds(30);
  (void)routes.add("clusters", "the managed MariaDB clusters and their state",
                   [this, timeout](Request&) -> Awaitable {
                     if (workers_ == nullptr || context_ == nullptr) {
                       co_return http::error_response({Errc::unavailable, "mysql not running"});
                     }
                     auto clusters = clusters_;
                     auto* st = context_->store();
                     auto* el = context_->election();
                     auto job = [clusters, st, el]() -> Expected<json> {
                       json out = json::array();
                       for (const auto& c : clusters) {
                         auto s = cluster_status(*c, st, el);
                         if (!s) return std::unexpected(s.error());
                         out.push_back(std::move(*s));
                       }
                       return json{{"clusters", out}};
                     };
                     auto r = co_await workers_->run(std::move(job), timeout);
                     if (!r) co_return http::error_response(r.error());
                     co_return Response::json(*r);
                   });
  (void)routes.add(
      "clusters/{name}", "one cluster's state", [this, timeout](Request& req) -> Awaitable {
        const std::string name(req.path_param("name").value_or(""));
        auto c = find(name);
        if (!c || workers_ == nullptr || context_ == nullptr) {
          co_return http::error_response({Errc::not_found, "no cluster \"" + name + "\""});
        }
        auto* st = context_->store();
        auto* el = context_->election();
        auto job = [c, st, el]() -> Expected<json> { return cluster_status(*c, st, el); };
        auto r = co_await workers_->run(std::move(job), timeout);
        if (!r) co_return http::error_response(r.error());
        co_return Response::json(*r);
      });
  (void)routes.add(
      "clusters/{name}/switchover", "planned switchover: {\"to\": INSTANCE} (optional)",
      [this, timeout](Request& req) -> Awaitable {
        const std::string name(req.path_param("name").value_or(""));
        auto c = find(name);
        if (!c || workers_ == nullptr || context_ == nullptr) {
          co_return http::error_response({Errc::not_found, "no cluster \"" + name + "\""});
        }
        std::string to;
        if (!req.body.empty()) {
          auto body = json::parse(req.body, nullptr, false);
          if (body.is_discarded() || !body.is_object() ||
              (body.contains("to") && !body["to"].is_string())) {
            co_return http::error_response(
                {Errc::invalid_argument, "body: expected {\"to\": \"INSTANCE\"}"});
          }
          to = body.value("to", "");
        }
        auto* el = context_->election();
        auto job = [c, el, to]() -> Expected<json> {
          if (el == nullptr || !c->loop) {
            const std::string leader = el != nullptr ? el->current().leader : "";
            return fail(Errc::unavailable,
                        "this controller does not run the cluster" +
                            (leader.empty() ? std::string() : "; ask the leader, " + leader));
          }
          std::string target = to;
          auto ok = c->loop->update([&](ClusterMemory& m) -> Expected<void> {
            if (target.empty()) {
              const std::lock_guard lock(c->mutex);
              const auto& ready = c->status.value("ready_replicas", json::array());
              if (ready.empty()) {
                return fail(Errc::failed_precondition, "no ready replica to switch over to");
              }
              target = ready.front().get<std::string>();
            }
            ClusterMemory next = m;
            if (auto r = request_switchover(c->spec, next, target, wall_clock_ms()); !r) return r;
            if (auto r = put_fenced(*el, memory_key(c->spec.name), to_json(next)); !r) return r;
            if (auto r = delete_fenced(*el, last_failover_key(c->spec.name)); !r) return r;
            const std::lock_guard lock(c->mutex);
            c->stored = next;
            c->last_failover_ms.reset();
            m = std::move(next);
            return {};
          });
          if (!ok) return std::unexpected(ok.error());
          return json{{"cluster", c->spec.name}, {"switchover_to", target}};
        };
        auto r = co_await workers_->run(std::move(job), timeout);
        if (!r) co_return http::error_response(r.error());
        co_return Response::json(*r, http::Status::accepted);
      },
      true);
  for (const bool pause : {true, false}) {
    (void)routes.add(
        pause ? "clusters/{name}/stop-clustering" : "clusters/{name}/start-clustering",
        pause ? "stop acting on the cluster (observe and report only)"
              : "resume acting on the cluster; clears the anti-flap wait",
        [this, timeout, pause](Request& req) -> Awaitable {
          const std::string name(req.path_param("name").value_or(""));
          auto c = find(name);
          if (!c || workers_ == nullptr || context_ == nullptr || context_->store() == nullptr) {
            co_return http::error_response({Errc::not_found, "no cluster \"" + name + "\""});
          }
          auto* st = context_->store();
          auto job = [c, st, pause]() -> Expected<json> {
            store::Txn t;
            if (pause) {
              t.success.push_back(
                  store::Op::make_put(paused_key(c->spec.name), std::to_string(wall_clock_ms())));
            } else {
              t.success.push_back(
                  store::Op::make_delete(store::KeyRange::exact(paused_key(c->spec.name))));
              t.success.push_back(
                  store::Op::make_delete(store::KeyRange::exact(last_failover_key(c->spec.name))));
            }
            if (auto r = st->txn(t); !r) return std::unexpected(r.error());
            const std::lock_guard lock(c->mutex);
            c->paused = pause;
            c->status["paused"] = pause;
            if (!pause) c->last_failover_ms.reset();
            return json{{"cluster", c->spec.name}, {"paused", pause}};
          };
          auto r = co_await workers_->run(std::move(job), timeout);
          if (!r) co_return http::error_response(r.error());
          co_return Response::json(*r);
        },
        true);
  }
}

}  // namespace neco::mysql

NECO_REGISTER_MODULE(mysql, neco::mysql::MysqlModule);
