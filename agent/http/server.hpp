// The HTTP/1.1 server behind the local admin endpoint, the metrics listener and the cluster API:
// TCP, unix and TLS (optionally mutual) listeners, keep-alive, hard limits and deadlines against
// slow or hostile clients, and a graceful stop. Responses carry a string or stream a region of an
// open file (boot images) in bounded chunks, GET and HEAD alike on every listener. Beast and
// OpenSSL stay inside server.cpp so users of this header compile quickly.
#pragma once

#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "agent/http/router.hpp"
#include "agent/log/log.hpp"
#include "agent/util/error.hpp"

namespace neco::http {

// Bounds on what one client may cost the agent. Defaults suit the admin endpoint.
struct ServerLimits {
  std::size_t max_header_bytes = 8UL * 1024;         // larger request headers get 431 and a close
  std::size_t max_body_bytes = 1024UL * 1024;        // larger bodies get 413 and a close
  std::size_t max_connections = 512;                 // excess connections are accepted and closed
  std::chrono::milliseconds header_timeout{10'000};  // whole request header, from first byte
  std::chrono::milliseconds body_timeout{30'000};    // whole request body, after the header
  std::chrono::milliseconds idle_timeout{60'000};    // keep-alive wait for the next request
  // Whole response write for an in-memory body. A file body (Response::file) is streamed in
  // 64 KiB chunks, each under its own write_timeout: the bound grows with the file, and a client
  // reading slower than 64 KiB per write_timeout (or not at all) is cut off.
  std::chrono::milliseconds write_timeout{10'000};
  std::chrono::milliseconds linger_timeout{1'000};  // draining input before an error close
};

// Counters for the metrics the lead publishes; updated with relaxed atomics.
struct ServerStats {
  std::array<std::atomic<std::uint64_t>, 6> requests_total{};  // index = status / 100 (1..5)
  std::atomic<std::uint64_t> active_connections{0};            // open sessions right now (gauge)
  std::atomic<std::uint64_t> rejected_connections{0};          // closed at accept: max_connections
  std::atomic<std::uint64_t> bad_requests{0};                  // malformed HTTP or request-target
  std::atomic<std::uint64_t> timeouts{0};  // TLS handshake, header, body or write deadline hit
  std::atomic<std::uint64_t> tls_handshake_failures{0};    // refused or broken TLS handshakes
  std::atomic<std::uint64_t> tls_client_cert_refusals{0};  // of those: client cert refused

  // Responses sent with status in [100 * status_class, 100 * status_class + 99].
  std::uint64_t requests(int status_class) const {
    if (status_class < 1 || status_class > 5) return 0;
    return requests_total[static_cast<std::size_t>(status_class)].load(std::memory_order_relaxed);
  }
};

// A TLS listener's identity and, for mutual TLS, whom it trusts; all PEM text, not file names.
struct TlsOptions {
  std::string cert_pem;       // server certificate, then any intermediates
  std::string key_pem;        // its private key (unencrypted)
  std::string client_ca_pem;  // if set: ask clients for a certificate and verify it against this
  bool require_client_cert = false;  // refuse the handshake without one (needs client_ca_pem)
};

// Thread safety: all work runs on a strand of the given executor. listen_*() and start() are
// meant to be called before the io_context runs (or from its thread); set_router(), set_tls(),
// stop() and the accessors may be called from any thread. Destroy the Server before its
// io_context.
class Server {
 public:
  // `logger` names the listener in logs ("http.admin", "http.metrics").
  Server(const boost::asio::any_io_executor& executor, ServerLimits limits, log::Logger logger);
  // Convenience for the common case of the agent's io_context.
  Server(boost::asio::io_context& io, ServerLimits limits, log::Logger logger);
  // Closes listeners and connections at once (no grace); in-flight handlers run to completion.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Replaces the routing table atomically; in-flight requests finish on the old one.
  void set_router(std::shared_ptr<const Router> router);
  // The routing table new requests use (null until set_router()).
  std::shared_ptr<const Router> router() const;

  // Binds and listens on address:port (port 0 picks a free port); returns the bound endpoint.
  Expected<boost::asio::ip::tcp::endpoint> listen_tcp(std::string_view address, std::uint16_t port);
  // Like listen_tcp(), but every connection speaks TLS (1.2 or 1.3) with `tls`, which becomes the
  // server's TLS identity as if by set_tls(). The handshake runs under header_timeout and counts
  // against max_connections. With client_ca_pem, a client certificate that does not verify
  // against it fails the handshake; a verified one sets Request::peer_identity.
  Expected<boost::asio::ip::tcp::endpoint> listen_tls(std::string_view address, std::uint16_t port,
                                                      const TlsOptions& tls);
  // Replaces the TLS identity (certificate, key, client CA) of every TLS listener, e.g. to rotate
  // a certificate; connections accepted from now on use it, existing ones keep theirs. Bad PEM or
  // a key that does not match the certificate is Errc::invalid_argument and changes nothing.
  Expected<void> set_tls(const TlsOptions& tls);
  // Binds a unix socket with mode 0600, replacing a stale socket file but refusing a live one
  // or a non-socket file at `path`.
  Expected<void> listen_unix(const std::string& path);

  // Starts accepting on every listener (listeners added later start at once).
  void start();

  // Graceful stop: stop accepting, close idle keep-alive connections now, let in-flight requests
  // finish (answered with "Connection: close") for up to `grace`, then close what is left.
  // `on_stopped` runs on the server's strand once no session remains. Idempotent.
  void stop(std::chrono::milliseconds grace, std::function<void()> on_stopped = {});
  // Coroutine form of stop(): resumes once no session remains.
  boost::asio::awaitable<void> async_stop(std::chrono::milliseconds grace);

  // True once stop() was called and the last session has ended.
  bool stopped() const;
  // Counters for metrics.
  const ServerStats& stats() const;
  // The limits this server enforces.
  const ServerLimits& limits() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace neco::http
