#include "agent/cluster/controller.hpp"

#include <arpa/inet.h>

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <condition_variable>
#include <filesystem>
#include <future>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "agent/cluster/pki.hpp"
#include "agent/cluster/records.hpp"
#include "agent/http/server.hpp"
#include "agent/log/log.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "agent/store/election.hpp"
#include "agent/store/store.hpp"

namespace neco::cluster {
namespace {

namespace asio = boost::asio;
using http::Request;
using http::Response;
using http::Status;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::seconds;

constexpr auto kCaValidity = std::chrono::hours(24 * 365 * 10);
constexpr auto kStoreDeadline = std::chrono::seconds(15);
constexpr auto kMaxLongPoll = std::chrono::seconds(300);

using http::error_response;

Expected<json> parse_body(const Request& req) {
  auto j = json::parse(req.body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return fail(Errc::invalid_argument, "the request body must be a JSON object");
  }
  return j;
}

std::string string_field(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string name_of(std::string_view key, std::string_view prefix) {
  return std::string(key.substr(prefix.size()));
}

json parse_value(const std::string& v) {
  auto j = json::parse(v, nullptr, false);
  return j.is_discarded() ? json() : j;
}

bool is_ip(const std::string& s) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

std::int64_t to_unix(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<seconds>(t.time_since_epoch()).count();
}

}  // namespace

struct ClusterController::Impl : std::enable_shared_from_this<Impl> {
  asio::io_context& io;
  WorkerPool& pool;
  store::Store& store;
  store::Election& election;
  const config::CoreConfig& core;
  log::Logger logger{"cluster"};
  std::filesystem::path pki_dir;

  // Guarded by mu: what the cluster thread learned, read by handlers and status().
  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  bool poked = false;
  CertPem ca;  // empty until loaded from the store
  std::string ca_fingerprint;
  std::string api_error;  // why the API is not serving yet
  std::chrono::system_clock::time_point server_cert_not_after{};
  std::uint16_t api_port = 0;

  std::atomic<bool> leader{false};
  std::atomic<bool> new_term{false};  // set on election: the membership tracks start over
  std::atomic<std::uint64_t> fenced_refusals{0};
  std::thread thread;

  // Cluster thread only.
  std::map<std::string, BeatTrack> tracks;
  bool tracks_fresh = false;  // reset on every election so a new leader starts with a grace
  Clock::time_point next_self_beat{};
  std::unique_ptr<store::Watch> desired_watch;

  // Event loop only.
  std::unique_ptr<http::Server> api;
  std::atomic<const http::Server*> api_for_metrics{nullptr};     // set once api exists
  std::map<std::string, std::pair<std::int64_t, json>> desired;  // name -> (mod_revision, doc)
  std::multimap<std::string, std::shared_ptr<asio::steady_timer>> waiters;

  // Metrics.
  metrics::CounterFamily* rejections = nullptr;
  metrics::CounterFamily* state_changes = nullptr;
  metrics::Counter* heartbeats = nullptr;
  metrics::CollectorHandle collector;
  std::atomic<std::int64_t> nodes_healthy{0}, nodes_unreachable{0}, nodes_total{0};

  Impl(asio::io_context& i, WorkerPool& p, store::Store& s, store::Election& e,
       metrics::Registry& registry, const config::CoreConfig& c)
      : io(i),
        pool(p),
        store(s),
        election(e),
        core(c),
        pki_dir(std::filesystem::path(c.state_dir) / "pki") {
    rejections = &registry.counter(
        {.name = "neco_cluster_rejected_requests_total",
         .help = "Cluster API requests refused, by reason (bad token, bad CSR, wrong identity).",
         .labels = {"reason"}});
    state_changes = &registry.counter({.name = "neco_cluster_node_state_changes_total",
                                       .help = "Membership verdicts written by this leader.",
                                       .labels = {"state"}});
    heartbeats = &registry
                      .counter({.name = "neco_cluster_heartbeats_total",
                                .help = "Node heartbeats accepted by this controller."})
                      .with();
    collector = registry.add_collector([this](std::vector<metrics::MetricFamily>& out) {
      metrics::MetricFamily nodes{.name = "neco_cluster_nodes",
                                  .help = "Cluster members by state, as the leader last saw them.",
                                  .type = metrics::MetricType::gauge};
      if (leader.load()) {
        nodes.add(static_cast<double>(nodes_healthy.load()), {{"state", "healthy"}});
        nodes.add(static_cast<double>(nodes_unreachable.load()), {{"state", "unreachable"}});
      }
      out.push_back(std::move(nodes));
      metrics::MetricFamily refused{
          .name = "neco_leader_fenced_writes_refused_total",
          .help = "Leader-only writes the store refused because the term had ended.",
          .type = metrics::MetricType::counter};
      refused.add(static_cast<double>(fenced_refusals.load()));
      out.push_back(std::move(refused));
    });
  }

  // Refuses a request: counted by reason and logged once, with who asked.
  Response reject(const Request& req, std::string_view reason, const Error& e) {
    const std::string_view labels[] = {reason};
    rejections->with(labels).inc();
    const auto verb = boost::beast::http::to_string(req.method);
    logger.warning("Refused {} {} from {} ({}): {}", std::string(verb.data(), verb.size()),
                   req.path, req.peer_identity.empty() ? req.peer : req.peer_identity, reason,
                   e.message);
    return error_response(e);
  }

  void poke() {
    {
      std::lock_guard lock(mu);
      poked = true;
    }
    cv.notify_all();
  }

  CertPem ca_copy() const {
    std::lock_guard lock(mu);
    return ca;
  }

  // Runs `job` (returning Expected<Response>) on the worker pool.
  template <class F>
  asio::awaitable<Response> blocking(F job) {
    auto r = co_await pool.run(std::move(job), kStoreDeadline);
    if (!r) co_return error_response(r.error());
    co_return std::move(*r);
  }

  // ---- The cluster thread ----

  void run() {
    const auto tick = std::min<std::chrono::milliseconds>(core.cluster.heartbeat_interval / 2,
                                                          std::chrono::seconds(1));
    while (true) {
      step();
      std::unique_lock lock(mu);
      cv.wait_for(lock, tick, [&] { return stopping || poked; });
      poked = false;
      if (stopping) break;
    }
    if (desired_watch) desired_watch->cancel();
  }

  void step() {
    bool have_ca = false;
    {
      std::lock_guard lock(mu);
      have_ca = !ca.cert_pem.empty();
    }
    if (!have_ca) have_ca = load_or_create_ca();
    bool relist = false;
    {
      std::lock_guard lock(mu);
      std::swap(relist, lost_watch);
    }
    if (relist && desired_watch) {
      desired_watch->cancel();
      desired_watch.reset();
    }
    if (have_ca) {
      ensure_server_cert();
      ensure_desired_watch();
    }
    if (Clock::now() >= next_self_beat) {
      if (self_beat()) next_self_beat = Clock::now() + core.cluster.heartbeat_interval;
    }
    if (leader.load()) membership_pass();
  }

  void set_api_error(std::string e) {
    std::lock_guard lock(mu);
    if (api_error != e && !e.empty()) logger.warning("Cluster API not serving yet: {}", e);
    api_error = std::move(e);
  }

  // Loads the CA from the store; the leader creates it when there is none.
  bool load_or_create_ca() {
    auto cert = store.get(std::string(keys::kCaCert));
    if (!cert && cert.error().code == Errc::not_found && leader.load()) {
      auto created = create_ca("neco cluster CA", std::chrono::duration_cast<seconds>(kCaValidity));
      if (!created) {
        set_api_error("cannot create the cluster CA: " + created.error().message);
        return false;
      }
      store::Txn t;
      t.compares.push_back(
          store::Compare::create_revision(std::string(keys::kCaCert), store::CompareOp::equal, 0));
      t.success.push_back(store::Op::make_put(std::string(keys::kCaCert), created->cert_pem));
      t.success.push_back(store::Op::make_put(std::string(keys::kCaKey), created->key_pem));
      // For operators and tools that read the store: what nodes pin.
      if (auto fp = cert_fingerprint(created->cert_pem)) {
        t.success.push_back(store::Op::make_put(std::string(keys::kCaFingerprint), *fp));
      }
      auto r = election.fenced_txn(t);
      if (!r) {
        if (r.error().code == Errc::failed_precondition) ++fenced_refusals;
        set_api_error("cannot store the cluster CA: " + r.error().message);
        return false;
      }
      if (r->succeeded) logger.info("Created the cluster CA");
      cert = store.get(std::string(keys::kCaCert));
    }
    if (!cert) {
      set_api_error(cert.error().code == Errc::not_found
                        ? "waiting for the leader to create the cluster CA"
                        : "cannot read the cluster CA: " + cert.error().message);
      return false;
    }
    auto key = store.get(std::string(keys::kCaKey));
    if (!key) {
      set_api_error("cannot read the cluster CA key: " + key.error().message);
      return false;
    }
    auto fp = cert_fingerprint(cert->value);
    if (!fp) {
      set_api_error("the stored cluster CA is unreadable: " + fp.error().message);
      return false;
    }
    std::error_code ec;
    std::filesystem::create_directories(pki_dir, ec);
    std::filesystem::permissions(pki_dir, std::filesystem::perms::owner_all, ec);
    auto wk = write_private_file((pki_dir / "ca.key").string(), key->value);
    auto wc = write_private_file((pki_dir / "ca.crt").string(), cert->value);
    if (!wk || !wc) {
      set_api_error("cannot write the CA to " + pki_dir.string() + ": " +
                    (!wk ? wk.error().message : wc.error().message));
      return false;
    }
    {
      std::lock_guard lock(mu);
      ca = CertPem{cert->value, key->value};
      ca_fingerprint = *fp;
    }
    logger.info("Cluster CA {} loaded", *fp);
    return true;
  }

  // Issues this controller's own server+client certificate, and renews it when a third of its
  // life is left; the listener picks the new one up for new connections.
  void ensure_server_cert() {
    const auto now = std::chrono::system_clock::now();
    const auto validity = std::chrono::duration_cast<seconds>(core.cluster.cert_validity);
    {
      std::lock_guard lock(mu);
      if (api_port != 0 && server_cert_not_after - now > validity / 3) return;
    }
    IssueOptions o;
    o.common_name = core.node.name;
    o.server = true;
    o.client = true;
    o.validity = validity;
    std::vector<std::string> names = core.cluster.api.advertise;
    names.push_back(core.cluster.api.address);
    for (const auto& n : names) {
      auto& list = is_ip(n) ? o.ip_addresses : o.dns_names;
      if (std::find(list.begin(), list.end(), n) == list.end()) list.push_back(n);
    }
    if (core.cluster.api.address == "0.0.0.0" || core.cluster.api.address == "::") {
      o.ip_addresses.emplace_back("127.0.0.1");
    }
    auto issued = issue_key_and_cert(ca_copy(), o);
    if (!issued) {
      set_api_error("cannot issue the controller certificate: " + issued.error().message);
      return;
    }
    auto wk = write_private_file((pki_dir / "server.key").string(), issued->key_pem);
    auto wc = write_private_file((pki_dir / "server.crt").string(), issued->cert_pem);
    if (!wk || !wc) {
      set_api_error("cannot write the controller certificate: " +
                    (!wk ? wk.error().message : wc.error().message));
      return;
    }
    auto done = std::make_shared<std::promise<Expected<std::uint16_t>>>();
    auto fut = done->get_future();
    http::TlsOptions tls;
    tls.cert_pem = issued->cert_pem;
    tls.key_pem = issued->key_pem;
    tls.client_ca_pem = ca_copy().cert_pem;
    tls.require_client_cert = false;  // joining nodes have no certificate yet
    asio::post(io, [self = shared_from_this(), tls, done] { done->set_value(self->serve(tls)); });
    // The listener lives on the event loop; give up if the agent stops before it runs.
    while (fut.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
      std::lock_guard lock(mu);
      if (stopping) return;
    }
    auto port = fut.get();
    if (!port) {
      set_api_error(port.error().message);
      return;
    }
    auto info = inspect_cert(issued->cert_pem);
    std::lock_guard lock(mu);
    api_error.clear();
    api_port = *port;
    server_cert_not_after = info ? info->not_after : now;
  }

  // On the event loop: starts the listener, or swaps its certificate.
  Expected<std::uint16_t> serve(const http::TlsOptions& tls) {
    if (api) {
      if (auto ok = api->set_tls(tls); !ok) return std::unexpected(ok.error());
      logger.info("Renewed the cluster API certificate");
      std::lock_guard lock(mu);
      return api_port;
    }
    http::ServerLimits limits;
    limits.max_connections = static_cast<std::size_t>(core.cluster.api.max_connections);
    limits.idle_timeout = kMaxLongPoll + std::chrono::seconds(30);
    limits.max_body_bytes = std::size_t{64} * 1024;
    auto server = std::make_unique<http::Server>(io, limits, log::Logger("http.cluster"));
    server->set_router(build_api_router());
    const auto& a = core.cluster.api;
    auto bound = server->listen_tls(a.address, static_cast<std::uint16_t>(a.port), tls);
    if (!bound) {
      return fail(Errc::unavailable,
                  fmt::format("cluster API on {}:{}: {} (change cluster.api.port)", a.address,
                              a.port, bound.error().message));
    }
    server->start();
    api = std::move(server);
    api_for_metrics = api.get();
    logger.info("Cluster API serving on https://{}:{}", a.address, bound->port());
    return bound->port();
  }

  // Mirrors desired/ into memory and wakes long-polls when a node's entry changes.
  void ensure_desired_watch() {
    if (desired_watch) return;
    auto r =
        store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kDesired)), 0});
    if (!r) return;
    std::map<std::string, std::pair<std::int64_t, json>> snapshot;
    for (const auto& kv : r->kvs)
      snapshot[name_of(kv.key, keys::kDesired)] = {kv.mod_revision, parse_value(kv.value)};
    std::weak_ptr<Impl> weak = shared_from_this();
    auto w =
        store.watch(store::WatchRequest{store::KeyRange::prefix(std::string(keys::kDesired)),
                                        r->revision + 1, false},
                    [weak](const store::WatchResponse& resp) {
                      auto self = weak.lock();
                      if (!self) return;
                      if (resp.error) {
                        // Compacted or closed: re-list on the cluster thread.
                        asio::post(self->io, [self] { self->desired_lost(); });
                        return;
                      }
                      std::vector<std::pair<std::string, std::pair<std::int64_t, json>>> changes;
                      changes.reserve(resp.events.size());
                      for (const auto& ev : resp.events) {
                        changes.push_back({name_of(ev.kv.key, keys::kDesired),
                                           {ev.kv.mod_revision, ev.type == store::EventType::put
                                                                    ? parse_value(ev.kv.value)
                                                                    : json()}});
                      }
                      asio::post(self->io, [self, changes = std::move(changes)] {
                        for (const auto& [name, entry] : changes)
                          self->desired_changed(name, entry);
                      });
                    });
    if (!w) return;
    desired_watch = std::move(*w);
    asio::post(io, [self = shared_from_this(), snapshot = std::move(snapshot)] {
      for (const auto& [name, entry] : snapshot)
        self->desired_changed(name, entry);
    });
  }

  // The watch ended (compacted, store closed): the cluster thread re-lists on its next step.
  void desired_lost() {
    {
      std::lock_guard lock(mu);
      poked = true;
      lost_watch = true;
    }
    cv.notify_all();
  }
  bool lost_watch = false;  // guarded by mu

  // On the event loop.
  void desired_changed(const std::string& name, const std::pair<std::int64_t, json>& entry) {
    auto& slot = desired[name];
    if (entry.first <= slot.first) return;
    slot = entry;
    auto [b, e] = waiters.equal_range(name);
    for (auto it = b; it != e; ++it)
      it->second->cancel();
  }

  // This controller reports itself like any node, straight into the store.
  bool self_beat() {
    const std::string& name = core.node.name;
    json member = {{"name", name}, {"role", "controller"}, {"joined_at", unix_now()}};
    store::Txn reg;
    reg.compares.push_back(store::Compare::create_revision(keys::at(keys::kMembers, name),
                                                           store::CompareOp::equal, 0));
    reg.success.push_back(store::Op::make_put(keys::at(keys::kMembers, name), member.dump()));
    if (auto r = store.txn(reg); !r) return false;
    json status = {{"version", NECO_VERSION},
                   {"role", "controller"},
                   {"reported_at", unix_now()},
                   {"via", name},
                   {"health", "healthy"}};
    return static_cast<bool>(store.put_value(keys::at(keys::kStatus, name), status.dump()));
  }

  // The leader's verdicts: unreachable after the configured missed beats, healthy again once
  // beats come back. Each write is fenced by the term and by the status revision it judged.
  void membership_pass() {
    auto members =
        store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kMembers)), 0});
    auto status =
        store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kStatus)), 0});
    auto states =
        store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kState)), 0});
    if (!members || !status || !states) return;
    std::map<std::string, std::int64_t> status_rev;
    for (const auto& kv : status->kvs)
      status_rev[name_of(kv.key, keys::kStatus)] = kv.mod_revision;
    std::map<std::string, std::string> verdict;
    for (const auto& kv : states->kvs)
      verdict[name_of(kv.key, keys::kState)] = string_field(parse_value(kv.value), "state");
    if (new_term.exchange(false)) tracks_fresh = false;
    const auto now = Clock::now();
    std::set<std::string> names;
    std::int64_t healthy = 0, unreachable = 0;
    for (const auto& kv : members->kvs) {
      const auto name = name_of(kv.key, keys::kMembers);
      names.insert(name);
      const auto rev = status_rev.count(name) != 0 ? status_rev[name] : 0;
      auto [it, inserted] = tracks.try_emplace(name, BeatTrack{rev, now});
      if (!tracks_fresh || it->second.status_revision != rev) it->second = BeatTrack{rev, now};
      const auto want = decide_state(it->second, now, core.cluster.heartbeat_interval,
                                     core.cluster.unreachable_after);
      // A member that has never reported is joining, not healthy.
      if (rev == 0 && want == kHealthy) continue;
      (want == kHealthy ? healthy : unreachable)++;
      if (verdict[name] == want) continue;
      store::Txn t;
      t.compares.push_back(store::Compare::mod_revision(keys::at(keys::kStatus, name),
                                                        store::CompareOp::equal, rev));
      json doc = {{"state", want},
                  {"since", unix_now()},
                  {"term", election.current().term},
                  {"by", core.node.name}};
      t.success.push_back(store::Op::make_put(keys::at(keys::kState, name), doc.dump()));
      auto r = election.fenced_txn(t);
      if (!r) {
        if (r.error().code == Errc::failed_precondition) {
          ++fenced_refusals;
          logger.warning("Leader write refused: {}", r.error().message);
          return;
        }
        continue;
      }
      if (!r->succeeded) continue;  // a beat arrived meanwhile: judge again next pass
      const std::string_view labels[] = {want};
      state_changes->with(labels).inc();
      if (want == kUnreachable) {
        logger.warning("Node '{}' is unreachable: no heartbeat for {} intervals", name,
                       core.cluster.unreachable_after);
      } else {
        logger.info("Node '{}' is healthy", name);
      }
    }
    std::erase_if(tracks, [&](const auto& kv) { return names.count(kv.first) == 0; });
    tracks_fresh = true;
    nodes_healthy = healthy;
    nodes_unreachable = unreachable;
    nodes_total = static_cast<std::int64_t>(names.size());
  }

  // ---- The cluster API (HTTPS) ----

  std::shared_ptr<http::Router> build_api_router() {
    auto router = std::make_shared<http::Router>();
    auto add = [&](std::string_view path, std::string help, http::Handler h, bool mutates) {
      if (auto ok = router->add(path, std::move(help), std::move(h), mutates); !ok) {
        logger.error("Failed to add route '{}': {}", path, ok.error().message);
      }
    };
    std::weak_ptr<Impl> weak = shared_from_this();
    add(
        "/v1/cluster/ca", "the cluster CA certificate (check it against the pinned fingerprint)",
        [this](Request&) -> asio::awaitable<Response> {
          std::lock_guard lock(mu);
          co_return Response::json({{"cert", ca.cert_pem}, {"fingerprint", ca_fingerprint}});
        },
        false);
    add(
        "/v1/cluster/join", "exchange a join token and a CSR for a node certificate",
        [this](Request& req) -> asio::awaitable<Response> { co_return co_await join(req); }, true);
    add(
        "/v1/cluster/renew", "a fresh certificate for the calling node (mutual TLS)",
        [this](Request& req) -> asio::awaitable<Response> { co_return co_await renew(req); }, true);
    add(
        "/v1/cluster/heartbeat", "status report of the calling node (mutual TLS)",
        [this](Request& req) -> asio::awaitable<Response> { co_return co_await heartbeat(req); },
        true);
    add(
        "/v1/cluster/desired", "long-poll: the calling node's desired state (?after=REV&wait=30s)",
        [this](Request& req) -> asio::awaitable<Response> { co_return co_await desired_poll(req); },
        false);
    return router;
  }

  asio::awaitable<Response> join(Request& req) {
    auto body = parse_body(req);
    if (!body) co_return reject(req, "bad_request", body.error());
    const std::string name = string_field(*body, "name");
    const std::string token_text = string_field(*body, "token");
    const std::string csr = string_field(*body, "csr");
    if (auto why = config::check_node_name(name); !why.empty()) {
      co_return reject(req, "bad_name", Error{Errc::invalid_argument, "node name: " + why});
    }
    auto token = parse_token(token_text);
    if (!token) co_return reject(req, "bad_token", token.error());
    auto csr_info = inspect_csr(csr);
    if (!csr_info) co_return reject(req, "bad_csr", csr_info.error());
    auto ca_now = ca_copy();
    if (ca_now.cert_pem.empty()) {
      co_return error_response(Error{Errc::unavailable, "the cluster CA is not loaded yet"});
    }
    const auto validity = std::chrono::duration_cast<seconds>(core.cluster.cert_validity);
    const std::string via = core.node.name;
    // Shared: a job past its deadline still runs on its worker after this frame is gone.
    auto reason = std::make_shared<std::string>();
    auto job = [this, name, token = *token, csr, ca_now, validity, via,
                reason]() -> Expected<Response> {
      auto stored = store.get(keys::at(keys::kTokens, token.id));
      if (!stored) {
        *reason = "unknown_token";
        if (stored.error().code != Errc::not_found) return std::unexpected(stored.error());
        return fail(Errc::permission_denied,
                    "join token is unknown, already used or expired; create a new one with "
                    "'neco join-token create'");
      }
      const auto doc = parse_value(stored->value);
      if (!constant_time_equal(string_field(doc, "hash"), sha256_hex(token.secret))) {
        *reason = "bad_token";
        return fail(Errc::permission_denied, "join token does not match");
      }
      if (doc.value("expires_at", std::int64_t{0}) <= unix_now()) {
        *reason = "expired_token";
        return fail(Errc::permission_denied,
                    "join token expired; create a new one with 'neco join-token create'");
      }
      IssueOptions o;
      o.common_name = name;
      o.client = true;
      o.validity = validity;
      auto cert = sign_csr(csr, ca_now, o);
      if (!cert) {
        *reason = "bad_csr";
        return std::unexpected(cert.error());
      }
      auto info = inspect_cert(*cert);
      json member = {{"name", name},
                     {"role", "node"},
                     {"joined_at", unix_now()},
                     {"joined_via", via},
                     {"token", token.id},
                     {"cert_serial", info ? info->serial_hex : ""},
                     {"cert_not_after", info ? to_unix(info->not_after) : 0}};
      // Single use: the token goes and the member appears in one txn, or neither happens.
      store::Txn t;
      t.compares.push_back(store::Compare::mod_revision(
          keys::at(keys::kTokens, token.id), store::CompareOp::equal, stored->mod_revision));
      t.compares.push_back(store::Compare::create_revision(keys::at(keys::kMembers, name),
                                                           store::CompareOp::equal, 0));
      t.success.push_back(
          store::Op::make_delete(store::KeyRange::exact(keys::at(keys::kTokens, token.id))));
      t.success.push_back(store::Op::make_put(keys::at(keys::kMembers, name), member.dump()));
      t.failure.push_back(store::Op::make_range(
          store::RangeRequest{store::KeyRange::exact(keys::at(keys::kMembers, name)), 1}));
      auto r = store.txn(t);
      if (!r) return std::unexpected(r.error());
      if (!r->succeeded) {
        if (!r->responses.front().range.kvs.empty()) {
          *reason = "name_taken";
          return fail(Errc::already_exists,
                      fmt::format("node '{}' is already a member; a node keeps its identity in "
                                  "its state directory. To re-provision it, run 'neco nodes "
                                  "remove {}' on a controller first",
                                  name, name));
        }
        *reason = "used_token";
        return fail(Errc::permission_denied, "join token was used concurrently");
      }
      logger.info("Node '{}' joined with token {} (certificate serial {})", name, token.id,
                  info ? info->serial_hex : "?");
      return Response::json({{"cert", *cert}, {"ca", ca_now.cert_pem}});
    };
    auto r = co_await pool.run(std::move(job), kStoreDeadline);
    if (!r) co_return reason->empty() ? error_response(r.error()) : reject(req, *reason, r.error());
    co_return std::move(*r);
  }

  // The calling node's name from its verified client certificate; a body naming someone else
  // is refused.
  Expected<std::string> identity(const Request& req, const json* body, std::string& reason) {
    if (req.peer_identity.empty()) {
      reason = "no_client_cert";
      return fail(Errc::permission_denied,
                  "this call needs the node's client certificate (mutual TLS); join first");
    }
    if (body != nullptr) {
      const auto claimed = string_field(*body, "name");
      if (!claimed.empty() && claimed != req.peer_identity) {
        reason = "identity_mismatch";
        return fail(Errc::permission_denied,
                    fmt::format("certificate is for '{}' but the request acts as '{}'; a node "
                                "can only act as itself",
                                req.peer_identity, claimed));
      }
    }
    return req.peer_identity;
  }

  asio::awaitable<Response> renew(Request& req) {
    auto body = parse_body(req);
    if (!body) co_return reject(req, "bad_request", body.error());
    std::string reason;
    auto name = identity(req, &*body, reason);
    if (!name) co_return reject(req, reason, name.error());
    const std::string csr = string_field(*body, "csr");
    auto csr_info = inspect_csr(csr);
    if (!csr_info) co_return reject(req, "bad_csr", csr_info.error());
    auto ca_now = ca_copy();
    const auto validity = std::chrono::duration_cast<seconds>(core.cluster.cert_validity);
    auto why = std::make_shared<std::string>();
    auto job = [this, n = *name, csr, ca_now, validity, reason = why]() -> Expected<Response> {
      auto member = store.get(keys::at(keys::kMembers, n));
      if (!member) {
        *reason = "not_member";
        return fail(Errc::permission_denied, fmt::format("node '{}' is not a member", n));
      }
      IssueOptions o;
      o.common_name = n;
      o.validity = validity;
      auto cert = sign_csr(csr, ca_now, o);
      if (!cert) {
        *reason = "bad_csr";
        return std::unexpected(cert.error());
      }
      auto info = inspect_cert(*cert);
      auto doc = parse_value(member->value);
      doc["cert_serial"] = info ? info->serial_hex : "";
      doc["cert_not_after"] = info ? to_unix(info->not_after) : 0;
      store::Txn t;
      t.compares.push_back(store::Compare::mod_revision(
          keys::at(keys::kMembers, n), store::CompareOp::equal, member->mod_revision));
      t.success.push_back(store::Op::make_put(keys::at(keys::kMembers, n), doc.dump()));
      auto r = store.txn(t);
      if (!r) return std::unexpected(r.error());
      if (!r->succeeded) return fail(Errc::unavailable, "member record changed; retry");
      logger.info("Renewed the certificate of node '{}'", n);
      return Response::json({{"cert", *cert}, {"ca", ca_now.cert_pem}});
    };
    auto r = co_await pool.run(std::move(job), kStoreDeadline);
    if (!r) co_return why->empty() ? error_response(r.error()) : reject(req, *why, r.error());
    co_return std::move(*r);
  }

  asio::awaitable<Response> heartbeat(Request& req) {
    auto body = parse_body(req);
    if (!body) co_return reject(req, "bad_request", body.error());
    std::string reason;
    auto name = identity(req, &*body, reason);
    if (!name) co_return reject(req, reason, name.error());
    json status = {{"version", string_field(*body, "version")},
                   {"role", "node"},
                   {"health", string_field(*body, "health")},
                   {"modules", body->value("modules", json::array())},
                   {"reported_at", unix_now()},
                   {"via", core.node.name}};
    auto why = std::make_shared<std::string>();
    auto job = [this, n = *name, doc = status.dump(), reason = why]() -> Expected<Response> {
      // Removed members stop counting at once: the status write needs the member record.
      store::Txn t;
      t.compares.push_back(store::Compare::create_revision(keys::at(keys::kMembers, n),
                                                           store::CompareOp::greater, 0));
      t.success.push_back(store::Op::make_put(keys::at(keys::kStatus, n), doc));
      auto r = store.txn(t);
      if (!r) return std::unexpected(r.error());
      if (!r->succeeded) {
        *reason = "not_member";
        return fail(Errc::permission_denied,
                    fmt::format("node '{}' is not a member (removed?); it must join again", n));
      }
      return Response::json({{"accepted", true}, {"revision", r->revision}});
    };
    auto r = co_await pool.run(std::move(job), kStoreDeadline);
    if (!r) co_return why->empty() ? error_response(r.error()) : reject(req, *why, r.error());
    heartbeats->inc();
    co_return std::move(*r);
  }

  asio::awaitable<Response> desired_poll(Request& req) {
    std::string reason;
    auto name = identity(req, nullptr, reason);
    if (!name) co_return reject(req, reason, name.error());
    std::int64_t after = 0;
    if (auto a = req.query_param("after")) {
      auto [p, ec] = std::from_chars(a->data(), a->data() + a->size(), after);
      if (ec != std::errc() || p != a->data() + a->size()) {
        co_return reject(req, "bad_request",
                         Error{Errc::invalid_argument, "after: expected a revision number"});
      }
    }
    std::chrono::milliseconds wait = std::chrono::seconds(30);
    if (auto w = req.query_param("wait")) {
      auto d = config::parse_duration(*w);
      if (!d || *d > kMaxLongPoll) {
        co_return reject(req, "bad_request",
                         Error{Errc::invalid_argument, "wait: expected a duration up to 5m"});
      }
      wait = *d;
    }
    const auto current = [&] {
      auto it = desired.find(*name);
      return it == desired.end() ? std::pair<std::int64_t, json>{0, json()} : it->second;
    };
    if (current().first <= after && wait.count() > 0) {
      auto timer = std::make_shared<asio::steady_timer>(io, wait);
      auto it = waiters.emplace(*name, timer);
      boost::system::error_code ec;
      co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
      waiters.erase(it);
    }
    const auto [rev, doc] = current();
    co_return Response::json({{"revision", rev}, {"desired", doc}});
  }

  // ---- Admin routes (local) ----

  asio::awaitable<Response> create_token(Request& req) {
    auto body = req.body.empty() ? Expected<json>(json::object()) : parse_body(req);
    if (!body) co_return error_response(body.error());
    std::chrono::milliseconds ttl = std::chrono::hours(1);
    if (auto t = body->find("ttl"); t != body->end()) {
      auto d = t->is_string() ? config::parse_duration(t->get<std::string>()) : std::nullopt;
      if (!d || d->count() < 1000 || *d > std::chrono::hours(24 * 7)) {
        co_return error_response(
            Error{Errc::invalid_argument, "ttl: expected a duration from 1s to 168h, like 1h"});
      }
      ttl = *d;
    }
    std::string fingerprint;
    {
      std::lock_guard lock(mu);
      fingerprint = ca_fingerprint;
    }
    if (fingerprint.empty()) {
      co_return error_response(
          Error{Errc::unavailable, "the cluster CA does not exist yet; is there a leader?"});
    }
    auto token = make_token();
    if (!token) co_return error_response(token.error());
    const auto expires = unix_now() + ttl.count() / 1000;
    std::vector<std::string> controllers;
    for (const auto& a : core.cluster.api.advertise.empty()
                             ? std::vector<std::string>{core.cluster.api.address}
                             : core.cluster.api.advertise) {
      controllers.push_back(fmt::format("https://{}:{}", a, api_port_now()));
    }
    auto job = [this, t = *token, expires, ttl, fingerprint, controllers]() -> Expected<Response> {
      // The lease removes the token once it expires, even if no controller is watching.
      auto lease = store.grant(ttl.count() / 1000 + 60);
      if (!lease) return std::unexpected(lease.error());
      json doc = {{"hash", sha256_hex(t.secret)},
                  {"expires_at", expires},
                  {"created_at", unix_now()},
                  {"created_by", core.node.name}};
      auto put = store.put_value(keys::at(keys::kTokens, t.id), doc.dump(), lease->id);
      if (!put) return std::unexpected(put.error());
      logger.info("Created join token {} (expires in {})", t.id,
                  config::format_duration(std::chrono::duration_cast<config::Duration>(ttl)));
      return Response::json({{"token", t.text()},
                             {"id", t.id},
                             {"expires_at", expires},
                             {"ca_fingerprint", fingerprint},
                             {"controllers", controllers}});
    };
    co_return co_await blocking(std::move(job));
  }

  std::uint16_t api_port_now() const {
    std::lock_guard lock(mu);
    return api_port;
  }

  asio::awaitable<Response> list_tokens() {
    auto job = [this]() -> Expected<Response> {
      auto r =
          store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kTokens)), 0});
      if (!r) return std::unexpected(r.error());
      json out = json::array();
      for (const auto& kv : r->kvs) {
        auto doc = parse_value(kv.value);
        out.push_back({{"id", name_of(kv.key, keys::kTokens)},
                       {"expires_at", doc.value("expires_at", std::int64_t{0})},
                       {"created_by", string_field(doc, "created_by")}});
      }
      return Response::json({{"tokens", out}});
    };
    co_return co_await blocking(std::move(job));
  }

  asio::awaitable<Response> list_nodes() {
    auto job = [this]() -> Expected<Response> {
      auto members =
          store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kMembers)), 0});
      if (!members) return std::unexpected(members.error());
      auto status =
          store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kStatus)), 0});
      if (!status) return std::unexpected(status.error());
      auto states =
          store.range(store::RangeRequest{store::KeyRange::prefix(std::string(keys::kState)), 0});
      if (!states) return std::unexpected(states.error());
      std::map<std::string, json> st, verdict;
      for (const auto& kv : status->kvs)
        st[name_of(kv.key, keys::kStatus)] = parse_value(kv.value);
      for (const auto& kv : states->kvs)
        verdict[name_of(kv.key, keys::kState)] = parse_value(kv.value);
      const auto leader_info = election.current();
      json out = json::array();
      for (const auto& kv : members->kvs) {
        const auto name = name_of(kv.key, keys::kMembers);
        const auto m = parse_value(kv.value);
        const auto& s = st[name];
        const auto& v = verdict[name];
        std::string state = v.is_object() ? string_field(v, "state") : "";
        if (state.empty()) state = s.is_object() ? "joining" : "joined";
        out.push_back({{"name", name},
                       {"role", string_field(m, "role")},
                       {"version", s.is_object() ? string_field(s, "version") : ""},
                       {"state", state},
                       {"health", s.is_object() ? string_field(s, "health") : ""},
                       {"last_seen", s.is_object() ? s.value("reported_at", std::int64_t{0}) : 0},
                       {"via", s.is_object() ? string_field(s, "via") : ""},
                       {"leader", name == leader_info.leader},
                       {"cert_not_after", m.value("cert_not_after", std::int64_t{0})},
                       {"modules", s.is_object() ? s.value("modules", json::array()) : json()}});
      }
      return Response::json({{"nodes", out}, {"revision", members->revision}});
    };
    co_return co_await blocking(std::move(job));
  }

  asio::awaitable<Response> remove_node(Request& req) {
    const std::string name(req.path_param("name").value_or(""));
    auto job = [this, name]() -> Expected<Response> {
      store::Txn t;
      for (const auto prefix : {keys::kMembers, keys::kStatus, keys::kState, keys::kDesired})
        t.success.push_back(store::Op::make_delete(store::KeyRange::exact(keys::at(prefix, name))));
      t.compares.push_back(store::Compare::create_revision(keys::at(keys::kMembers, name),
                                                           store::CompareOp::greater, 0));
      auto r = store.txn(t);
      if (!r) return std::unexpected(r.error());
      if (!r->succeeded) return fail(Errc::not_found, fmt::format("no node '{}'", name));
      logger.info("Removed node '{}' from the cluster", name);
      return Response::json({{"removed", name}});
    };
    co_return co_await blocking(std::move(job));
  }
};

ClusterController::ClusterController(asio::io_context& io, WorkerPool& pool, store::Store& store,
                                     store::Election& election, metrics::Registry& registry,
                                     const config::CoreConfig& core)
    : impl_(std::make_shared<Impl>(io, pool, store, election, registry, core)) {}

ClusterController::~ClusterController() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Expected<void> ClusterController::start() {
  if (!impl_->core.cluster.api.enabled) return {};
  impl_->thread = std::thread([raw = impl_.get()] { raw->run(); });
  return {};
}

void ClusterController::on_leader(std::int64_t) {
  impl_->new_term = true;
  impl_->leader = true;
  impl_->poke();
}

void ClusterController::on_follower() {
  impl_->leader = false;
  impl_->poke();
}

void ClusterController::add_admin_routes(http::Router& router) {
  auto* impl = impl_.get();
  auto add = [&](std::string_view path, std::string help, http::Handler h, bool mutates) {
    if (auto ok = router.add(path, std::move(help), std::move(h), mutates); !ok) {
      impl->logger.error("Failed to add route '{}': {}", path, ok.error().message);
    }
  };
  add(
      "/v1/cluster/join-tokens", "create a single-use join token ({\"ttl\": \"1h\"})",
      [impl](Request& req) -> asio::awaitable<Response> {
        co_return co_await impl->create_token(req);
      },
      true);
  add(
      "/v1/cluster/join-tokens", "join tokens not yet used or expired",
      [impl](Request&) -> asio::awaitable<Response> { co_return co_await impl->list_tokens(); },
      false);
  add(
      "/v1/cluster/nodes", "cluster members with role, version, state and last heartbeat",
      [impl](Request&) -> asio::awaitable<Response> { co_return co_await impl->list_nodes(); },
      false);
  add(
      "/v1/cluster/nodes/{name}", "remove a member (it must join again with a new token)",
      [impl](Request& req) -> asio::awaitable<Response> {
        co_return co_await impl->remove_node(req);
      },
      true);
}

asio::awaitable<void> ClusterController::stop(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  for (auto& [name, timer] : impl_->waiters)
    timer->cancel();
  if (impl_->api) co_await impl_->api->async_stop(grace);
  // The cluster thread may be waiting for the event loop (listener start): join off-loop.
  auto* impl = impl_.get();
  auto join = [impl]() -> Expected<void> {
    if (impl->thread.joinable()) impl->thread.join();
    return {};
  };
  (void)co_await impl_->pool.run(std::move(join), std::chrono::seconds(10));
}

nlohmann::json ClusterController::status() const {
  std::lock_guard lock(impl_->mu);
  json j = {{"ca_fingerprint", impl_->ca_fingerprint},
            {"api", impl_->api_port == 0
                        ? json()
                        : json(fmt::format("https://{}:{}", impl_->core.cluster.api.address,
                                           impl_->api_port))},
            {"serving", impl_->api_port != 0}};
  if (!impl_->api_error.empty()) j["problem"] = impl_->api_error;
  return j;
}

const http::Server* ClusterController::api_server() const {
  return impl_->api_for_metrics.load();
}

std::uint16_t ClusterController::api_port() const {
  std::lock_guard lock(impl_->mu);
  return impl_->api_port;
}

}  // namespace neco::cluster
