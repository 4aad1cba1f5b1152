#include "agent/runtime/agent.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <future>
#include <mutex>
#include <optional>
#include <thread>

#include "agent/cluster/controller.hpp"
#include "agent/cluster/node.hpp"
#include "agent/http/server.hpp"
#include "agent/log/log.hpp"
#include "agent/metrics/exposition.hpp"
#include "agent/metrics/gzip.hpp"
#include "agent/metrics/process_metrics.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/module/context.hpp"
#include "agent/module/registry.hpp"
#include "agent/runtime/code_residency.hpp"
#include "agent/runtime/sd_notify.hpp"
#include "agent/runtime/state_lock.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "agent/store/etcd_store.hpp"
#include "agent/store/sqlite_store.hpp"
#include "agent/store/store_election.hpp"

namespace neco {
namespace {

namespace asio = boost::asio;
using http::Request;
using http::Response;
using http::Status;
using Clock = std::chrono::steady_clock;

const log::Logger& logger() {
  static const log::Logger instance("agent");
  return instance;
}

// Creates a private directory (0700), or checks that an existing one is writable.
Expected<void> ensure_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return fail(Errc::unavailable,
                fmt::format("cannot create directory '{}': {}", dir.string(), ec.message()));
  }
  ::chmod(dir.c_str(), 0700);
  if (::access(dir.c_str(), W_OK) != 0) {
    return fail(Errc::unavailable, fmt::format("directory '{}' is not writable: {}", dir.string(),
                                               std::strerror(errno)));
  }
  return {};
}

http::ServerLimits admin_limits(const config::AdminConfig& a) {
  http::ServerLimits l;
  l.max_connections = static_cast<std::size_t>(a.max_connections);
  l.header_timeout = a.header_timeout;
  l.max_body_bytes = static_cast<std::size_t>(a.max_body_bytes);
  return l;
}

// An empty family for a scrape-time collector.
metrics::MetricFamily family(std::string name, std::string help, metrics::MetricType type) {
  return metrics::MetricFamily{.name = std::move(name), .help = std::move(help), .type = type};
}

Response error_response(Status status, const Error& e) {
  return Response::error(status, std::string(to_string(e.code)), e.message);
}

}  // namespace

struct Agent::Impl {
  Agent& owner;
  AgentOptions options;
  config::RoleFile role;
  std::vector<std::unique_ptr<Module>> modules;
  std::vector<bool> started;  // per module: start() succeeded
  std::vector<std::string> start_errors;

  asio::io_context io{1};
  std::optional<WorkerPool> pool;
  metrics::Registry registry;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<store::LeaderLoop> leader;
  std::unique_ptr<cluster::ClusterController> cluster_controller;  // controllers
  std::unique_ptr<cluster::ClusterNode> cluster_node;              // nodes that join
  std::unique_ptr<http::Server> admin;
  std::unique_ptr<http::Server> metrics_server;
  SystemdNotifier notifier = SystemdNotifier::from_environment();
  asio::steady_timer watchdog{io};
  asio::steady_timer code_release{io};
  asio::signal_set signals{io};
  Clock::time_point started_at = Clock::now();
  std::chrono::system_clock::time_point started_wall = std::chrono::system_clock::now();
  std::chrono::system_clock::time_point loaded_wall = started_wall;
  bool stopping = false;
  bool reloading = false;

  // Leadership as the modules last heard it (only touched on the loop).
  bool is_leader = false;
  std::int64_t term = 0;

  // Metrics.
  metrics::Counter* reloads_ok = nullptr;
  metrics::Counter* reloads_failed = nullptr;
  metrics::Gauge* last_reload_ok = nullptr;
  metrics::HistogramFamily* store_latency = nullptr;
  metrics::CounterFamily* store_errors = nullptr;
  std::vector<metrics::CollectorHandle> collectors;

  Impl(Agent& a, LoadedConfig config, AgentOptions opts)
      : owner(a),
        options(opts),
        role(std::move(config.role)),
        modules(std::move(config.modules)),
        started(modules.size(), false) {}

  // A per-module context: the same services, the module's own state directory.
  struct ScopedContext : ModuleContext {
    Impl& impl;
    std::filesystem::path dir;
    ScopedContext(Impl& i, std::filesystem::path d) : impl(i), dir(std::move(d)) {}
    asio::any_io_executor executor() override { return impl.io.get_executor(); }
    WorkerPool& workers() override { return *impl.pool; }
    metrics::Registry& metrics() override { return impl.registry; }
    store::Store* store() override { return impl.store_.get(); }
    store::Election* election() override { return impl.leader.get(); }
    const config::CoreConfig& core() const override { return impl.role.core; }
    std::filesystem::path state_dir() const override { return dir; }
  };
  std::vector<std::unique_ptr<ScopedContext>> contexts;

  void declare_metrics() {
    metrics::add_build_info(registry, NECO_VERSION);
    auto& reloads = registry.counter({.name = "neco_config_reloads_total",
                                      .help = "Role-file reloads by result.",
                                      .labels = {"result"}});
    reloads_ok = &reloads.with({"success"});
    reloads_failed = &reloads.with({"failure"});
    last_reload_ok = &registry
                          .gauge({.name = "neco_config_last_reload_successful",
                                  .help = "1 when the last role-file reload was applied."})
                          .with();
    last_reload_ok->set(1);
    store_latency = &registry.histogram({.name = "neco_store_operation_duration_seconds",
                                         .help = "Store operation latency by operation.",
                                         .labels = {"operation"},
                                         .unit = "seconds"});
    store_errors = &registry.counter({.name = "neco_store_operation_errors_total",
                                      .help = "Store operations that failed, by operation.",
                                      .labels = {"operation"}});
    collectors.push_back(registry.add_collector(metrics::process_collector()));
    collectors.push_back(registry.add_collector(
        [this](std::vector<metrics::MetricFamily>& out) { collect_agent(out); }));
  }

  // Scrape-time values read from the running parts (modules, servers, pool, election).
  void collect_agent(std::vector<metrics::MetricFamily>& out) {
    auto health = family("neco_module_health", "1 for the module's current health state.",
                         metrics::MetricType::gauge);
    for (const auto& m : modules) {
      const auto h = m->health();
      for (auto s : {HealthState::starting, HealthState::healthy, HealthState::degraded,
                     HealthState::failed, HealthState::stopped}) {
        health.add(h.state == s ? 1 : 0, {{"module", m->name()}, {"state", to_string(s)}});
      }
    }
    out.push_back(std::move(health));

    auto requests =
        family("neco_http_requests_total", "HTTP responses sent, by listener and status class.",
               metrics::MetricType::counter);
    auto conns = family("neco_http_active_connections", "Open HTTP connections by listener.",
                        metrics::MetricType::gauge);
    auto rejected =
        family("neco_http_rejected_connections_total",
               "Connections closed at accept (connection limit).", metrics::MetricType::counter);
    auto bad =
        family("neco_http_bad_requests_total", "Malformed or oversized requests, by listener.",
               metrics::MetricType::counter);
    auto timeouts =
        family("neco_http_timeouts_total", "Header, body or write deadlines hit, by listener.",
               metrics::MetricType::counter);
    auto tls_failed = family("neco_http_tls_handshake_failures_total",
                             "TLS handshakes that failed (not deadlines), by listener.",
                             metrics::MetricType::counter);
    auto cert_refused = family("neco_http_tls_client_cert_refusals_total",
                               "Client certificates refused at the TLS handshake (another CA, "
                               "expired, wrong usage), by listener.",
                               metrics::MetricType::counter);
    auto server_stats = [&](const http::Server* s, std::string_view listener) {
      if (s == nullptr) return;
      const auto& st = s->stats();
      static constexpr std::string_view kClasses[] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
      for (int c = 1; c <= 5; ++c) {
        requests.add(static_cast<double>(st.requests(c)),
                     {{"listener", listener}, {"code", kClasses[c]}});
      }
      conns.add(static_cast<double>(st.active_connections.load()), {{"listener", listener}});
      rejected.add(static_cast<double>(st.rejected_connections.load()), {{"listener", listener}});
      bad.add(static_cast<double>(st.bad_requests.load()), {{"listener", listener}});
      timeouts.add(static_cast<double>(st.timeouts.load()), {{"listener", listener}});
      tls_failed.add(static_cast<double>(st.tls_handshake_failures.load()),
                     {{"listener", listener}});
      cert_refused.add(static_cast<double>(st.tls_client_cert_refusals.load()),
                       {{"listener", listener}});
    };
    server_stats(admin.get(), "admin");
    server_stats(metrics_server.get(), "metrics");
    if (cluster_controller) server_stats(cluster_controller->api_server(), "cluster");
    out.push_back(std::move(requests));
    out.push_back(std::move(conns));
    out.push_back(std::move(rejected));
    out.push_back(std::move(bad));
    out.push_back(std::move(timeouts));
    out.push_back(std::move(tls_failed));
    out.push_back(std::move(cert_refused));

    if (pool) {
      auto busy = family("neco_worker_pool_in_flight",
                         "Blocking calls queued or running on the worker pool.",
                         metrics::MetricType::gauge);
      busy.add(static_cast<double>(pool->in_flight()));
      out.push_back(std::move(busy));
      auto late =
          family("neco_worker_pool_timeouts_total", "Blocking calls that ran past their deadline.",
                 metrics::MetricType::counter);
      late.add(static_cast<double>(pool->timeouts()));
      out.push_back(std::move(late));
    }
    if (leader) {
      const auto st = leader->current();
      auto is = family("neco_leader", "1 while this agent is the leader controller.",
                       metrics::MetricType::gauge);
      is.add(st.is_leader ? 1 : 0);
      out.push_back(std::move(is));
      auto t = family("neco_leader_term", "Fencing term of the current leader (0: none known).",
                      metrics::MetricType::gauge);
      t.add(static_cast<double>(st.term));
      out.push_back(std::move(t));
      auto who = family("neco_leader_info", "The current leader as this agent knows it (1).",
                        metrics::MetricType::gauge);
      if (!st.leader.empty()) who.add(1, {{"leader", st.leader}});
      out.push_back(std::move(who));
      auto tr = family("neco_leader_transitions_total",
                       "Times this agent gained or lost leadership.", metrics::MetricType::counter);
      tr.add(static_cast<double>(st.transitions));
      out.push_back(std::move(tr));
    }
  }

  Expected<std::unique_ptr<store::Store>> make_store() {
    const auto& sc = role.core.store;
    if (sc.backend == "etcd") {
      store::EtcdOptions eo;
      eo.endpoints = sc.etcd.endpoints;
      eo.ca_file = sc.etcd.ca_file;
      eo.cert_file = sc.etcd.cert_file;
      eo.key_file = sc.etcd.key_file;
      eo.request_timeout = sc.etcd.request_timeout;
      eo.dial_timeout = sc.etcd.dial_timeout;
      auto s = store::EtcdStore::open(eo);
      if (!s) {
        return fail(s.error().code,
                    fmt::format("store.etcd in '{}': {}", role.path, s.error().message));
      }
      logger().info("Using etcd at {}", (*s)->current_endpoint());
      return std::unique_ptr<store::Store>(std::move(*s));
    }
    std::string path = sc.sqlite.path;
    if (path.empty()) path = (std::filesystem::path(role.core.state_dir) / "store.db").string();
    store::SqliteOptions opts;
    opts.history_revisions = sc.history_revisions;
    auto s = store::SqliteStore::open(path, opts);
    if (!s) return std::unexpected(s.error());
    logger().info("Opened store '{}'", path);
    return std::unique_ptr<store::Store>(std::move(*s));
  }

  Expected<void> open_store() {
    if (!role.core.controller) return {};
    auto s = make_store();
    if (!s) return std::unexpected(s.error());
    store_ = std::move(*s);
    store_->set_stats_hook([this](std::string_view op, double seconds, bool ok) {
      const std::string_view labels[] = {op};
      store_latency->with(labels).observe(seconds);
      if (!ok) store_errors->with(labels).inc();
    });

    store::LeaderLoopOptions lo;
    lo.candidate = role.core.node.name;
    lo.ttl_seconds = std::max<std::int64_t>(1, role.core.store.election_ttl.count() / 1000);
    leader = std::make_unique<store::LeaderLoop>(
        *store_, lo, [this](std::int64_t t) { asio::post(io, [this, t] { become_leader(t); }); },
        [this] { asio::post(io, [this] { become_follower(); }); });
    if (role.core.cluster.api.enabled) {
      cluster_controller = std::make_unique<cluster::ClusterController>(io, *pool, *store_, *leader,
                                                                        registry, role.core);
    }
    return leader->start();
  }

  // Joins the cluster when the role file says how (nodes only).
  Expected<void> start_cluster() {
    if (cluster_controller) return cluster_controller->start();
    if (role.core.controller || role.core.cluster.join.controllers.empty()) return {};
    // The heartbeat reports module health, read on the event loop where modules live.
    auto report = [this]() -> nlohmann::json {
      auto done = std::make_shared<std::promise<nlohmann::json>>();
      auto fut = done->get_future();
      asio::post(io, [this, done] {
        nlohmann::json mods = nlohmann::json::array();
        bool healthy = true;
        for (size_t i = 0; i < modules.size(); ++i) {
          const auto h = modules[i]->health();
          healthy = healthy && started[i] && h.state == HealthState::healthy;
          mods.push_back({{"name", modules[i]->name()}, {"health", to_string(h.state)}});
        }
        done->set_value({{"health", healthy ? "healthy" : "degraded"}, {"modules", mods}});
      });
      if (fut.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
        return {{"health", "unknown"}, {"modules", nlohmann::json::array()}};
      }
      return fut.get();
    };
    cluster_node = std::make_unique<cluster::ClusterNode>(role.core, report);
    return cluster_node->start();
  }

  void become_leader(std::int64_t t) {
    if (stopping) return;
    is_leader = true;
    term = t;
    logger().info("This agent is now the leader (term {})", t);
    if (cluster_controller) cluster_controller->on_leader(t);
    for (size_t i = 0; i < modules.size(); ++i) {
      if (started[i]) modules[i]->on_leader(t);
    }
  }

  void become_follower() {
    if (!is_leader) return;
    is_leader = false;
    logger().warning("This agent is no longer the leader (term {} ended)", term);
    if (cluster_controller) cluster_controller->on_follower();
    for (size_t i = 0; i < modules.size(); ++i) {
      if (started[i]) modules[i]->on_follower();
    }
  }

  std::shared_ptr<http::Router> build_admin_router() {
    auto router = std::make_shared<http::Router>();
    auto add = [&](std::string_view path, std::string help, http::Handler h, bool mutates) {
      auto ok = router->add(path, std::move(help), std::move(h), mutates);
      if (!ok) logger().error("Failed to add route '{}': {}", path, ok.error().message);
    };
    add(
        "/healthz", "liveness: 200 while the event loop answers",
        [](Request&) -> asio::awaitable<Response> {
          co_return Response::json({{"status", "ok"}});
        },
        false);
    add(
        "/readyz", "readiness: 200 when every module started and is healthy, else 503",
        [this](Request&) -> asio::awaitable<Response> { co_return readiness(); }, false);
    add(
        "/status", "node, version, uptime, leader and module health",
        [this](Request&) -> asio::awaitable<Response> { co_return Response::json(status()); },
        false);
    add(
        "/config", "effective configuration (secrets redacted)",
        [this](Request&) -> asio::awaitable<Response> {
          co_return Response::json(effective_config());
        },
        false);
    add(
        "/v1/agent/reload", "re-read the role file (as SIGHUP does); 200 with the outcome",
        [this](Request&) -> asio::awaitable<Response> {
          auto r = co_await reload_now();
          if (!r) co_return error_response(Status::unprocessable_entity, r.error());
          co_return Response::json({{"result", "applied"}, {"file", role.path}});
        },
        true);
    if (cluster_controller) cluster_controller->add_admin_routes(*router);
    for (size_t i = 0; i < modules.size(); ++i) {
      ModuleRoutes routes(*router, std::string(modules[i]->name()));
      modules[i]->add_routes(routes);
    }
    // /help last, so it lists itself and every other route.
    std::weak_ptr<http::Router> weak = router;
    add(
        "/help", "every route with its help text",
        [weak](Request&) -> asio::awaitable<Response> {
          nlohmann::json routes = nlohmann::json::array();
          if (auto r = weak.lock()) {
            for (const auto& info : r->routes()) {
              routes.push_back({{"path", info.path},
                                {"methods", info.mutates ? nlohmann::json{"POST", "PUT", "DELETE"}
                                                         : nlohmann::json{"GET", "HEAD"}},
                                {"help", info.help}});
            }
          }
          co_return Response::json({{"routes", routes}});
        },
        false);
    return router;
  }

  std::shared_ptr<http::Router> build_metrics_router() {
    auto router = std::make_shared<http::Router>();
    auto ok = router->add(
        "/metrics", "Prometheus text 0.0.4 or OpenMetrics 1.0 (by Accept), gzip when asked",
        [this](Request& req) -> asio::awaitable<Response> {
          // Collectors may read files (modules' collectors do): keep them off the loop.
          const std::string accept(req.header("accept").value_or(""));
          const bool gzip = metrics::accepts_gzip(req.header("accept-encoding").value_or(""));
          // Named, not a temporary inside co_await (GCC 12 coroutine bug with lambdas).
          // The query travels to collectors (the exporter's collect[] / exclude[]).
          metrics::ScrapeRequest scrape{req.query};
          auto job = [this, accept, gzip, scrape = std::move(scrape)]() -> Expected<Response> {
            auto e = metrics::render(registry, accept, scrape);
            if (!e) return std::unexpected(e.error());
            Response r;
            r.content_type = e->content_type;
            if (gzip) {
              r.body = metrics::gzip_compress(e->body);
              r.headers.emplace_back("Content-Encoding", "gzip");
            } else {
              r.body = std::move(e->body);
            }
            r.headers.emplace_back("Vary", "Accept, Accept-Encoding");
            return r;
          };
          auto rendered = co_await pool->run(std::move(job), std::chrono::seconds(30));
          if (!rendered) {
            const bool refused = rendered.error().code == Errc::invalid_argument;
            co_return error_response(refused ? Status::bad_request : Status::service_unavailable,
                                     rendered.error());
          }
          co_return std::move(*rendered);
        });
    if (!ok) logger().error("Failed to add route '/metrics': {}", ok.error().message);
    return router;
  }

  Response readiness() {
    nlohmann::json not_ready = nlohmann::json::array();
    for (size_t i = 0; i < modules.size(); ++i) {
      const auto h = modules[i]->health();
      if (!started[i] || h.state != HealthState::healthy) {
        not_ready.push_back({{"module", modules[i]->name()},
                             {"health", to_string(h.state)},
                             {"message", h.message}});
      }
    }
    if (role.core.controller && store_ == nullptr) {
      not_ready.push_back({{"module", "store"}, {"health", "failed"}, {"message", "not open"}});
    }
    if (cluster_node && !cluster_node->ready()) {
      const auto st = cluster_node->status();
      not_ready.push_back({{"module", "cluster"},
                           {"health", "starting"},
                           {"message", st.value("problem", std::string("joining"))}});
    }
    if (not_ready.empty()) return Response::json({{"status", "ready"}});
    return Response::json({{"status", "not ready"}, {"problems", not_ready}},
                          Status::service_unavailable);
  }

  nlohmann::json status() {
    nlohmann::json mods = nlohmann::json::array();
    for (size_t i = 0; i < modules.size(); ++i) {
      const auto h = modules[i]->health();
      mods.push_back({{"name", modules[i]->name()},
                      {"started", static_cast<bool>(started[i])},
                      {"health", to_string(h.state)},
                      {"message", h.message}});
    }
    const auto uptime = std::chrono::duration<double>(Clock::now() - started_at).count();
    nlohmann::json j = {
        {"node", role.core.node.name},
        {"labels", config::encode(role.core.node.labels)},
        {"version", NECO_VERSION},
        {"pid", ::getpid()},
        {"uptime_seconds", uptime},
        {"started_at",
         std::chrono::duration_cast<std::chrono::seconds>(started_wall.time_since_epoch()).count()},
        {"controller", role.core.controller},
        {"role_file", role.path},
        {"modules", mods},
    };
    if (leader) {
      const auto st = leader->current();
      j["role"] = st.is_leader ? "leader" : "follower";
      j["leader"] = nlohmann::json{{"name", st.leader},
                                   {"term", st.term},
                                   {"self", st.is_leader},
                                   {"transitions", st.transitions}};
      j["store"] = nlohmann::json{{"backend", role.core.store.backend}};
      if (auto* e = dynamic_cast<store::EtcdStore*>(store_.get())) {
        j["store"]["endpoint"] = e->current_endpoint();
      }
    } else {
      j["role"] = "node";
      j["leader"] = nullptr;
    }
    if (cluster_controller) j["cluster"] = cluster_controller->status();
    if (cluster_node) j["cluster"] = cluster_node->status();
    return j;
  }

  nlohmann::json effective_config() {
    nlohmann::json mods = nlohmann::json::object();
    for (const auto& m : modules)
      mods[std::string(m->name())] = m->effective_config();
    auto core = config::dump_core(role.core);
    core["modules"] = mods;
    return {
        {"file", role.path},
        {"loaded_at",
         std::chrono::duration_cast<std::chrono::seconds>(loaded_wall.time_since_epoch()).count()},
        {"config", core}};
  }

  // Reads the file again and applies what can change live; all or nothing.
  asio::awaitable<Expected<void>> reload_now() {
    if (reloading) co_return fail(Errc::unavailable, "a reload is already running");
    reloading = true;
    notifier.notify(
        fmt::format("RELOADING=1\nMONOTONIC_USEC={}", SystemdNotifier::monotonic_usec()));
    const std::string path = role.path;
    auto job = [path] { return load_config(path); };
    auto loaded = co_await pool->run(std::move(job), std::chrono::seconds(30));
    auto result = loaded ? apply(*loaded) : Expected<void>(std::unexpected(loaded.error()));
    reloading = false;
    notifier.notify("READY=1");
    if (result) {
      reloads_ok->inc();
      last_reload_ok->set(1);
      loaded_wall = std::chrono::system_clock::now();
      logger().info("Reloaded role file '{}'", path);
    } else {
      reloads_failed->inc();
      last_reload_ok->set(0);
      logger().error("Failed to reload role file; still running the last good config:\n{}",
                     result.error().message);
    }
    co_return result;
  }

  Expected<void> apply(LoadedConfig& next) {
    std::vector<std::string> problems;
    for (const auto& f : config::restart_only_changes(role.core, next.role.core)) {
      problems.push_back(fmt::format("'{}' changed; it only takes effect on restart", f));
    }
    // The module set and non-reloadable sections are fixed for the life of the process.
    auto names = [](const config::RoleFile& r) {
      std::vector<std::string> n;
      n.reserve(r.modules.size());
      for (const auto& m : r.modules)
        n.push_back(m.name);
      return n;
    };
    if (names(role) != names(next.role)) {
      problems.emplace_back("the set of modules changed; adding or removing one needs a restart");
    }
    std::vector<size_t> changed;
    if (problems.empty()) {
      for (size_t i = 0; i < modules.size(); ++i) {
        if (role.modules[i].canonical == next.role.modules[i].canonical) continue;
        if (!modules[i]->reloadable()) {
          problems.push_back(fmt::format(
              "modules.{} changed but the module cannot change its config while running; "
              "restart the agent",
              modules[i]->name()));
        }
        changed.push_back(i);
      }
    }
    if (!problems.empty()) {
      std::string text;
      for (const auto& p : problems)
        text += (text.empty() ? "" : "\n") + role.path + ": " + p;
      return fail(Errc::failed_precondition, text);
    }
    // Everything validated: commit. A module's configure() on the live instance parses the
    // same text that just passed on a fresh instance, so it cannot fail here.
    for (size_t i : changed) {
      const config::Section section(next.role.modules[i], next.role.path);
      if (auto ok = modules[i]->configure(section); ok) {
        if (auto r = modules[i]->reload(); !r) {
          logger().error("Failed to apply the new config of module '{}': {}", modules[i]->name(),
                         r.error().message);
        }
      }
    }
    role.core.log_level = next.role.core.log_level;
    role.core.node.labels = next.role.core.node.labels;
    role.modules = next.role.modules;
    log::Level level{};
    if (log::parse_level(role.core.log_level, level)) log::set_level(level);
    return {};
  }

  void arm_watchdog() {
    const auto interval = notifier.watchdog_interval();
    if (!interval) return;
    watchdog.expires_after(*interval);
    watchdog.async_wait([this](boost::system::error_code ec) {
      if (ec || stopping) return;
      // This runs on the event loop, so each ping also proves the loop is not stuck.
      notifier.notify("WATCHDOG=1");
      arm_watchdog();
    });
  }

  void wait_signals() {
    signals.async_wait([this](boost::system::error_code ec, int sig) {
      if (ec) return;
      if (sig == SIGHUP) {
        logger().info("SIGHUP: reloading '{}'", role.path);
        asio::co_spawn(
            io, [this]() -> asio::awaitable<void> { (void)co_await reload_now(); }, asio::detached);
        wait_signals();
        return;
      }
      logger().info("{}: stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      begin_stop();
    });
  }

  Expected<void> start() {
    log::Level level{};
    if (log::parse_level(role.core.log_level, level)) log::set_level(level);
    if (auto ok = ensure_dir(role.core.state_dir); !ok) return ok;
    auto lock = StateLock::acquire(role.core.state_dir);
    if (!lock) return std::unexpected(lock.error());
    state_lock.emplace(std::move(*lock));
    pool.emplace(static_cast<std::size_t>(role.core.workers),
                 static_cast<std::size_t>(role.core.workers) * 64);
    declare_metrics();
    if (auto ok = open_store(); !ok) return ok;

    admin = std::make_unique<http::Server>(io, admin_limits(role.core.admin),
                                           log::Logger("http.admin"));
    admin->set_router(build_admin_router());
    const auto& a = role.core.admin;
    auto bound = admin->listen_tcp(a.address, static_cast<std::uint16_t>(a.port));
    if (!bound) {
      return fail(Errc::unavailable,
                  fmt::format("admin endpoint: {} (another agent running? change admin.port in "
                              "'{}')",
                              bound.error().message, role.path));
    }
    owner.admin_port_ = bound->port();
    if (!a.socket.empty()) {
      if (auto ok = admin->listen_unix(a.socket); !ok) {
        return fail(Errc::unavailable, fmt::format("admin endpoint: {} (change admin.socket in "
                                                   "'{}')",
                                                   ok.error().message, role.path));
      }
    }
    admin->start();

    if (role.core.metrics.enabled) {
      http::ServerLimits ml;
      ml.max_body_bytes = 1024;  // read-only: bodies are never used (small, so 405 not 413)
      ml.max_connections = 64;
      metrics_server = std::make_unique<http::Server>(io, ml, log::Logger("http.metrics"));
      metrics_server->set_router(build_metrics_router());
      const auto& m = role.core.metrics;
      auto mb = metrics_server->listen_tcp(m.address, static_cast<std::uint16_t>(m.port));
      if (!mb) {
        return fail(Errc::unavailable,
                    fmt::format("metrics listener: {} (change metrics.port in '{}')",
                                mb.error().message, role.path));
      }
      owner.metrics_port_ = mb->port();
      metrics_server->start();
    }

    for (size_t i = 0; i < modules.size(); ++i) {
      auto& m = *modules[i];
      const auto dir = std::filesystem::path(role.core.state_dir) / std::string(m.name());
      if (auto ok = ensure_dir(dir); !ok) {
        logger().error("Failed to start module '{}': {}", m.name(), ok.error().message);
        continue;
      }
      contexts.push_back(std::make_unique<ScopedContext>(*this, dir));
      if (auto ok = m.start(*contexts.back()); !ok) {
        // A module that cannot start degrades itself, not the agent: /readyz says so.
        logger().error("Failed to start module '{}': {}", m.name(), ok.error().message);
        continue;
      }
      started[i] = true;
    }
    if (auto ok = start_cluster(); !ok) return ok;

    if (options.handle_signals) {
      signals.add(SIGTERM);
      signals.add(SIGINT);
      signals.add(SIGHUP);
      wait_signals();
    }
    arm_watchdog();
    // Startup code (role parsing, CA creation, schema setup) is not run again: once the agent
    // has settled, unmap it so only the code it keeps running stays resident.
    code_release.expires_after(std::chrono::seconds(10));
    code_release.async_wait([](boost::system::error_code ec) {
      if (!ec) release_code_pages();
    });
    notifier.notify(fmt::format("READY=1\nSTATUS=serving on {}:{}", a.address, owner.admin_port()));
    owner.ready_ = true;
    logger().info("neco {} running as '{}' ({}), admin on {}:{}", NECO_VERSION, role.core.node.name,
                  role.core.controller ? "controller" : "node", a.address, owner.admin_port());
    return {};
  }

  // A hard bound on the whole stop: a module's stop() or a worker stuck in a blocking call
  // (a hung mount, a dead peer) must not keep the process alive past what systemd expects.
  std::mutex stop_mutex;
  std::condition_variable stop_cv;
  bool stop_done = false;
  std::thread stop_guard;
  std::optional<StateLock> state_lock;  // held for the life of the process

  void arm_stop_guard() {
    const auto bound = role.core.shutdown_timeout + std::chrono::seconds(5);
    stop_guard = std::thread([this, bound] {
      std::unique_lock lock(stop_mutex);
      if (stop_cv.wait_for(lock, bound, [this] { return stop_done; })) return;
      logger().error("Failed to stop within {}: exiting without waiting for stuck work",
                     config::format_duration(std::chrono::duration_cast<config::Duration>(bound)));
      std::_Exit(1);
    });
  }

  void disarm_stop_guard() {
    {
      std::lock_guard lock(stop_mutex);
      stop_done = true;
    }
    stop_cv.notify_all();
    if (stop_guard.joinable()) stop_guard.join();
  }

  void begin_stop() {
    if (stopping) return;
    stopping = true;
    owner.ready_ = false;
    arm_stop_guard();
    notifier.notify("STOPPING=1");
    signals.cancel();
    watchdog.cancel();
    code_release.cancel();
    asio::co_spawn(
        io, [this]() -> asio::awaitable<void> { co_await shutdown(); }, asio::detached);
  }

  asio::awaitable<void> shutdown() {
    const auto grace = role.core.shutdown_timeout;
    // Modules first, in reverse start order, so nothing they serve outlives them.
    for (size_t i = modules.size(); i-- > 0;) {
      if (!started[i]) continue;
      modules[i]->stop();
      started[i] = false;
    }
    if (cluster_node) cluster_node->stop();
    if (cluster_controller) co_await cluster_controller->stop(grace / 2);
    if (leader) leader->stop();  // resigns, so another controller need not wait for the TTL
    if (metrics_server) co_await metrics_server->async_stop(grace / 2);
    if (admin) co_await admin->async_stop(grace / 2);
    io.stop();
  }
};

Agent::Agent(LoadedConfig config, AgentOptions options)
    : impl_(std::make_unique<Impl>(*this, std::move(config), options)) {}

Agent::~Agent() = default;

int Agent::run() {
  if (auto ok = impl_->start(); !ok) {
    logger().error("Failed to start: {}", ok.error().message);
    impl_->stopping = true;
    if (impl_->leader) impl_->leader->stop();
    return 1;
  }
  impl_->io.run();
  if (impl_->pool) impl_->pool->join();
  impl_->disarm_stop_guard();
  logger().info("Stopped");
  return 0;
}

void Agent::request_stop() {
  asio::post(impl_->io, [this] { impl_->begin_stop(); });
}

void Agent::request_reload() {
  asio::post(impl_->io, [this] {
    asio::co_spawn(
        impl_->io, [this]() -> asio::awaitable<void> { (void)co_await impl_->reload_now(); },
        asio::detached);
  });
}

}  // namespace neco
