#include "agent/cluster/node.hpp"

#include <sys/stat.h>

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "agent/cluster/https_client.hpp"
#include "agent/cluster/pki.hpp"
#include "agent/cluster/records.hpp"
#include "agent/log/log.hpp"

namespace neco::cluster {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using SysClock = std::chrono::system_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return {};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The error a controller sent ({"error","message"}), or the status line.
Error reply_error(const HttpsReply& r) {
  auto j = json::parse(r.body, nullptr, false);
  std::string msg = j.is_object() && j.contains("message") && j["message"].is_string()
                        ? j["message"].get<std::string>()
                        : fmt::format("HTTP {}", r.status);
  Errc code = r.status == 403   ? Errc::permission_denied
              : r.status == 409 ? Errc::already_exists
              : r.status == 400 ? Errc::invalid_argument
              : r.status >= 500 ? Errc::unavailable
                                : Errc::internal;
  return Error{code, fmt::format("{} said: {}", r.endpoint, msg)};
}

std::int64_t to_unix(SysClock::time_point t) {
  return std::chrono::duration_cast<seconds>(t.time_since_epoch()).count();
}

}  // namespace

struct ClusterNode::Impl {
  const config::CoreConfig& core;
  std::function<json()> report;
  log::Logger logger{"cluster"};
  std::filesystem::path dir;
  HttpsClient client;

  mutable std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  // Status, guarded by mu.
  bool joined = false;
  bool beating = false;
  std::string problem;
  std::int64_t last_heartbeat = 0;
  SysClock::time_point not_before{}, not_after{};  // not_before: when we received it
  std::int64_t desired_revision = 0;
  json desired_doc;
  std::string ca_pem;

  std::thread main_thread, poll_thread;

  Impl(const config::CoreConfig& c, std::function<json()> r)
      : core(c),
        report(std::move(r)),
        dir(std::filesystem::path(c.state_dir) / "pki"),
        client(c.cluster.join.controllers) {}

  bool sleep(milliseconds d) {
    std::unique_lock lock(mu);
    cv.wait_for(lock, d, [&] { return stopping; });
    return !stopping;
  }

  void set_problem(const std::string& p) {
    std::lock_guard lock(mu);
    if (!p.empty() && p != problem) logger.warning("{}", p);
    problem = p;
  }

  // The identity kept from an earlier join, if it is whole, ours and signed by the pinned CA.
  Expected<void> load_identity() {
    const auto key = read_file(dir / "node.key");
    const auto cert = read_file(dir / "node.crt");
    const auto ca = read_file(dir / "ca.crt");
    if (key.empty() || cert.empty() || ca.empty()) {
      return fail(Errc::not_found, "no identity in " + dir.string());
    }
    auto fp = cert_fingerprint(ca);
    if (!fp || *fp != core.cluster.join.ca_fingerprint) {
      return fail(Errc::failed_precondition,
                  fmt::format("{}/ca.crt is not the CA pinned by cluster.join.ca_fingerprint",
                              dir.string()));
    }
    auto info = inspect_cert(cert);
    if (!info) return std::unexpected(info.error());
    if (info->common_name != core.node.name) {
      return fail(Errc::failed_precondition,
                  fmt::format("{}/node.crt is for '{}', not this node '{}'", dir.string(),
                              info->common_name, core.node.name));
    }
    if (auto ok = verify_cert(cert, ca); !ok) {
      return fail(Errc::failed_precondition,
                  fmt::format("{}/node.crt: {}", dir.string(), ok.error().message));
    }
    client.set_identity(TlsIdentity{ca, cert, key});
    // The certificate's life counts from when we received it: signers backdate notBefore for
    // clock skew, which would make a short-lived certificate look due for renewal at once.
    struct stat st {};
    auto received = ::stat((dir / "node.crt").c_str(), &st) == 0
                        ? SysClock::from_time_t(st.st_mtim.tv_sec)
                        : SysClock::now();
    received = std::clamp(received, info->not_before, info->not_after);
    std::lock_guard lock(mu);
    joined = true;
    ca_pem = ca;
    not_before = received;
    not_after = info->not_after;
    return {};
  }

  Expected<void> save_identity(const std::string& key, const std::string& cert,
                               const std::string& ca) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    std::filesystem::permissions(dir, std::filesystem::perms::owner_all, ec);
    // The key first: a crash between the writes leaves an old cert with a new key, which
    // load_identity() refuses, never a cert whose key is lost.
    for (const auto& [name, text] :
         {std::pair{"node.key", &key}, std::pair{"ca.crt", &ca}, std::pair{"node.crt", &cert}}) {
      if (auto ok = write_private_file((dir / name).string(), *text); !ok) return ok;
    }
    return {};
  }

  // Fetches the CA from a controller and checks it against the pinned fingerprint.
  Expected<std::string> discover_ca() {
    client.set_identity({});
    auto r = client.request("GET", "/v1/cluster/ca", "", seconds(10));
    if (!r) return std::unexpected(r.error());
    if (r->status != 200) return std::unexpected(reply_error(*r));
    auto j = json::parse(r->body, nullptr, false);
    const std::string pem = j.is_object() && j.contains("cert") && j["cert"].is_string()
                                ? j["cert"].get<std::string>()
                                : "";
    auto fp = cert_fingerprint(pem);
    if (!fp) return fail(Errc::unavailable, r->endpoint + " sent no readable CA certificate");
    if (*fp != core.cluster.join.ca_fingerprint) {
      return fail(Errc::permission_denied,
                  fmt::format("{} presented CA {} but cluster.join.ca_fingerprint is {}; "
                              "refusing to trust it",
                              r->endpoint, *fp, core.cluster.join.ca_fingerprint));
    }
    return pem;
  }

  Expected<void> join() {
    if (core.cluster.join.token.empty()) {
      return fail(Errc::failed_precondition,
                  fmt::format("not joined yet and cluster.join.token is empty; create a token "
                              "with 'neco join-token create' on a controller (identity is kept "
                              "in {})",
                              dir.string()));
    }
    auto ca = discover_ca();
    if (!ca) return std::unexpected(ca.error());
    client.set_identity(TlsIdentity{*ca, "", ""});
    auto key = generate_key_pem();
    if (!key) return std::unexpected(key.error());
    auto csr = create_csr(*key, core.node.name);
    if (!csr) return std::unexpected(csr.error());
    json body = {{"name", core.node.name}, {"token", core.cluster.join.token}, {"csr", *csr}};
    auto r = client.request("POST", "/v1/cluster/join", body.dump(), seconds(30));
    if (!r) return std::unexpected(r.error());
    if (r->status != 200) return std::unexpected(reply_error(*r));
    auto j = json::parse(r->body, nullptr, false);
    const std::string cert =
        j.is_object() && j.value("cert", json()).is_string() ? j["cert"].get<std::string>() : "";
    if (auto ok = verify_cert(cert, *ca); !ok) {
      return fail(Errc::internal,
                  "the controller returned an unusable certificate: " + ok.error().message);
    }
    if (auto ok = save_identity(*key, cert, *ca); !ok) return ok;
    logger.info("Joined the cluster as '{}' through {}", core.node.name, r->endpoint);
    return load_identity();
  }

  Expected<void> heartbeat() {
    json body = report ? report() : json::object();
    body["name"] = core.node.name;
    body["version"] = NECO_VERSION;
    auto r = client.request("POST", "/v1/cluster/heartbeat", body.dump(), seconds(10));
    if (!r) return std::unexpected(r.error());
    if (r->status != 200) return std::unexpected(reply_error(*r));
    std::lock_guard lock(mu);
    beating = true;
    last_heartbeat = unix_now();
    return {};
  }

  // A new certificate once a third of the current one's life is left; the key is new too.
  Expected<void> maybe_renew() {
    SysClock::time_point nb, na;
    std::string ca;
    {
      std::lock_guard lock(mu);
      nb = not_before;
      na = not_after;
      ca = ca_pem;
    }
    if (na - SysClock::now() > (na - nb) / 3) return {};
    auto key = generate_key_pem();
    if (!key) return std::unexpected(key.error());
    auto csr = create_csr(*key, core.node.name);
    if (!csr) return std::unexpected(csr.error());
    auto r = client.request("POST", "/v1/cluster/renew", json{{"csr", *csr}}.dump(), seconds(30));
    if (!r) return std::unexpected(r.error());
    if (r->status != 200) return std::unexpected(reply_error(*r));
    auto j = json::parse(r->body, nullptr, false);
    const std::string cert =
        j.is_object() && j.value("cert", json()).is_string() ? j["cert"].get<std::string>() : "";
    if (auto ok = verify_cert(cert, ca); !ok) {
      return fail(Errc::internal,
                  "renewal returned an unusable certificate: " + ok.error().message);
    }
    if (auto ok = save_identity(*key, cert, ca); !ok) return ok;
    logger.info("Renewed the node certificate through {}", r->endpoint);
    return load_identity();
  }

  void run() {
    // Join (or load the kept identity), retrying: controllers may not be up yet.
    auto backoff = milliseconds(500);
    while (true) {
      auto have = load_identity();
      if (!have && have.error().code == Errc::not_found) have = join();
      if (have) break;
      set_problem("cannot join the cluster: " + have.error().message);
      if (!sleep(backoff)) return;
      backoff = std::min<milliseconds>(backoff * 2, seconds(30));
    }
    set_problem("");
    poll_thread = std::thread([this] { poll(); });
    while (true) {
      if (auto ok = heartbeat(); !ok) {
        set_problem("heartbeat failed: " + ok.error().message);
      } else {
        set_problem("");
      }
      if (auto ok = maybe_renew(); !ok) set_problem("renewal failed: " + ok.error().message);
      if (!sleep(core.cluster.heartbeat_interval)) return;
    }
  }

  // Long-polls the desired state; later modules act on it (upgrade, reboot).
  void poll() {
    while (true) {
      std::int64_t after = 0;
      {
        std::lock_guard lock(mu);
        if (stopping) return;
        after = desired_revision;
      }
      auto r = client.request("GET", fmt::format("/v1/cluster/desired?after={}&wait=30s", after),
                              "", seconds(40));
      if (!r || r->status != 200) {
        if (!sleep(seconds(1))) return;
        continue;
      }
      auto j = json::parse(r->body, nullptr, false);
      if (!j.is_object()) continue;
      std::lock_guard lock(mu);
      const auto rev = j.value("revision", std::int64_t{0});
      if (rev != desired_revision) {
        desired_revision = rev;
        desired_doc = j.value("desired", json());
        logger.info("Desired state changed (revision {})", rev);
      }
    }
  }
};

ClusterNode::ClusterNode(const config::CoreConfig& core, std::function<json()> report)
    : impl_(std::make_unique<Impl>(core, std::move(report))) {}

ClusterNode::~ClusterNode() {
  stop();
}

Expected<void> ClusterNode::start() {
  if (impl_->main_thread.joinable()) return {};
  impl_->main_thread = std::thread([raw = impl_.get()] { raw->run(); });
  return {};
}

void ClusterNode::stop() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->client.abort();
  if (impl_->main_thread.joinable()) impl_->main_thread.join();
  if (impl_->poll_thread.joinable()) impl_->poll_thread.join();
}

json ClusterNode::status() const {
  std::lock_guard lock(impl_->mu);
  json j = {{"joined", impl_->joined},
            {"controller", impl_->client.current()},
            {"last_heartbeat", impl_->last_heartbeat},
            {"cert_not_after", impl_->joined ? to_unix(impl_->not_after) : 0},
            {"desired_revision", impl_->desired_revision},
            {"desired", impl_->desired_doc}};
  if (!impl_->problem.empty()) j["problem"] = impl_->problem;
  return j;
}

bool ClusterNode::ready() const {
  std::lock_guard lock(impl_->mu);
  return impl_->joined && impl_->beating;
}

}  // namespace neco::cluster
