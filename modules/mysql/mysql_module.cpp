// The mysql module class (see mysql_module.hpp): role-file section, one ClusterLoop per cluster
// on the leader with its memory in the store, operator pause and switchover, admin routes and
// metrics.
#include "modules/mysql/mysql_module.hpp"

#include <fmt/format.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <algorithm>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
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
#include "modules/mysql/api_clusters.hpp"
#include "modules/mysql/cluster_loop.hpp"

namespace neco::mysql {

using nlohmann::json;

namespace {

std::string check_name(const std::string& n) {
  return n.empty() ? "must not be empty" : std::string();
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

const config::Schema<ClusterSection>& cluster_schema() {
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
               "proxy (empty or absent: host; replicas always use host)");
    // 0 and "" mean "absent", so a dumped definition (the API stores one) parses back.
    inst.field("admin_port", &InstanceSection::admin_port,
               "TCP port the controller connects to (0 or absent: port)", {.min = 0, .max = 65535});
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
    return cl;
  }();
  return schema;
}

const config::Schema<MysqlConfig>& mysql_schema() {
  static const auto schema = [] {
    config::Schema<MysqlConfig> s;
    s.field("interval", &MysqlConfig::interval, "pause between a cluster's turns",
            {.min = std::chrono::milliseconds(100)});
    s.list("clusters", &MysqlConfig::clusters, cluster_schema(),
           "MariaDB clusters the leader manages");
    s.section("local", &MysqlConfig::local, local_schema(),
              "this node's own mariadbd: option file, optional start, health");
    return s;
  }();
  return schema;
}

Expected<Access> read_access(const CredentialsSection& credentials, const std::string& path) {
  Access access;
  access.admin_user = credentials.admin_user;
  access.repl_user = credentials.repl_user;
  auto admin = read_password_file(credentials.admin_password_file, path + ".admin_password_file");
  if (!admin) return std::unexpected(admin.error());
  auto repl = read_password_file(credentials.repl_password_file, path + ".repl_password_file");
  if (!repl) return std::unexpected(repl.error());
  access.admin_password = std::move(*admin);
  access.repl_password = std::move(*repl);
  return access;
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
  if (section.node().IsMap() && section.node()["local"].IsDefined()) {
    c.local.present = true;
    auto local = local_spec(c.local, section.path() + ".local");
    if (!local) return std::unexpected(local.error());
  }
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

  std::shared_ptr<ClusterLoop> loop;  // on the leader only; set and reset under `mutex`

  std::string source = "role";  // "role" (the role file) or "api" (a stored definition)
  std::string definition;       // an API cluster's stored definition text
  bool broken = false;          // not managed; `status` says why
};

// The loops' life cycle. Starting and stopping loops blocks (store reads, joining a turn), so
// it runs as jobs on the worker pool, one at a time (`lifecycle`). Each leadership change bumps
// `epoch`; a job of an older epoch does nothing, so the newest on_leader/on_follower decides
// what runs, and a cluster's loop is always stopped before another is started for it.
struct MysqlModule::Shared {
  store::Store* store = nullptr;
  store::Election* election = nullptr;
  WorkerPool* workers = nullptr;
  boost::asio::any_io_executor executor;
  std::chrono::milliseconds period{1000};
  std::vector<std::string> role_names;  // the role file's clusters (they win a name clash)

  std::atomic<std::uint64_t> epoch{0};
  std::atomic<std::int64_t> term{0};
  std::atomic<bool> resync_queued{false};  // a job following the definitions is queued
  std::atomic<bool> watch_broken{false};   // the watch ended: the next job watches again

  std::mutex lifecycle;                 // held by the job starting or stopping loops
  std::unique_ptr<store::Watch> watch;  // the leader's watch on the definitions (lifecycle)

  mutable std::mutex mutex;                        // guards `clusters`
  std::vector<std::shared_ptr<Cluster>> clusters;  // the role file's, then the API's (leader)

  std::vector<std::shared_ptr<Cluster>> snapshot() const {
    const std::lock_guard lock(mutex);
    return clusters;
  }
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
  json ready = json::array();  // the one that has applied most first
  std::optional<GtidPosition> best_applied;
  json lag = json::object();
  json unreachable = json::object();  // instance -> why it could not be read
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
    } else if (o != nullptr) {
      unreachable[i.name] = o->error;
    }
    if (i.name == current) continue;
    replicas.push_back(i.name);
    const bool errant = std::find(d.errant.begin(), d.errant.end(), i.name) != d.errant.end();
    if (primary != nullptr && o != nullptr && o->status && !errant &&
        replicates_from(*o->status, *primary)) {
      // The one that has applied most first: a switchover without a target picks it, so the
      // catch-up (while writes are blocked) is as short as it can be.
      const bool best = ready.empty() || ahead_of(o->status->gtid_current_pos, *best_applied);
      ready.insert(best ? ready.begin() : ready.end(), i.name);
      if (best) best_applied = o->status->gtid_current_pos;
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
              {"instance_errors", unreachable},
              {"updated_ms", result.observation.now_ms},
              {"leader", true}};
}

// Reads the cluster's memory from the store and starts its loop (on a worker, under
// sh.lifecycle: the reads block, and the cluster must have no loop running).
void start_loop(MysqlModule::Shared& sh, const std::shared_ptr<MysqlModule::Cluster>& c,
                std::uint64_t epoch) {
  store::Store* st = sh.store;
  store::Election* el = sh.election;
  const auto period = sh.period;
  const auto term = sh.term.load();
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
    return;
  }
  {
    const std::lock_guard lock(c->mutex);
    c->broken = false;
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
  if (sh.epoch.load() != epoch) return;  // not the leader any more: no new loop
  c->active.store(true);
  MysqlModule::Cluster* cp = c.get();
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
        return fail(
            Errc::failed_precondition,
            fmt::format("anti-flap: the last automatic failover was {} s ago; the next "
                        "waits {} s (a switchover or start-clustering clears this)",
                        (wall_clock_ms() - *cp->last_failover_ms) / 1000, cp->anti_flap_ms / 1000));
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
  auto loop = std::make_shared<ClusterLoop>(c->spec, c->access, std::move(memory), period,
                                            std::move(observer), std::move(gate));
  const std::lock_guard lock(c->mutex);
  c->loop = std::move(loop);
}

// Builds a managed cluster from a definition, reading its password files; errors name the
// field under `path`.
Expected<std::shared_ptr<MysqlModule::Cluster>> make_cluster(const ClusterSection& s,
                                                             const std::string& path) {
  auto spec = cluster_spec(s, path);
  if (!spec) return std::unexpected(spec.error());
  auto access = read_access(s.credentials, path + ".credentials");
  if (!access) return std::unexpected(access.error());
  auto c = std::make_shared<MysqlModule::Cluster>();
  c->spec = std::move(*spec);
  c->access = std::move(*access);
  c->anti_flap_ms = ms(s.policy.anti_flap_window);
  c->status = json{{"name", c->spec.name}, {"state", "unknown"}, {"leader", false}};
  return c;
}

// Stops a cluster's loop: the gate refuses at once, then the turn in progress is joined.
void stop_loop(MysqlModule::Cluster& c) {
  c.active.store(false);
  std::shared_ptr<ClusterLoop> loop;
  {
    const std::lock_guard lock(c.mutex);
    loop = std::move(c.loop);
    c.status["leader"] = false;
  }
  if (loop) loop->stop();
}

// A lifecycle job on the worker pool. A saturated pool refuses; the job is offered again
// (bounded) since a lost leadership change would leave loops running or missing.
boost::asio::awaitable<void> run_job(WorkerPool* workers, std::function<Expected<bool>()> job,
                                     std::string what) {
  constexpr int kAttempts = 60;
  for (int attempt = 1;; ++attempt) {
    auto r = co_await workers->run(job, std::chrono::minutes(5));
    if (r) co_return;
    if (r.error().code != Errc::unavailable || attempt == kAttempts) {
      logger().error("Failed to {}: {}", what, r.error().message);
      co_return;
    }
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    timer.expires_after(std::chrono::seconds(1));
    co_await timer.async_wait(boost::asio::use_awaitable);
  }
}

void schedule(const MysqlModule::Shared& sh, std::function<Expected<bool>()> job,
              std::string what) {
  boost::asio::co_spawn(sh.executor, run_job(sh.workers, std::move(job), std::move(what)),
                        boost::asio::detached);
}

Expected<bool> follow_definitions(const std::shared_ptr<MysqlModule::Shared>& sh,
                                  std::uint64_t epoch, bool restart);

// Called on a store thread for changes under the clusters prefix: only definitions matter.
void on_definitions_event(const std::weak_ptr<MysqlModule::Shared>& weak, std::uint64_t epoch,
                          const store::WatchResponse& r) {
  auto sh = weak.lock();
  if (!sh || sh->epoch.load() != epoch) return;
  bool relevant = r.error.has_value();
  for (const auto& ev : r.events)
    relevant = relevant || std::string_view(ev.kv.key).ends_with("/spec");
  if (!relevant) return;
  if (r.error) {
    logger().warning("The cluster definitions watch ended: {}; watching again", r.error->message);
    sh->watch_broken.store(true);
  }
  if (sh->resync_queued.exchange(true)) return;
  schedule(
      *sh, [sh, epoch] { return follow_definitions(sh, epoch, false); },
      "follow the API cluster definitions");
}

// The leader's job (under sh->lifecycle): with `restart`, stop every loop first (a new
// leadership); then load the stored definitions, stop the loops of deleted ones, restart changed
// ones with their new spec (the memory stays in the store), start new ones, start role-file
// clusters without a loop, and watch the definitions from the revision read.
Expected<bool> follow_definitions(const std::shared_ptr<MysqlModule::Shared>& sh,
                                  std::uint64_t epoch, bool restart) {
  const std::lock_guard life(sh->lifecycle);
  sh->resync_queued.store(false);
  if (sh->epoch.load() != epoch) return false;
  auto current = sh->snapshot();
  if (restart) {
    if (sh->watch) sh->watch->cancel();
    sh->watch.reset();
    for (const auto& c : current)
      stop_loop(*c);
  }
  auto defs = list_definitions(*sh->store);
  if (!defs) {
    logger().error("Failed to read the API cluster definitions: {}", defs.error().message);
  }
  std::vector<std::shared_ptr<MysqlModule::Cluster>> next;
  std::vector<std::shared_ptr<MysqlModule::Cluster>> fresh;  // to start
  for (const auto& c : current) {
    if (c->source == "role") {
      next.push_back(c);
      if (!c->loop) fresh.push_back(c);
    }
  }
  // A new leadership rebuilds every API cluster (its password files are read again).
  auto find_api = [&](const std::string& name) -> std::shared_ptr<MysqlModule::Cluster> {
    if (restart) return nullptr;
    for (const auto& c : current) {
      if (c->source == "api" && c->spec.name == name) return c;
    }
    return nullptr;
  };
  if (defs) {
    for (const auto& d : defs->definitions) {
      if (std::find(sh->role_names.begin(), sh->role_names.end(), d.name) != sh->role_names.end()) {
        continue;  // the role file's cluster of that name is the one managed
      }
      auto old = find_api(d.name);
      if (old && old->definition == d.text) {
        next.push_back(old);
        if (!old->loop && !old->broken) fresh.push_back(old);
        continue;
      }
      if (old) {
        logger().info("cluster {}: definition changed; restarting its loop", d.name);
        stop_loop(*old);
      }
      std::shared_ptr<MysqlModule::Cluster> c;
      auto section = parse_definition(d.text, d.name);
      auto made =
          section
              ? make_cluster(*section, "body")
              : Expected<std::shared_ptr<MysqlModule::Cluster>>(std::unexpected(section.error()));
      if (made) {
        c = std::move(*made);
        fresh.push_back(c);
      } else {
        const std::string problem = "its definition cannot be used: " + made.error().message;
        logger().error("cluster {}: not managed: {}", d.name, problem);
        c = std::make_shared<MysqlModule::Cluster>();
        c->spec.name = d.name;
        c->broken = true;
        c->status = json{{"name", d.name}, {"state", "unknown"}, {"reason", problem}};
      }
      c->source = "api";
      c->definition = d.text;
      next.push_back(std::move(c));
    }
    for (const auto& c : current) {
      if (c->source != "api") continue;
      const bool kept = std::any_of(next.begin(), next.end(), [&](const auto& n) {
        return n->source == "api" && n->spec.name == c->spec.name;
      });
      if (!kept) {
        logger().info("cluster {}: definition deleted; no longer managed", c->spec.name);
        stop_loop(*c);
      }
    }
  } else {
    for (const auto& c : current) {
      if (c->source == "api") next.push_back(c);  // keep what runs until a read succeeds
    }
  }
  {
    const std::lock_guard lock(sh->mutex);
    sh->clusters = next;
  }
  for (const auto& c : fresh) {
    if (sh->epoch.load() != epoch) return false;
    start_loop(*sh, c, epoch);
  }
  if (defs && (!sh->watch || sh->watch_broken.load())) {
    if (sh->watch) sh->watch->cancel();
    sh->watch.reset();
    sh->watch_broken.store(false);
    std::weak_ptr<MysqlModule::Shared> weak = sh;
    auto w = sh->store->watch(
        {store::KeyRange::prefix(clusters_prefix()), defs->revision + 1, false},
        [weak, epoch](const store::WatchResponse& r) { on_definitions_event(weak, epoch, r); });
    if (!w) {
      logger().error("Failed to watch the API cluster definitions: {}", w.error().message);
    } else {
      sh->watch = std::move(*w);
    }
  }
  return true;
}

// The follower's job: stop every loop; API clusters are then shown from the store.
Expected<bool> stop_all(const std::shared_ptr<MysqlModule::Shared>& sh, std::uint64_t epoch) {
  const std::lock_guard life(sh->lifecycle);
  if (sh->epoch.load() != epoch) return false;
  if (sh->watch) sh->watch->cancel();
  sh->watch.reset();
  auto current = sh->snapshot();
  for (const auto& c : current)
    stop_loop(*c);
  const std::lock_guard lock(sh->mutex);
  std::erase_if(sh->clusters, [](const auto& c) { return c->source == "api"; });
  return true;
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
  for (const auto& c : clusters()) {
    if (c->spec.name == name) return c;
  }
  return nullptr;
}

std::vector<std::shared_ptr<MysqlModule::Cluster>> MysqlModule::clusters() const {
  return shared_ ? shared_->snapshot() : std::vector<std::shared_ptr<Cluster>>{};
}

bool MysqlModule::declared_in_role_file(const std::string& name) const {
  return std::any_of(live_.clusters.begin(), live_.clusters.end(),
                     [&](const auto& c) { return c.name == name; });
}

Expected<void> MysqlModule::start(ModuleContext& context) {
  if (!pending_.clusters.empty() && (!context.core().controller || context.store() == nullptr)) {
    return fail(Errc::failed_precondition,
                "modules.mysql.clusters: MariaDB clusters are managed by the controllers (the "
                "leader keeps their memory in the store); set controller: true or remove them");
  }
  std::vector<std::shared_ptr<Cluster>> clusters;
  for (std::size_t i = 0; i < pending_.clusters.size(); ++i) {
    auto c = make_cluster(pending_.clusters[i], fmt::format("modules.mysql.clusters[{}]", i));
    if (!c) return std::unexpected(c.error());
    clusters.push_back(std::move(*c));
  }
  auto sh = std::make_shared<Shared>();
  sh->store = context.store();
  sh->election = context.election();
  sh->workers = &context.workers();
  sh->executor = context.executor();
  sh->period = std::chrono::duration_cast<std::chrono::milliseconds>(pending_.interval);
  for (const auto& c : pending_.clusters)
    sh->role_names.push_back(c.name);
  sh->clusters = std::move(clusters);
  live_ = pending_;
  context_ = &context;
  workers_ = &context.workers();
  shared_ = std::move(sh);
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
    for (const auto& c : this->clusters()) {
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
  if (live_.local.present) {
    auto spec = local_spec(live_.local, "modules.mysql.local");
    if (!spec) return std::unexpected(spec.error());
    auto local = std::make_unique<LocalServer>(std::move(*spec));
    if (auto ok = local->start(); !ok) return ok;
    local_ = std::move(local);
    local_metrics_ =
        context.metrics().add_collector([this](std::vector<metrics::MetricFamily>& out) {
          const LocalStatus s = local_->status();
          auto add = [&out](const char* name, const char* help, metrics::MetricType type,
                            double v) {
            auto& f = out.emplace_back();
            f.name = name;
            f.help = help;
            f.type = type;
            f.add(v);
          };
          const auto g = metrics::MetricType::gauge;
          add("neco_mysql_local_up", "1 when the local mariadbd answered the last health check", g,
              s.up ? 1 : 0);
          add("neco_mysql_local_read_only", "1 when the local mariadbd is read_only", g,
              s.up && s.read_only ? 1 : 0);
          add("neco_mysql_local_restarts_total", "times the agent started a mariadbd that had died",
              metrics::MetricType::counter, static_cast<double>(s.restarts));
          add("neco_mysql_local_replication_io_running",
              "1 when the local replica's IO thread is running", g, s.io_running == "Yes" ? 1 : 0);
          add("neco_mysql_local_replication_sql_running",
              "1 when the local replica's SQL thread is running", g, s.sql_running ? 1 : 0);
          add("neco_mysql_local_healthy", "1 when the local mariadbd has no problem", g,
              s.problem.empty() ? 1 : 0);
        });
  }
  running_ = true;
  if (auto* el = context.election(); el != nullptr && el->current().is_leader) {
    on_leader(el->current().term);
  }
  return {};
}

void MysqlModule::on_leader(std::int64_t term) {
  if (!shared_ || shared_->store == nullptr || shared_->election == nullptr) return;
  const auto epoch = shared_->epoch.fetch_add(1) + 1;
  shared_->term.store(term);
  auto sh = shared_;
  schedule(
      *sh, [sh, epoch] { return follow_definitions(sh, epoch, true); }, "start the cluster loops");
}

void MysqlModule::on_follower() {
  if (!shared_) return;
  const auto epoch = shared_->epoch.fetch_add(1) + 1;
  // Refuse at once (a turn in progress acts no more); the join happens on a worker.
  for (const auto& c : shared_->snapshot())
    c->active.store(false);
  auto sh = shared_;
  schedule(
      *sh, [sh, epoch] { return stop_all(sh, epoch); }, "stop the cluster loops");
}

void MysqlModule::stop() {
  if (shared_) {
    // The loops use the context's store: they end before stop returns (at most one turn).
    const auto epoch = shared_->epoch.fetch_add(1) + 1;
    for (const auto& c : shared_->snapshot())
      c->active.store(false);
    (void)stop_all(shared_, epoch);
    const std::lock_guard lock(shared_->mutex);
    shared_->clusters.clear();
  }
  // The manager thread stops; mariadbd keeps running (a restarted agent adopts it).
  local_metrics_.reset();
  if (local_) local_->stop();
  local_.reset();
  metrics_.reset();
  shared_.reset();
  workers_ = nullptr;
  context_ = nullptr;
  running_ = false;
}

Health MysqlModule::health() const {
  if (!running_) return {HealthState::stopped, ""};
  if (local_) {
    const LocalStatus s = local_->status();
    if (s.checked_at_ms != 0 && !s.problem.empty()) {
      return {HealthState::degraded, "local mariadbd: " + s.problem};
    }
  }
  for (const auto& c : clusters()) {
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
    if (c.loop || c.broken) {
      json j = c.status;
      j["source"] = c.source;
      return j;
    }
  }
  if (st == nullptr) return fail(Errc::unavailable, "no store here");
  const std::string leader = el != nullptr ? el->current().leader : "";
  auto j = stored_status(*st, c.spec.name, leader);
  if (j) (*j)["source"] = c.source;
  return j;
}

// Whether an API-created cluster of that name is stored.
Expected<bool> is_defined(store::Store* st, const std::string& name) {
  if (st == nullptr) return false;
  auto kv = st->get(spec_key(name));
  if (kv) return true;
  if (kv.error().code == Errc::not_found) return false;
  return std::unexpected(kv.error());
}

// An API cluster's status: its loop's on the leader, else what the store holds.
Expected<json> one_api_status(const std::vector<std::shared_ptr<MysqlModule::Cluster>>& clusters,
                              const std::string& name, store::Store* st, store::Election* el) {
  for (const auto& c : clusters) {
    if (c->source == "api" && c->spec.name == name) return cluster_status(*c, st, el);
  }
  const std::string leader = el != nullptr ? el->current().leader : "";
  auto j = stored_status(*st, name, leader);
  if (j) (*j)["source"] = "api";
  return j;
}

// Every cluster: the role file's, then the stored definitions (from the running loop on the
// leader, else from the store). `role_names` win a name clash.
Expected<json> all_status(const std::vector<std::shared_ptr<MysqlModule::Cluster>>& clusters,
                          const std::vector<std::string>& role_names, store::Store* st,
                          store::Election* el) {
  json out = json::array();
  for (const auto& c : clusters) {
    if (c->source != "role") continue;
    auto s = cluster_status(*c, st, el);
    if (!s) return std::unexpected(s.error());
    out.push_back(std::move(*s));
  }
  if (st != nullptr) {
    auto defs = list_definitions(*st);
    if (!defs) return std::unexpected(defs.error());
    for (const auto& d : defs->definitions) {
      if (std::find(role_names.begin(), role_names.end(), d.name) != role_names.end()) continue;
      auto s = one_api_status(clusters, d.name, st, el);
      if (!s) return std::unexpected(s.error());
      out.push_back(std::move(*s));
    }
  }
  return json{{"clusters", out}};
}

}  // namespace

void MysqlModule::add_routes(ModuleRoutes& routes) {
  using http::Request;
  using http::Response;
  using Awaitable = boost::asio::awaitable<Response>;
  const auto timeout = std::chrono::seconds(30);
  (void)routes.add(
      "local", "this node's own mariadbd: process, health, replication",
      [this](Request&) -> Awaitable {
        // A snapshot under a mutex: nothing blocks here.
        if (!local_) {
          co_return http::error_response(
              {Errc::not_found, "no local mariadbd is managed here (modules.mysql.local)"});
        }
        co_return Response::json(local_->status_json());
      });
  (void)routes.add("clusters", "the managed MariaDB clusters and their state",
                   [this, timeout](Request&) -> Awaitable {
                     if (workers_ == nullptr || context_ == nullptr) {
                       co_return http::error_response({Errc::unavailable, "mysql not running"});
                     }
                     auto clusters = this->clusters();
                     std::vector<std::string> role_names;
                     role_names.reserve(live_.clusters.size());
                     for (const auto& c : live_.clusters)
                       role_names.push_back(c.name);
                     auto* st = context_->store();
                     auto* el = context_->election();
                     auto job = [clusters, role_names, st, el]() -> Expected<json> {
                       return all_status(clusters, role_names, st, el);
                     };
                     auto r = co_await workers_->run(std::move(job), timeout);
                     if (!r) co_return http::error_response(r.error());
                     co_return Response::json(*r);
                   });
  (void)routes.add(
      "clusters/{name}", "one cluster's state", [this, timeout](Request& req) -> Awaitable {
        const std::string name(req.path_param("name").value_or(""));
        auto c = find(name);
        if (workers_ == nullptr || context_ == nullptr) {
          co_return http::error_response({Errc::not_found, "no cluster \"" + name + "\""});
        }
        auto* st = context_->store();
        auto* el = context_->election();
        auto clusters = this->clusters();
        const bool role = declared_in_role_file(name);
        auto job = [c, role, clusters, name, st, el]() -> Expected<json> {
          if (role && c) return cluster_status(*c, st, el);
          if (st != nullptr) {
            auto spec = st->get(spec_key(name));
            if (spec) return one_api_status(clusters, name, st, el);
            if (spec.error().code != Errc::not_found) return std::unexpected(spec.error());
          }
          return fail(Errc::not_found, "no cluster \"" + name + "\"");
        };
        auto r = co_await workers_->run(std::move(job), timeout);
        if (!r) co_return http::error_response(r.error());
        co_return Response::json(*r);
      });
  (void)routes.add(
      "clusters/{name}",
      "PUT creates or changes a cluster (a role-file clusters[] entry, JSON or YAML); DELETE "
      "removes an API-created cluster stopped by stop-clustering",
      [this, timeout](Request& req) -> Awaitable {
        const std::string name(req.path_param("name").value_or(""));
        if (req.method != http::Verb::put && req.method != http::Verb::delete_) {
          auto r = Response::error(http::Status::method_not_allowed, "method_not_allowed",
                                   "clusters/{name} takes GET, HEAD, PUT and DELETE");
          r.headers.emplace_back("Allow", "GET, HEAD, PUT, DELETE");
          co_return r;
        }
        if (workers_ == nullptr || context_ == nullptr || context_->store() == nullptr) {
          co_return http::error_response(
              {Errc::unavailable, "no store here: clusters are created on the controllers"});
        }
        if (declared_in_role_file(name)) {
          co_return http::error_response(
              {Errc::already_exists,
               fmt::format("cluster \"{}\" is declared in the role file (modules.mysql.clusters); "
                           "change or remove it there",
                           name)});
        }
        auto* st = context_->store();
        if (req.method == http::Verb::delete_) {
          auto job = [st, name]() -> Expected<json> {
            if (auto ok = delete_definition(*st, name); !ok) return std::unexpected(ok.error());
            return json{{"cluster", name}, {"deleted", true}};
          };
          auto r = co_await workers_->run(std::move(job), timeout);
          if (!r) co_return http::error_response(r.error());
          logger().info("cluster {}: deleted through the admin API", name);
          co_return Response::json(*r);
        }
        auto job = [st, name, body = req.body]() -> Expected<json> {
          auto section = parse_definition(body, name);
          if (!section) return std::unexpected(section.error());
          // The password files must be readable now, not only when the leader starts the loop.
          if (auto access = read_access(section->credentials, "body.credentials"); !access) {
            return std::unexpected(access.error());
          }
          auto outcome = put_definition(*st, *section);
          if (!outcome) return std::unexpected(outcome.error());
          const char* what = *outcome == PutOutcome::created   ? "created"
                             : *outcome == PutOutcome::changed ? "changed"
                                                               : "unchanged";
          return json{{"cluster", name}, {"source", "api"}, {"result", what}};
        };
        auto r = co_await workers_->run(std::move(job), timeout);
        if (!r) co_return http::error_response(r.error());
        const std::string result = (*r)["result"];
        if (result != "unchanged")
          logger().info("cluster {}: {} through the admin API", name, result);
        co_return Response::json(*r,
                                 result == "created" ? http::Status::created : http::Status::ok);
      },
      true);
  (void)routes.add(
      "clusters/{name}/switchover",
      "planned switchover: {\"to\": INSTANCE} (optional; default: the ready replica that has "
      "applied most)",
      [this, timeout](Request& req) -> Awaitable {
        const std::string name(req.path_param("name").value_or(""));
        auto c = find(name);
        if (workers_ == nullptr || context_ == nullptr) {
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
        auto* st = context_->store();
        auto job = [c, el, st, name, to]() -> Expected<json> {
          std::shared_ptr<ClusterLoop> loop;
          if (c) {
            const std::lock_guard lock(c->mutex);
            loop = c->loop;
          }
          if (!c) {
            auto defined = is_defined(st, name);
            if (!defined) return std::unexpected(defined.error());
            if (!*defined) return fail(Errc::not_found, "no cluster \"" + name + "\"");
          }
          if (el == nullptr || !loop) {
            const std::string leader = el != nullptr ? el->current().leader : "";
            return fail(Errc::unavailable,
                        "this controller does not run the cluster" +
                            (leader.empty() ? std::string() : "; ask the leader, " + leader));
          }
          std::string target = to;
          auto ok = loop->update([&](ClusterMemory& m) -> Expected<void> {
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
          if (workers_ == nullptr || context_ == nullptr || context_->store() == nullptr) {
            co_return http::error_response({Errc::not_found, "no cluster \"" + name + "\""});
          }
          auto* st = context_->store();
          auto job = [c, st, name, pause]() -> Expected<json> {
            if (!c) {
              auto defined = is_defined(st, name);
              if (!defined) return std::unexpected(defined.error());
              if (!*defined) return fail(Errc::not_found, "no cluster \"" + name + "\"");
            }
            store::Txn t;
            if (pause) {
              t.success.push_back(
                  store::Op::make_put(paused_key(name), std::to_string(wall_clock_ms())));
            } else {
              t.success.push_back(store::Op::make_delete(store::KeyRange::exact(paused_key(name))));
              t.success.push_back(
                  store::Op::make_delete(store::KeyRange::exact(last_failover_key(name))));
            }
            if (auto r = st->txn(t); !r) return std::unexpected(r.error());
            if (!c) return json{{"cluster", name}, {"paused", pause}};
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
