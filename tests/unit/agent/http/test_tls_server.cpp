// The server's TLS listener with certificates from the cluster PKI, driven by libcurl (real TLS
// clients) and raw sockets (clients that never speak TLS): server and mutual TLS, the identity
// handlers see, refusals at the handshake, deadlines and limits, rotation and graceful stop.
#include <catch2/catch.hpp>

#include <curl/curl.h>
#include <openssl/ssl.h>

#include <utility>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "agent/cluster/pki.hpp"
#include "agent/http/file_response.hpp"
#include "agent/http/server.hpp"
#include "tests/unit/agent/http/file_test_support.hpp"
#include "tests/unit/agent/http/raw_client.hpp"
#include "tests/unit/agent/http/server_fixture.hpp"

namespace asio = boost::asio;
namespace http = neco::http;
namespace pki = neco::cluster;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using neco::testing::Client;
using neco::testing::wait_for;  // polls a condition until it holds or the time is up

namespace {

pki::CertPem issue(const pki::CertPem& ca, const std::string& cn, bool server, bool client) {
  pki::IssueOptions o;
  o.common_name = cn;
  o.server = server;
  o.client = client;
  o.validity = 1h;
  if (server) {
    o.dns_names = {"localhost"};
    o.ip_addresses = {"127.0.0.1"};
  }
  auto issued = pki::issue_key_and_cert(ca, o);
  REQUIRE(issued);
  return *issued;
}

pki::CertPem new_ca(const std::string& cn) {
  auto ca = pki::create_ca(cn, 24h);
  REQUIRE(ca);
  return *ca;
}

// One set of certificates for the whole run.
struct Certs {
  pki::CertPem ca = new_ca("neco test CA");
  pki::CertPem other_ca = new_ca("other CA");
  pki::CertPem server = issue(ca, "controller-1", true, false);
  pki::CertPem server2 = issue(other_ca, "controller-1", true, false);  // after a rotation
  pki::CertPem client = issue(ca, "node-7", false, true);
  pki::CertPem foreign_client = issue(other_ca, "node-7", false, true);  // same CN, wrong CA
  pki::CertPem server_only = issue(ca, "node-8", true, false);           // no clientAuth EKU
};
const Certs& certs() {
  static const Certs c;
  return c;
}

http::TlsOptions server_tls(const std::string& client_ca = "", bool required = false) {
  return http::TlsOptions{certs().server.cert_pem, certs().server.key_pem, client_ca, required};
}

struct CurlReply {
  CURLcode code = CURLE_OK;
  long status = 0;
  std::string body;
  std::string error;
  long new_connections = 0;
  std::string tls_version;  // "TLSv1.3"
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

// A libcurl handle that trusts `ca_pem` only; connections are reused between get() calls.
class Https {
 public:
  explicit Https(std::string ca_pem) : ca_(std::move(ca_pem)) {
    static const bool initialised = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    REQUIRE(initialised);
    h_ = curl_easy_init();
    REQUIRE(h_ != nullptr);
  }
  ~Https() { curl_easy_cleanup(h_); }
  Https(const Https&) = delete;
  Https& operator=(const Https&) = delete;

  // Presents this certificate and key when the server asks for one.
  void client_cert(const pki::CertPem& cert) { client_ = cert; }
  // CURL_SSLVERSION_* minimum and CURL_SSLVERSION_MAX_* maximum.
  void tls_versions(long min, long max) { versions_ = min | max; }
  void cipher_list(std::string list) { ciphers_ = std::move(list); }
  // Asks for this byte range ("100-199") from now on; empty for the whole resource.
  void range(std::string r) { range_ = std::move(r); }

  CurlReply get(std::uint16_t port, const std::string& path) {
    CurlReply r;
    char error[CURL_ERROR_SIZE] = {};
    const auto url = "https://127.0.0.1:" + std::to_string(port) + path;
    curl_blob ca{ca_.data(), ca_.size(), CURL_BLOB_COPY};
    curl_easy_setopt(h_, CURLOPT_URL, url.c_str());
    curl_easy_setopt(h_, CURLOPT_CAINFO_BLOB, &ca);
    curl_easy_setopt(h_, CURLOPT_CAPATH, nullptr);
    if (client_) {
      curl_blob cert{client_->cert_pem.data(), client_->cert_pem.size(), CURL_BLOB_COPY};
      curl_blob key{client_->key_pem.data(), client_->key_pem.size(), CURL_BLOB_COPY};
      curl_easy_setopt(h_, CURLOPT_SSLCERT_BLOB, &cert);
      curl_easy_setopt(h_, CURLOPT_SSLCERTTYPE, "PEM");
      curl_easy_setopt(h_, CURLOPT_SSLKEY_BLOB, &key);
      curl_easy_setopt(h_, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_easy_setopt(h_, CURLOPT_SSLVERSION, versions_);
    if (!ciphers_.empty()) curl_easy_setopt(h_, CURLOPT_SSL_CIPHER_LIST, ciphers_.c_str());
    curl_easy_setopt(h_, CURLOPT_RANGE, range_.empty() ? nullptr : range_.c_str());
    curl_easy_setopt(h_, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(h_, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h_, CURLOPT_TIMEOUT_MS, 10'000L);
    curl_easy_setopt(h_, CURLOPT_WRITEFUNCTION, &Https::on_body);
    curl_easy_setopt(h_, CURLOPT_WRITEDATA, this);
    current_ = &r;
    r.code = curl_easy_perform(h_);
    current_ = nullptr;
    r.error = error;
    curl_easy_getinfo(h_, CURLINFO_RESPONSE_CODE, &r.status);
    curl_easy_getinfo(h_, CURLINFO_NUM_CONNECTS, &r.new_connections);
    return r;
  }

 private:
  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* self_ptr) {
    auto* self = static_cast<Https*>(self_ptr);
    CurlReply& r = *self->current_;
    if (r.tls_version.empty()) {
      // The SSL object is only guaranteed to be valid during the transfer: read it here.
      curl_tlssessioninfo* info = nullptr;
      if (curl_easy_getinfo(self->h_, CURLINFO_TLS_SSL_PTR, &info) == CURLE_OK && info != nullptr &&
          info->backend == CURLSSLBACKEND_OPENSSL) {
        r.tls_version = SSL_get_version(static_cast<SSL*>(info->internals));
      }
    }
    r.body.append(data, size * n);
    return size * n;
  }

  CURL* h_ = nullptr;
  std::string ca_;
  std::optional<pki::CertPem> client_;
  long versions_ = CURL_SSLVERSION_DEFAULT;
  std::string ciphers_;
  std::string range_;
  CurlReply* current_ = nullptr;
};

asio::awaitable<void> pause_for(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
}

// A file of random bytes for the whole run, served by /file.
struct TestFile {
  neco::testing::TempDir dir;
  std::string content = neco::testing::random_bytes(std::size_t{2} * 1024 * 1024 + 4321, 11);
  TestFile() { neco::testing::write_file(dir / "boot.img", content); }
};
const TestFile& test_file() {
  static const TestFile f;
  return f;
}

std::shared_ptr<const http::Router> make_router(std::atomic<int>& slow_started) {
  auto r = std::make_shared<http::Router>();
  auto file = r->add("/file", "a file body over TLS",
                     [](http::Request& req) -> asio::awaitable<http::Response> {
                       co_return http::file_response(req, test_file().dir / "boot.img",
                                                     "application/octet-stream");
                     });
  REQUIRE(file);
  auto whoami =
      r->add("/whoami", "who the server thinks we are",
             [](http::Request& req) -> asio::awaitable<http::Response> {
               co_return http::Response::json(
                   {{"identity", req.peer_identity}, {"fingerprint", req.peer_cert_fingerprint}});
             });
  REQUIRE(whoami);
  auto slow = r->add("/slow", "takes a while",
                     [&slow_started](http::Request&) -> asio::awaitable<http::Response> {
                       ++slow_started;
                       co_await pause_for(300ms);
                       co_return http::Response::text("slow done");
                     });
  REQUIRE(slow);
  return r;
}

// A server with one TLS listener on 127.0.0.1:0 and its io_context on a background thread.
struct Fixture : neco::testing::ServerFixture {
  explicit Fixture(const http::TlsOptions& tls, http::ServerLimits limits = {})
      : ServerFixture(limits, make_router,
                      [&tls](http::Server& s) { return s.listen_tls("127.0.0.1", 0, tls); }) {}
};

http::ServerLimits fast_limits() {
  http::ServerLimits l;
  l.header_timeout = 300ms;
  l.idle_timeout = 300ms;
  return l;
}

}  // namespace

TEST_CASE("TLS listener serves HTTPS without client certificates", "[http][tls]") {
  Fixture f(server_tls());
  Https c(certs().ca.cert_pem);
  auto r = c.get(f.port, "/whoami");
  INFO(r.error);
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.status == 200);
  CHECK(r.tls_version == "TLSv1.3");  // preferred when the client offers it
  CHECK(r.json() == nlohmann::json{{"identity", ""}, {"fingerprint", ""}});

  // Keep-alive over TLS.
  r = c.get(f.port, "/whoami");
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.new_connections == 0);

  // TLS 1.2 still works; TLS 1.1 is refused by the server even when the client allows it.
  Https tls12(certs().ca.cert_pem);
  tls12.tls_versions(CURL_SSLVERSION_TLSv1_2, CURL_SSLVERSION_MAX_TLSv1_2);
  r = tls12.get(f.port, "/whoami");
  INFO(r.error);
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.tls_version == "TLSv1.2");
  Https tls11(certs().ca.cert_pem);
  tls11.tls_versions(CURL_SSLVERSION_TLSv1_1, CURL_SSLVERSION_MAX_TLSv1_1);
  tls11.cipher_list("DEFAULT@SECLEVEL=0");  // OpenSSL 3 clients refuse TLS 1.1 by default
  CHECK(tls11.get(f.port, "/whoami").code != CURLE_OK);
  CHECK(wait_for([&] { return f.stats().tls_handshake_failures == 1; }));

  // A client that does not trust the CA refuses the server.
  Https stranger(certs().other_ca.cert_pem);
  CHECK(stranger.get(f.port, "/whoami").code == CURLE_PEER_FAILED_VERIFICATION);

  // A client certificate nobody asked for is neither sent nor used.
  Https with_cert(certs().ca.cert_pem);
  with_cert.client_cert(certs().client);
  r = with_cert.get(f.port, "/whoami");
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.json()["identity"] == "");
  CHECK(wait_for([&] { return f.stats().requests(2) == 4; }));
}

TEST_CASE("TLS listener streams file bodies and keeps the connection", "[http][tls][file]") {
  Fixture f(server_tls());
  Https c(certs().ca.cert_pem);
  const auto& content = test_file().content;
  auto r = c.get(f.port, "/file");
  INFO(r.error);
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.status == 200);
  CHECK(r.body == content);
  CHECK(r.new_connections == 1);
  // A range, then the whole file again, on the same TLS connection.
  c.range("1000000-1099999");
  r = c.get(f.port, "/file");
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.status == 206);
  CHECK(r.body == content.substr(1000000, 100000));
  CHECK(r.new_connections == 0);
  c.range("-10");
  r = c.get(f.port, "/file");
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.status == 206);
  CHECK(r.body == content.substr(content.size() - 10));
  c.range("");
  r = c.get(f.port, "/file");
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.body == content);
  CHECK(r.new_connections == 0);
  CHECK(f.stats().timeouts == 0);
}

TEST_CASE("Mutual TLS gives handlers the verified client identity", "[http][tls]") {
  Fixture f(server_tls(certs().ca.cert_pem));

  Https node(certs().ca.cert_pem);
  node.client_cert(certs().client);
  auto r = node.get(f.port, "/whoami");
  INFO(r.error);
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.json()["identity"] == "node-7");
  CHECK(r.json()["fingerprint"] == pki::cert_fingerprint(certs().client.cert_pem).value());

  // Same over TLS 1.2, where the client certificate is checked inside the handshake proper.
  Https node12(certs().ca.cert_pem);
  node12.client_cert(certs().client);
  node12.tls_versions(CURL_SSLVERSION_TLSv1_2, CURL_SSLVERSION_MAX_TLSv1_2);
  r = node12.get(f.port, "/whoami");
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.json()["identity"] == "node-7");

  // Optional: no certificate is fine, and anonymous.
  Https anonymous(certs().ca.cert_pem);
  r = anonymous.get(f.port, "/whoami");
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.json()["identity"] == "");
  CHECK(r.json()["fingerprint"] == "");

  // A certificate from another CA (same CN) is refused at the handshake, not made anonymous.
  Https foreign(certs().ca.cert_pem);
  foreign.client_cert(certs().foreign_client);
  r = foreign.get(f.port, "/whoami");
  CHECK(r.code != CURLE_OK);
  CHECK(r.status == 0);
  // So is a certificate from the right CA that is not meant for clients (no clientAuth).
  Https wrong_use(certs().ca.cert_pem);
  wrong_use.client_cert(certs().server_only);
  CHECK(wrong_use.get(f.port, "/whoami").code != CURLE_OK);
  CHECK(wait_for([&] { return f.stats().tls_handshake_failures == 2; }));
  CHECK(f.stats().requests(2) == 3);
}

TEST_CASE("Mutual TLS can require a client certificate", "[http][tls]") {
  Fixture f(server_tls(certs().ca.cert_pem, true));
  Https anonymous(certs().ca.cert_pem);
  CHECK(anonymous.get(f.port, "/whoami").code != CURLE_OK);
  Https node(certs().ca.cert_pem);
  node.client_cert(certs().client);
  auto r = node.get(f.port, "/whoami");
  INFO(r.error);
  REQUIRE(r.code == CURLE_OK);
  CHECK(r.json()["identity"] == "node-7");
  CHECK(wait_for([&] { return f.stats().tls_handshake_failures == 1; }));
}

TEST_CASE("TLS listener drops clients that do not speak TLS", "[http][tls]") {
  http::ServerLimits limits = fast_limits();
  limits.max_connections = 2;
  Fixture f(server_tls(), limits);

  SECTION("plain HTTP is closed at once") {
    Client c(f.port);
    REQUIRE(c.send("GET /whoami HTTP/1.1\r\nHost: x\r\n\r\n"));
    const auto t0 = Clock::now();
    CHECK(c.closed_by_peer());
    CHECK(Clock::now() - t0 < 250ms);  // well before the handshake deadline
    CHECK(c.unread().find("HTTP/1.1") == std::string::npos);
    CHECK(wait_for([&] { return f.stats().tls_handshake_failures == 1; }));
  }
  SECTION("silent and stalled handshakes are dropped at header_timeout, and count as sessions") {
    const auto t0 = Clock::now();
    Client silent(f.port);
    Client stalled(f.port);
    REQUIRE(
        stalled.send(std::string("\x16\x03\x01\x02\x00", 5)));  // a ClientHello that never comes
    REQUIRE(wait_for([&] { return f.stats().active_connections == 2; }));
    // Both slots are taken by handshakes: a third connection is turned away.
    Https c(certs().ca.cert_pem);
    CHECK(c.get(f.port, "/whoami").code != CURLE_OK);
    CHECK(f.stats().rejected_connections == 1);

    CHECK(silent.closed_by_peer());
    CHECK(stalled.closed_by_peer());
    const auto waited = Clock::now() - t0;
    CHECK(waited >= 290ms);  // the deadline runs from the accept
    CHECK(waited < 2s);
    CHECK(wait_for([&] { return f.stats().timeouts == 2; }));
    CHECK(wait_for([&] { return f.stats().active_connections == 0; }));
    auto r = c.get(f.port, "/whoami");
    INFO(r.error);
    CHECK(r.code == CURLE_OK);
  }
}

TEST_CASE("TLS certificate rotation applies to new connections", "[http][tls]") {
  Fixture f(server_tls());
  Https before(certs().ca.cert_pem);
  REQUIRE(before.get(f.port, "/whoami").code == CURLE_OK);

  // Rotate to a certificate from another CA, which only clients trusting that CA accept.
  REQUIRE(f.server->set_tls({certs().server2.cert_pem, certs().server2.key_pem, "", false}));
  auto r = before.get(f.port, "/whoami");  // the open connection keeps its session
  CHECK(r.code == CURLE_OK);
  CHECK(r.new_connections == 0);
  Https old_trust(certs().ca.cert_pem);
  CHECK(old_trust.get(f.port, "/whoami").code == CURLE_PEER_FAILED_VERIFICATION);
  Https new_trust(certs().other_ca.cert_pem);
  r = new_trust.get(f.port, "/whoami");
  INFO(r.error);
  CHECK(r.code == CURLE_OK);

  // Bad input is refused and changes nothing.
  auto bad = f.server->set_tls({"garbage", certs().server.key_pem, "", false});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == neco::Errc::invalid_argument);
  auto mismatch = f.server->set_tls({certs().server.cert_pem, certs().client.key_pem, "", false});
  REQUIRE_FALSE(mismatch);
  CHECK(mismatch.error().message.find("mismatch") != std::string::npos);
  CHECK_FALSE(f.server->set_tls(server_tls("not a CA")));
  CHECK_FALSE(f.server->set_tls(server_tls("", true)));  // required, but trusting nobody
  Https again(certs().other_ca.cert_pem);
  CHECK(again.get(f.port, "/whoami").code == CURLE_OK);
}

TEST_CASE("TLS listener refuses bad options up front", "[http][tls]") {
  asio::io_context io;
  http::Server server(io, {}, neco::log::Logger("http.tls-test"));
  auto bad_cert = server.listen_tls("127.0.0.1", 0, {"garbage", "garbage", "", false});
  REQUIRE_FALSE(bad_cert);
  CHECK(bad_cert.error().code == neco::Errc::invalid_argument);
  CHECK(bad_cert.error().message.starts_with("Invalid TLS certificate"));
  CHECK_FALSE(server.listen_tls("127.0.0.1", 0, server_tls("", true)));
  CHECK(server.listen_tls("127.0.0.1", 0, server_tls()));
}

TEST_CASE("TLS sessions stop gracefully", "[http][tls]") {
  Fixture f(server_tls(certs().ca.cert_pem));
  Https idle(certs().ca.cert_pem);
  REQUIRE(idle.get(f.port, "/whoami").code == CURLE_OK);

  CurlReply slow;
  std::thread busy([&] {
    Https c(certs().ca.cert_pem);
    c.client_cert(certs().client);
    slow = c.get(f.port, "/slow");
  });
  REQUIRE(wait_for([&] { return f.slow_started == 1; }));
  CHECK(f.stats().active_connections == 2);
  std::atomic<bool> done{false};
  f.server->stop(5s, [&] { done = true; });
  busy.join();
  CHECK(slow.code == CURLE_OK);
  CHECK(slow.status == 200);
  CHECK(slow.body == "slow done");
  CHECK(wait_for([&] { return done.load(); }));
  CHECK(f.stats().active_connections == 0);
}
