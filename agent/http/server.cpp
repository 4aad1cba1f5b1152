#include "agent/http/server.hpp"
#include "agent/util/openssl_errors.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <concepts>
#include <exception>
#include <filesystem>
#include <mutex>
#include <span>
#include <unordered_set>
#include <vector>

namespace neco::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using boost::system::error_code;
using Local = asio::local::stream_protocol;
using Tcp = asio::ip::tcp;
// TCP and unix connections share one stream type once accepted, so the HTTP code below is
// instantiated twice (plain and TLS) rather than once per protocol: server.cpp is slow to build.
using Generic = asio::generic::stream_protocol;
using PlainStream = beast::basic_stream<Generic, asio::any_io_executor>;
using TlsStream = ssl::stream<PlainStream>;

namespace {

// A session as the server's bookkeeping sees it; the stream-specific part lives in Session<S>.
struct SessionBase {
  virtual ~SessionBase() = default;
  virtual void close() = 0;
  bool idle = true;      // in the TLS handshake or waiting for a request: safe to close on stop
  bool closing = false;  // stop() asked: answer the current request with a close, then end
};

template <class Stream>
struct Session final : SessionBase {
  Session(Generic::socket socket, std::string peer_name) requires std::same_as<Stream, PlainStream>
      : stream(std::move(socket)), peer(std::move(peer_name)) {}
  Session(Generic::socket socket, std::shared_ptr<ssl::context> context,
          std::string peer_name) requires std::same_as<Stream, TlsStream>
      : tls_context(std::move(context)),
        stream(std::move(socket), *tls_context),
        peer(std::move(peer_name)) {}
  void close() override { transport().close(); }
  // The TCP/unix stream underneath: deadlines, close, and raw reads after a TLS session ends.
  PlainStream& transport() { return beast::get_lowest_layer(stream); }

  std::shared_ptr<ssl::context> tls_context;  // TLS only: outlives `stream`, made from it
  Stream stream;
  std::string peer;
  std::string peer_identity;     // TLS: CN of the verified client certificate
  std::string peer_fingerprint;  // TLS: "sha256:..." of that certificate
};

std::string peer_name(const Tcp::socket& socket) {
  error_code ec;
  const auto ep = socket.remote_endpoint(ec);
  if (ec) return "tcp:?";
  const auto addr = ep.address();
  return addr.is_v6() ? "[" + addr.to_string() + "]:" + std::to_string(ep.port())
                      : addr.to_string() + ":" + std::to_string(ep.port());
}

std::string peer_name(const Local::socket&) {
  return "unix";
}

// Errors that only mean the peer went away or we closed the socket ourselves.
bool is_disconnect(const error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted || ec == asio::error::broken_pipe ||
         ec == asio::error::bad_descriptor || ec == asio::error::not_connected ||
         ec == ssl::error::stream_truncated;  // TLS peer closed without close_notify
}

// A TLS record or alert problem: the session is unusable, there is nobody to answer.
bool is_tls_failure(const error_code& ec) {
  return ec.category() == asio::error::get_ssl_category();
}

// Never prompt on a terminal for the passphrase of an encrypted key: refuse it.
int no_passphrase(char*, int, int, void*) {
  return -1;
}

// A server context for `tls`: TLS >= 1.2, the certificate chain and its key, and for mutual TLS
// the client CA as the only trust anchor (also announced in the CertificateRequest).
Expected<std::shared_ptr<ssl::context>> make_tls_context(const TlsOptions& tls) {
  if (tls.require_client_cert && tls.client_ca_pem.empty()) {
    return fail(Errc::invalid_argument, "require_client_cert needs client_ca_pem");
  }
  ERR_clear_error();
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* handle = ctx->native_handle();
  auto invalid = [](const std::string& what) {
    const auto detail = drain_openssl_errors();
    return fail(Errc::invalid_argument, detail.empty() ? what : what + ": " + detail);
  };
  SSL_CTX_set_default_passwd_cb(handle, no_passphrase);
  if (SSL_CTX_set_min_proto_version(handle, TLS1_2_VERSION) != 1) {
    return fail(Errc::internal, "Failed to set the minimum TLS version: " + drain_openssl_errors());
  }
  // Client-initiated renegotiation only costs the server CPU; nothing here needs it.
  SSL_CTX_set_options(handle,
                      SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET);
  // No session resumption: every connection verifies the client certificate afresh (its expiry,
  // the client CA of now), and a full ECDHE/ECDSA handshake is cheap at our connection rates.
  SSL_CTX_set_session_cache_mode(handle, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_num_tickets(handle, 0);
  // Thousands of nodes hold idle keep-alive connections: give their 2 x 16 KiB record buffers
  // back between requests.
  SSL_CTX_set_mode(handle, SSL_MODE_RELEASE_BUFFERS);
  error_code ec;
  ctx->use_certificate_chain(asio::buffer(tls.cert_pem), ec);
  if (ec) return invalid("Invalid TLS certificate: " + ec.message());
  ctx->use_private_key(asio::buffer(tls.key_pem), ssl::context::pem, ec);
  if (ec) return invalid("Invalid TLS key: " + ec.message());
  if (SSL_CTX_check_private_key(handle) != 1) {
    return invalid("The TLS key does not match the certificate");
  }
  if (!tls.client_ca_pem.empty()) {
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(tls.client_ca_pem.data(), static_cast<int>(tls.client_ca_pem.size())),
        &BIO_free);
    int added = 0;
    while (bio) {
      std::unique_ptr<X509, decltype(&X509_free)> ca(
          PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), &X509_free);
      if (!ca) break;
      if (X509_STORE_add_cert(SSL_CTX_get_cert_store(handle), ca.get()) != 1 ||
          SSL_CTX_add_client_CA(handle, ca.get()) != 1) {
        return invalid("Failed to add the client CA");
      }
      ++added;
    }
    ERR_clear_error();  // the loop ends on "no start line" after the last certificate
    if (added == 0) return invalid("Invalid client CA: no PEM certificate in it");
    ctx->set_verify_mode(ssl::verify_peer |
                         (tls.require_client_cert ? ssl::verify_fail_if_no_peer_cert : 0));
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  ERR_clear_error();
  return ctx;
}

// Subject CN and "sha256:<hex>" of the client certificate, if it sent one that verified.
void read_peer_certificate(SSL* ssl, std::string& identity, std::string& fingerprint) {
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (cert == nullptr || SSL_get_verify_result(ssl) != X509_V_OK) return;
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md.data(), &len) == 1) {
    static constexpr char hex[] = "0123456789abcdef";
    fingerprint = "sha256:";
    for (unsigned int i = 0; i < len; ++i) {
      fingerprint += hex[md[i] >> 4];
      fingerprint += hex[md[i] & 0xf];
    }
  }
  // Exactly one CN, or no identity at all: two would leave it to chance which one counts.
  const X509_NAME* subject = X509_get_subject_name(cert);
  const int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
  if (idx < 0 || X509_NAME_get_index_by_NID(subject, NID_commonName, idx) >= 0) return;
  unsigned char* utf8 = nullptr;
  const int n =
      ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx)));
  if (n < 0) {
    ERR_clear_error();
    return;
  }
  std::string cn(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(n));
  OPENSSL_free(utf8);
  if (cn.find('\0') == std::string::npos) identity = std::move(cn);
}

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Impl> {
  Impl(const asio::any_io_executor& executor, ServerLimits lim, log::Logger log)
      : ex(asio::make_strand(executor)), limits(lim), logger(std::move(log)), grace_timer(ex) {}

  asio::any_io_executor ex;  // a strand: every member below is touched only on it
  ServerLimits limits;
  log::Logger logger;
  ServerStats stats;
  std::atomic<std::shared_ptr<const Router>> router;
  std::atomic<std::shared_ptr<ssl::context>> tls_context;  // for new TLS connections

  std::vector<std::unique_ptr<Tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<Tcp::acceptor>> tls_acceptors;
  std::vector<std::unique_ptr<Local::acceptor>> unix_acceptors;
  std::vector<std::string> unix_paths;
  bool started = false;
  bool stopping = false;
  std::atomic<bool> stopped{false};
  std::unordered_set<std::shared_ptr<SessionBase>> sessions;
  std::vector<std::function<void()>> on_stopped;
  asio::steady_timer grace_timer;

  template <class Protocol>
  void spawn_accept(typename Protocol::acceptor& acceptor, bool tls) {
    asio::co_spawn(ex, accept_loop<Protocol>(shared_from_this(), acceptor, tls), asio::detached);
  }

  template <class Protocol>
  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self,
                                           typename Protocol::acceptor& acceptor, bool tls);
  void launch(Generic::socket socket, std::string peer, bool tls);
  template <class Stream>
  static asio::awaitable<void> run_session(std::shared_ptr<Impl> self,
                                           std::shared_ptr<Session<Stream>> session);
  asio::awaitable<bool> handshake(Session<TlsStream>& session);
  template <class Stream>
  asio::awaitable<bool> serve_one(Session<Stream>& session, beast::flat_buffer& buffer, bool first);
  template <class Stream>
  asio::awaitable<bool> send(Session<Stream>& session, unsigned version, Verb method, Response res,
                             bool keep_alive);
  template <class Stream>
  asio::awaitable<bool> send_file(Session<Stream>& session, const FileBody& body);
  asio::awaitable<void> linger_close(PlainStream& transport);
  Expected<Tcp::endpoint> listen_inet(std::string_view address, std::uint16_t port, bool tls);

  void end_session(const std::shared_ptr<SessionBase>& session) {
    if (sessions.erase(session) > 0) {
      stats.active_connections.fetch_sub(1, std::memory_order_relaxed);
    }
    if (stopping && sessions.empty()) finish_stop();
  }

  void close_listeners() {
    error_code ec;
    for (auto& a : tcp_acceptors)
      a->close(ec);
    for (auto& a : tls_acceptors)
      a->close(ec);
    for (auto& a : unix_acceptors)
      a->close(ec);
    for (const auto& path : unix_paths)
      ::unlink(path.c_str());
    unix_paths.clear();
  }

  void begin_stop(std::chrono::milliseconds grace, std::function<void()> done) {
    if (done) on_stopped.push_back(std::move(done));
    if (stopped.load()) {
      finish_stop();
      return;
    }
    if (stopping) return;
    stopping = true;
    close_listeners();
    // Copy: close() may not erase synchronously, but be safe against it anyway.
    const std::vector<std::shared_ptr<SessionBase>> all(sessions.begin(), sessions.end());
    for (const auto& s : all) {
      s->closing = true;
      if (s->idle) s->close();
    }
    if (sessions.empty()) {
      finish_stop();
      return;
    }
    grace_timer.expires_after(grace);
    grace_timer.async_wait([self = shared_from_this()](error_code ec) {
      if (ec) return;
      if (!self->sessions.empty()) {
        self->logger.warning("Closing {} connection(s) still busy after the stop grace period",
                             self->sessions.size());
      }
      const std::vector<std::shared_ptr<SessionBase>> left(self->sessions.begin(),
                                                           self->sessions.end());
      for (const auto& s : left)
        s->close();
    });
  }

  void finish_stop() {
    grace_timer.cancel();
    stopped.store(true);
    auto callbacks = std::move(on_stopped);
    on_stopped.clear();
    for (auto& cb : callbacks)
      cb();
  }

  void count_response(Status status) {
    const auto cls = static_cast<unsigned>(status) / 100;
    if (cls >= 1 && cls <= 5) stats.requests_total[cls].fetch_add(1, std::memory_order_relaxed);
  }
};

template <class Protocol>
asio::awaitable<void> Server::Impl::accept_loop(std::shared_ptr<Impl> self,
                                                typename Protocol::acceptor& acceptor, bool tls) {
  for (;;) {
    typename Protocol::socket socket(self->ex);
    error_code ec;
    co_await acceptor.async_accept(socket, asio::redirect_error(asio::use_awaitable, ec));
    if (self->stopping || !acceptor.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: back off briefly instead of spinning on a failing accept.
      self->logger.warning("Failed to accept a connection: {}", ec.message());
      asio::steady_timer pause(self->ex, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (self->sessions.size() >= self->limits.max_connections) {
      // Accept-and-close frees the kernel backlog; leaving it queued would stall the client.
      self->stats.rejected_connections.fetch_add(1, std::memory_order_relaxed);
      socket.close(ec);
      continue;
    }
    auto name = peer_name(socket);
    self->launch(Generic::socket(std::move(socket)), std::move(name), tls);
  }
}

// Registers a new session (it counts against max_connections from here, TLS handshake included)
// and runs it.
void Server::Impl::launch(Generic::socket socket, std::string peer, bool tls) {
  stats.active_connections.fetch_add(1, std::memory_order_relaxed);
  if (tls) {
    auto session = std::make_shared<Session<TlsStream>>(std::move(socket), tls_context.load(),
                                                        std::move(peer));
    sessions.insert(session);
    asio::co_spawn(ex, run_session<TlsStream>(shared_from_this(), std::move(session)),
                   asio::detached);
  } else {
    auto session = std::make_shared<Session<PlainStream>>(std::move(socket), std::move(peer));
    sessions.insert(session);
    asio::co_spawn(ex, run_session<PlainStream>(shared_from_this(), std::move(session)),
                   asio::detached);
  }
}

template <class Stream>
asio::awaitable<void> Server::Impl::run_session(std::shared_ptr<Impl> self,
                                                std::shared_ptr<Session<Stream>> session) {
  try {
    beast::flat_buffer buffer;
    bool first = true;
    bool open = true;
    if constexpr (std::same_as<Stream, TlsStream>) open = co_await self->handshake(*session);
    while (open && !session->closing) {
      if (!co_await self->serve_one(*session, buffer, first)) break;
      first = false;
    }
  } catch (const std::exception& e) {
    self->logger.error("Failed to serve {}: {}", session->peer, e.what());
  }
  session->close();
  self->end_session(session);
}

// The TLS handshake under the header deadline: a client that stalls in it is the TLS slowloris.
asio::awaitable<bool> Server::Impl::handshake(Session<TlsStream>& session) {
  error_code ec;
  session.transport().expires_after(limits.header_timeout);
  co_await session.stream.async_handshake(ssl::stream_base::server,
                                          asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      stats.timeouts.fetch_add(1, std::memory_order_relaxed);
      logger.debug("Dropped {}: TLS handshake deadline", session.peer);
    } else if (!is_disconnect(ec)) {
      stats.tls_handshake_failures.fetch_add(1, std::memory_order_relaxed);
      // "certificate verify failed" alone does not say what was wrong with the certificate.
      const long verify = SSL_get_verify_result(session.stream.native_handle());
      if (verify == X509_V_OK) {
        // Scanners and plain-HTTP clients: counted, not worth a line each.
        logger.debug("TLS handshake with {} failed: {}", session.peer, ec.message());
      } else {
        // A client certificate we refused (another CA, expired, wrong usage) is an event an
        // operator wants to see, once per connection.
        stats.tls_client_cert_refusals.fetch_add(1, std::memory_order_relaxed);
        logger.warning("Refused the client certificate of {}: {}", session.peer,
                       X509_verify_cert_error_string(verify));
      }
    }
    ERR_clear_error();
    co_return false;
  }
  read_peer_certificate(session.stream.native_handle(), session.peer_identity,
                        session.peer_fingerprint);
  co_return true;
}

// Reads, routes and answers one request. Returns false when the connection must end.
template <class Stream>
asio::awaitable<bool> Server::Impl::serve_one(Session<Stream>& session, beast::flat_buffer& buffer,
                                              bool first) {
  auto& stream = session.stream;
  auto& transport = session.transport();
  error_code ec;

  // 1. Wait for the first byte. A new connection gets the header deadline from the start (a
  // client that connects and says nothing is the cheapest slowloris); keep-alive gets idle time.
  session.idle = true;
  if (buffer.size() == 0) {
    transport.expires_after(first ? limits.header_timeout : limits.idle_timeout);
    const auto n = co_await stream.async_read_some(buffer.prepare(4096),
                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == beast::error::timeout && first) {
        stats.timeouts.fetch_add(1, std::memory_order_relaxed);
      }
      co_return false;
    }
    buffer.commit(n);
    if (!first) transport.expires_after(limits.header_timeout);
  } else {
    transport.expires_after(limits.header_timeout);
  }
  session.idle = false;

  // 2. The header, under one deadline for all of it.
  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
  parser.body_limit(limits.max_body_bytes);
  auto on_read_error = [&](const error_code& e) -> std::optional<Response> {
    if (e == beast::error::timeout) {
      // basic_stream already closed the socket: there is nobody left to answer.
      stats.timeouts.fetch_add(1, std::memory_order_relaxed);
      logger.debug("Dropped {}: request read deadline", session.peer);
      return std::nullopt;
    }
    if (is_disconnect(e) || is_tls_failure(e)) return std::nullopt;
    if (e == bhttp::error::header_limit) {
      return Response::error(
          Status::request_header_fields_too_large, "header_too_large",
          "request header exceeds " + std::to_string(limits.max_header_bytes) + " bytes");
    }
    if (e == bhttp::error::body_limit) {
      return Response::error(
          Status::payload_too_large, "body_too_large",
          "request body exceeds " + std::to_string(limits.max_body_bytes) + " bytes");
    }
    stats.bad_requests.fetch_add(1, std::memory_order_relaxed);
    logger.debug("Bad request from {}: {}", session.peer, e.message());
    return Response::error(Status::bad_request, "bad_request", "malformed HTTP: " + e.message());
  };
  co_await bhttp::async_read_header(stream, buffer, parser,
                                    asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    auto res = on_read_error(ec);
    if (res) {
      if (co_await send(session, 11, Verb::get, std::move(*res), false)) {
        co_await linger_close(transport);
      }
    }
    co_return false;
  }

  // 3. The body, under its own deadline. curl sends "Expect: 100-continue" for large bodies
  // and would otherwise wait a second before sending it.
  if (!parser.is_done()) {
    const auto expect = parser.get()[bhttp::field::expect];
    if (iequals(expect, "100-continue") && parser.get().version() >= 11) {
      static constexpr std::string_view continue_line = "HTTP/1.1 100 Continue\r\n\r\n";
      transport.expires_after(limits.write_timeout);
      co_await asio::async_write(stream, asio::buffer(continue_line.data(), continue_line.size()),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == beast::error::timeout) stats.timeouts.fetch_add(1, std::memory_order_relaxed);
        co_return false;
      }
    }
    transport.expires_after(limits.body_timeout);
    co_await bhttp::async_read(stream, buffer, parser,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      auto res = on_read_error(ec);
      if (res) {
        if (co_await send(session, parser.get().version(), parser.get().method(), std::move(*res),
                          false)) {
          co_await linger_close(transport);
        }
      }
      co_return false;
    }
  }
  transport.expires_never();  // a handler may take its time; stop() bounds it with the grace

  // 4. Route and run the handler.
  auto& msg = parser.get();
  const bool keep_alive = msg.keep_alive();
  const unsigned version = msg.version();
  const Verb method = msg.method();
  Response res;
  if (method == Verb::unknown) {
    res = Response::error(Status::not_implemented, "not_implemented",
                          "method \"" + std::string(msg.method_string()) + "\" is not supported");
  } else if (auto target = parse_target(msg.target()); !target) {
    stats.bad_requests.fetch_add(1, std::memory_order_relaxed);
    res = Response::error(Status::bad_request, "bad_target", target.error().message);
  } else if (const auto routes = router.load(); !routes) {
    res = Response::error(Status::service_unavailable, "unavailable", "no routes configured");
  } else {
    auto m = routes->match(method, target->path);
    if (m.kind == RouteMatch::Kind::not_found) {
      res = Response::error(Status::not_found, "not_found",
                            "no route for \"" + target->path + "\"; see /help");
    } else if (m.kind == RouteMatch::Kind::method_not_allowed) {
      res = Response::error(
          Status::method_not_allowed, "method_not_allowed",
          std::string(bhttp::to_string(method)) + " is not allowed on \"" + target->path + "\"");
      res.headers.emplace_back("Allow", m.allow);
    } else {
      Request req;
      req.method = method;
      req.target = std::string(msg.target());
      req.path = std::move(target->path);
      req.query = std::move(target->query);
      for (const auto& f : msg)
        req.headers.emplace_back(f.name_string(), f.value());
      req.body = std::move(msg.body());
      req.path_params = std::move(m.params);
      req.peer = session.peer;
      req.peer_identity = session.peer_identity;
      req.peer_cert_fingerprint = session.peer_fingerprint;
      // `routes` keeps the handler alive even if set_router() swaps the table meanwhile.
      try {
        res = co_await (*m.handler)(req);
      } catch (const std::exception& e) {
        logger.error("Failed to handle {} \"{}\" from {}: {}", bhttp::to_string(method), req.target,
                     session.peer, e.what());
        res = Response::error(Status::internal_server_error, "internal", "handler failed");
      } catch (...) {
        logger.error("Failed to handle {} \"{}\" from {}: unknown exception",
                     bhttp::to_string(method), req.target, session.peer);
        res = Response::error(Status::internal_server_error, "internal", "handler failed");
      }
    }
  }
  logger.debug("{} {} \"{}\" -> {}", session.peer, bhttp::to_string(method), msg.target(),
               static_cast<unsigned>(res.status));
  co_return co_await send(session, version, method, std::move(res), keep_alive && !session.closing);
}

// Writes `res` under the write deadline. Returns false when the connection must end.
template <class Stream>
asio::awaitable<bool> Server::Impl::send(Session<Stream>& session, unsigned version, Verb method,
                                         Response res, bool keep_alive) {
  if (res.file && (!res.file->file || !res.body.empty())) {
    logger.error("Failed to send a response to {}: the handler set {}", session.peer,
                 res.file->file ? "both a body and a file" : "a file body without a file");
    res = Response::error(Status::internal_server_error, "internal", "handler failed");
  }
  count_response(res.status);
  bhttp::response<bhttp::string_body> out{res.status, version};
  out.set(bhttp::field::server, "neco");
  if (!res.content_type.empty()) out.set(bhttp::field::content_type, res.content_type);
  for (auto& [name, value] : res.headers)
    out.insert(name, value);
  // 1xx, 204 and 304 have no payload, and no Content-Length either (RFC 9110 §8.6).
  const auto code = static_cast<unsigned>(res.status);
  const bool has_payload =
      code >= 200 && res.status != Status::no_content && res.status != Status::not_modified;
  // HEAD: the same headers as GET, including the length the body would have, and no body. A file
  // body goes out after the header (below), so the header is written alone with its length.
  const bool send_payload = has_payload && method != Verb::head;
  if (has_payload) out.content_length(res.file ? res.file->length : res.body.size());
  if (send_payload && !res.file) out.body() = std::move(res.body);
  out.keep_alive(keep_alive);
  error_code ec;
  session.transport().expires_after(limits.write_timeout);
  co_await bhttp::async_write(session.stream, out, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      stats.timeouts.fetch_add(1, std::memory_order_relaxed);
      logger.debug("Dropped {}: response write deadline", session.peer);
    }
    co_return false;
  }
  if (send_payload && res.file && !co_await send_file(session, *res.file)) co_return false;
  co_return keep_alive;
}

// Streams a file region after its header: pread() into one bounded buffer, write, repeat. Each
// chunk gets a fresh write_timeout, so the bound scales with the size: a reader slower than one
// chunk per write_timeout is cut off, a steady one may take as long as the file needs. The reads
// are synchronous: boot images are read sequentially and mostly from the page cache. Returns
// false when the connection must end (including a file that ends early: its Content-Length was
// promised, so only a close tells the client).
template <class Stream>
asio::awaitable<bool> Server::Impl::send_file(Session<Stream>& session, const FileBody& body) {
  // Small enough that thousands of concurrent boot downloads cost little memory, large enough
  // to keep syscalls and TLS records efficient.
  static constexpr std::uint64_t chunk_bytes = 64UL * 1024;
  std::vector<char> chunk(static_cast<std::size_t>(std::min(chunk_bytes, body.length)));
  std::uint64_t offset = body.offset;
  std::uint64_t left = body.length;
  error_code ec;
  while (left > 0) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), left));
    const auto got = body.file->read_at(std::span<char>(chunk.data(), want), offset);
    if (!got) {
      logger.error("Failed to send a file to {}: {}", session.peer, got.error().message);
      co_return false;
    }
    if (*got == 0) {
      logger.warning("Failed to send a file to {}: it ended {} bytes before the promised length",
                     session.peer, left);
      co_return false;
    }
    const char* data = chunk.data();  // a const buffer: the same write instantiation as above
    session.transport().expires_after(limits.write_timeout);
    co_await asio::async_write(session.stream, asio::buffer(data, *got),
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == beast::error::timeout) {
        stats.timeouts.fetch_add(1, std::memory_order_relaxed);
        logger.debug("Dropped {}: file write deadline", session.peer);
      }
      co_return false;
    }
    offset += *got;
    left -= *got;
  }
  co_return true;
}

// After an error response, half-close and drain what the client is still sending for a moment:
// closing with unread input makes the kernel send RST, which can destroy the response in flight.
// Works below TLS: what the client still sends is discarded undecrypted.
asio::awaitable<void> Server::Impl::linger_close(PlainStream& transport) {
  error_code ec;
  transport.socket().shutdown(asio::socket_base::shutdown_send, ec);
  if (ec) co_return;
  transport.expires_after(limits.linger_timeout);
  std::array<char, 4096> scratch;
  for (;;) {
    co_await transport.async_read_some(asio::buffer(scratch),
                                       asio::redirect_error(asio::use_awaitable, ec));
    if (ec) co_return;
  }
}

Server::Server(const asio::any_io_executor& executor, ServerLimits limits, log::Logger logger)
    : impl_(std::make_shared<Impl>(executor, limits, std::move(logger))) {}

Server::Server(asio::io_context& io, ServerLimits limits, log::Logger logger)
    : Server(io.get_executor(), limits, std::move(logger)) {}

Server::~Server() {
  // The Impl outlives us in the coroutines that still reference it; they end once closed.
  asio::post(impl_->ex, [impl = impl_] {
    impl->stopping = true;
    impl->close_listeners();
    const std::vector<std::shared_ptr<SessionBase>> all(impl->sessions.begin(),
                                                        impl->sessions.end());
    for (const auto& s : all)
      s->close();
  });
}

void Server::set_router(std::shared_ptr<const Router> router) {
  impl_->router.store(std::move(router));
}

std::shared_ptr<const Router> Server::router() const {
  return impl_->router.load();
}

Expected<Tcp::endpoint> Server::listen_tcp(std::string_view address, std::uint16_t port) {
  return impl_->listen_inet(address, port, false);
}

Expected<Tcp::endpoint> Server::listen_tls(std::string_view address, std::uint16_t port,
                                           const TlsOptions& tls) {
  auto ctx = make_tls_context(tls);
  if (!ctx) return std::unexpected(ctx.error());
  // Set before the listener exists so its first connection finds a context; undone on failure.
  auto previous = impl_->tls_context.exchange(std::move(*ctx));
  auto bound = impl_->listen_inet(address, port, true);
  if (!bound) impl_->tls_context.store(std::move(previous));
  return bound;
}

Expected<void> Server::set_tls(const TlsOptions& tls) {
  auto ctx = make_tls_context(tls);
  if (!ctx) return std::unexpected(ctx.error());
  impl_->tls_context.store(std::move(*ctx));
  return {};
}

Expected<Tcp::endpoint> Server::Impl::listen_inet(std::string_view address, std::uint16_t port,
                                                  bool tls) {
  error_code ec;
  const auto addr = asio::ip::make_address(std::string(address), ec);
  if (ec) {
    return fail(Errc::invalid_argument, "Bad listen address \"" + std::string(address) + "\"");
  }
  const Tcp::endpoint endpoint(addr, port);
  auto acceptor = std::make_unique<Tcp::acceptor>(ex);
  const auto where = "\"" + std::string(address) + ":" + std::to_string(port) + "\"";
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail(Errc::unavailable, "Failed to listen on " + where + ": " + ec.message());
  }
  auto bound = acceptor->local_endpoint(ec);
  if (ec) return fail(Errc::internal, "Failed to read the bound address: " + ec.message());
  auto& list = tls ? tls_acceptors : tcp_acceptors;
  list.push_back(std::move(acceptor));
  if (started) spawn_accept<Tcp>(*list.back(), tls);
  return bound;
}

Expected<void> Server::listen_unix(const std::string& path) {
  const auto where = "\"" + path + "\"";
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return fail(Errc::already_exists, "Failed to listen on " + where + ": not a socket");
    }
    // A socket someone still answers on belongs to a running agent: do not steal it.
    Local::socket probe(impl_->ex);
    error_code probe_ec;
    probe.connect(Local::endpoint(path), probe_ec);
    if (!probe_ec) {
      return fail(Errc::already_exists, "Failed to listen on " + where + ": in use");
    }
    ::unlink(path.c_str());
  }
  error_code ec;
  auto acceptor = std::make_unique<Local::acceptor>(impl_->ex);
  try {
    const Local::endpoint endpoint(path);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (ec) {
      return fail(Errc::unavailable, "Failed to listen on " + where + ": " + ec.message());
    }
  } catch (const std::exception& e) {  // asio throws for a path longer than sun_path
    return fail(Errc::invalid_argument, "Failed to listen on " + where + ": " + e.what());
  }
  // chmod before listen(): nobody can connect until listen(), so no window with looser modes.
  if (::chmod(path.c_str(), 0600) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    return fail(Errc::unavailable,
                "Failed to chmod " + where + ": " + std::generic_category().message(err));
  }
  acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    ::unlink(path.c_str());
    return fail(Errc::unavailable, "Failed to listen on " + where + ": " + ec.message());
  }
  impl_->unix_acceptors.push_back(std::move(acceptor));
  impl_->unix_paths.push_back(path);
  if (impl_->started) impl_->spawn_accept<Local>(*impl_->unix_acceptors.back(), false);
  return {};
}

void Server::start() {
  if (impl_->started) return;
  impl_->started = true;
  for (auto& a : impl_->tcp_acceptors)
    impl_->spawn_accept<Tcp>(*a, false);
  for (auto& a : impl_->tls_acceptors)
    impl_->spawn_accept<Tcp>(*a, true);
  for (auto& a : impl_->unix_acceptors)
    impl_->spawn_accept<Local>(*a, false);
}

void Server::stop(std::chrono::milliseconds grace, std::function<void()> on_stopped) {
  asio::post(impl_->ex, [impl = impl_, grace, cb = std::move(on_stopped)]() mutable {
    impl->begin_stop(grace, std::move(cb));
  });
}

asio::awaitable<void> Server::async_stop(std::chrono::milliseconds grace) {
  auto ex = co_await asio::this_coro::executor;
  auto done = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  stop(grace, [done] {
    // expires_at(min) rather than cancel(): it also completes a wait that has not started yet.
    asio::post(done->get_executor(),
               [done] { done->expires_at(asio::steady_timer::time_point::min()); });
  });
  error_code ec;
  co_await done->async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

bool Server::stopped() const {
  return impl_->stopped.load();
}

const ServerStats& Server::stats() const {
  return impl_->stats;
}

const ServerLimits& Server::limits() const {
  return impl_->limits;
}

}  // namespace neco::http
