#include "agent/http/server.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <exception>
#include <filesystem>
#include <mutex>
#include <unordered_set>
#include <vector>

namespace neco::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using Local = asio::local::stream_protocol;
using Tcp = asio::ip::tcp;

namespace {

// A session as the server's bookkeeping sees it; the protocol-specific part lives in Session<P>.
struct SessionBase {
  virtual ~SessionBase() = default;
  virtual void close() = 0;
  bool idle = true;      // waiting for the first byte of a request: safe to close on stop
  bool closing = false;  // stop() asked: answer the current request with a close, then end
};

template <class Protocol>
struct Session final : SessionBase {
  using Stream = beast::basic_stream<Protocol, asio::any_io_executor>;
  Session(typename Protocol::socket socket, std::string peer_name)
      : stream(std::move(socket)), peer(std::move(peer_name)) {}
  void close() override { stream.close(); }
  Stream stream;
  std::string peer;
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
         ec == asio::error::bad_descriptor || ec == asio::error::not_connected;
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

  std::vector<std::unique_ptr<Tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<Local::acceptor>> unix_acceptors;
  std::vector<std::string> unix_paths;
  bool started = false;
  bool stopping = false;
  std::atomic<bool> stopped{false};
  std::unordered_set<std::shared_ptr<SessionBase>> sessions;
  std::vector<std::function<void()>> on_stopped;
  asio::steady_timer grace_timer;

  template <class Protocol>
  void spawn_accept(typename Protocol::acceptor& acceptor) {
    asio::co_spawn(ex, accept_loop<Protocol>(shared_from_this(), acceptor), asio::detached);
  }

  template <class Protocol>
  static asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self,
                                           typename Protocol::acceptor& acceptor);
  template <class Protocol>
  static asio::awaitable<void> run_session(std::shared_ptr<Impl> self,
                                           std::shared_ptr<Session<Protocol>> session);
  template <class Protocol>
  asio::awaitable<bool> serve_one(Session<Protocol>& session, beast::flat_buffer& buffer,
                                  bool first);
  template <class Protocol>
  asio::awaitable<bool> send(Session<Protocol>& session, unsigned version, Verb method,
                             Response res, bool keep_alive);
  template <class Protocol>
  asio::awaitable<void> linger_close(Session<Protocol>& session);

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
                                                typename Protocol::acceptor& acceptor) {
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
    auto session = std::make_shared<Session<Protocol>>(std::move(socket), std::move(name));
    self->sessions.insert(session);
    self->stats.active_connections.fetch_add(1, std::memory_order_relaxed);
    asio::co_spawn(self->ex, run_session<Protocol>(self, std::move(session)), asio::detached);
  }
}

template <class Protocol>
asio::awaitable<void> Server::Impl::run_session(std::shared_ptr<Impl> self,
                                                std::shared_ptr<Session<Protocol>> session) {
  try {
    beast::flat_buffer buffer;
    bool first = true;
    while (!session->closing) {
      if (!co_await self->serve_one(*session, buffer, first)) break;
      first = false;
    }
  } catch (const std::exception& e) {
    self->logger.error("Failed to serve {}: {}", session->peer, e.what());
  }
  session->close();
  self->end_session(session);
}

// Reads, routes and answers one request. Returns false when the connection must end.
template <class Protocol>
asio::awaitable<bool> Server::Impl::serve_one(Session<Protocol>& session,
                                              beast::flat_buffer& buffer, bool first) {
  auto& stream = session.stream;
  error_code ec;

  // 1. Wait for the first byte. A new connection gets the header deadline from the start (a
  // client that connects and says nothing is the cheapest slowloris); keep-alive gets idle time.
  session.idle = true;
  if (buffer.size() == 0) {
    stream.expires_after(first ? limits.header_timeout : limits.idle_timeout);
    const auto n = co_await stream.async_read_some(buffer.prepare(4096),
                                                   asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == beast::error::timeout && first) {
        stats.timeouts.fetch_add(1, std::memory_order_relaxed);
      }
      co_return false;
    }
    buffer.commit(n);
    if (!first) stream.expires_after(limits.header_timeout);
  } else {
    stream.expires_after(limits.header_timeout);
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
    if (is_disconnect(e)) return std::nullopt;
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
        co_await linger_close(session);
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
      stream.expires_after(limits.write_timeout);
      co_await asio::async_write(stream, asio::buffer(continue_line.data(), continue_line.size()),
                                 asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (ec == beast::error::timeout) stats.timeouts.fetch_add(1, std::memory_order_relaxed);
        co_return false;
      }
    }
    stream.expires_after(limits.body_timeout);
    co_await bhttp::async_read(stream, buffer, parser,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      auto res = on_read_error(ec);
      if (res) {
        if (co_await send(session, parser.get().version(), parser.get().method(), std::move(*res),
                          false)) {
          co_await linger_close(session);
        }
      }
      co_return false;
    }
  }
  stream.expires_never();  // a handler may take its time; stop() bounds it with the grace

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
template <class Protocol>
asio::awaitable<bool> Server::Impl::send(Session<Protocol>& session, unsigned version, Verb method,
                                         Response res, bool keep_alive) {
  count_response(res.status);
  bhttp::response<bhttp::string_body> out{res.status, version};
  out.set(bhttp::field::server, "neco");
  out.set(bhttp::field::content_type, res.content_type);
  for (auto& [name, value] : res.headers)
    out.insert(name, value);
  // HEAD: the same headers as GET, including the length the body would have, and no body.
  out.content_length(res.body.size());
  if (method != Verb::head) out.body() = std::move(res.body);
  out.keep_alive(keep_alive);
  error_code ec;
  session.stream.expires_after(limits.write_timeout);
  co_await bhttp::async_write(session.stream, out, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      stats.timeouts.fetch_add(1, std::memory_order_relaxed);
      logger.debug("Dropped {}: response write deadline", session.peer);
    }
    co_return false;
  }
  co_return keep_alive;
}

// After an error response, half-close and drain what the client is still sending for a moment:
// closing with unread input makes the kernel send RST, which can destroy the response in flight.
template <class Protocol>
asio::awaitable<void> Server::Impl::linger_close(Session<Protocol>& session) {
  error_code ec;
  session.stream.socket().shutdown(asio::socket_base::shutdown_send, ec);
  if (ec) co_return;
  session.stream.expires_after(limits.linger_timeout);
  std::array<char, 4096> scratch;
  for (;;) {
    co_await session.stream.async_read_some(asio::buffer(scratch),
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
  error_code ec;
  const auto addr = asio::ip::make_address(std::string(address), ec);
  if (ec) {
    return fail(Errc::invalid_argument, "Bad listen address \"" + std::string(address) + "\"");
  }
  const Tcp::endpoint endpoint(addr, port);
  auto acceptor = std::make_unique<Tcp::acceptor>(impl_->ex);
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
  impl_->tcp_acceptors.push_back(std::move(acceptor));
  if (impl_->started) impl_->spawn_accept<Tcp>(*impl_->tcp_acceptors.back());
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
  if (impl_->started) impl_->spawn_accept<Local>(*impl_->unix_acceptors.back());
  return {};
}

void Server::start() {
  if (impl_->started) return;
  impl_->started = true;
  for (auto& a : impl_->tcp_acceptors)
    impl_->spawn_accept<Tcp>(*a);
  for (auto& a : impl_->unix_acceptors)
    impl_->spawn_accept<Local>(*a);
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
