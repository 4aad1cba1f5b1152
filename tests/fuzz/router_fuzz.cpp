// Fuzz target: arbitrary bytes as an HTTP request through Beast's parser (with the server's
// default limits), then the request-target parsing and Router matching the server would do.
// Built two ways: with clang and -fsanitize=fuzzer as a libFuzzer target, and with any compiler
// and with replay_main.cpp as a plain driver that replays a corpus in the ordinary test run.
#include <utility>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/http/request.hpp"
#include "agent/http/router.hpp"

namespace bhttp = boost::beast::http;
namespace http = neco::http;

namespace {

// Mirrors ServerLimits' defaults; server.hpp is not included to keep Asio's sockets out.
constexpr std::uint32_t kMaxHeaderBytes = 8 * 1024;
constexpr std::uint64_t kMaxBodyBytes = 1024 * 1024;

http::Handler noop() {
  return [](http::Request&) -> boost::asio::awaitable<http::Response> {
    co_return http::Response::text("");
  };
}

const http::Router& router() {
  static const http::Router r = [] {
    http::Router out;
    for (const char* p : {"/", "/healthz", "/readyz", "/status", "/config", "/help",
                          "/v1/mysql/{cluster}", "/v1/mysql/{cluster}/replicas/{host}",
                          "/v1/exporter/*", "/v1/netboot/{rest...}", "/v1/storage/volumes"}) {
      (void)out.add(p, "", noop());
    }
    (void)out.add("/v1/mysql/{cluster}/switchover", "", noop(), true);
    (void)out.add("/v1/storage/volumes", "", noop(), true);
    return out;
  }();
  return r;
}

// Everything the server does with a target, checked for internal consistency.
void route(http::Verb method, std::string_view target) {
  auto parsed = http::parse_target(target);
  if (!parsed) return;
  const auto& path = parsed->path;
  // A normalised path is a fixed point and never holds what normalisation removes.
  if (path.empty() || path.front() != '/' || path.find('\0') != std::string::npos ||
      path.find("//") != std::string::npos || http::normalise_path(path).value_or("") != path) {
    __builtin_trap();
  }
  const auto m = router().match(method, path);
  if (m.kind == http::RouteMatch::Kind::found && (m.handler == nullptr || m.route == nullptr)) {
    __builtin_trap();
  }
  if (m.kind == http::RouteMatch::Kind::method_not_allowed && m.allow.empty()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  // Pattern parsing and the pure helpers see the raw bytes too.
  {
    http::Router scratch;
    (void)scratch.add(input, "", noop());
    (void)scratch.add(input, "", noop(), true);
    (void)scratch.match(http::Verb::get, input);
    (void)http::percent_decode(input, true);
    (void)http::parse_query(input);
    route(http::Verb::get, input);
  }

  bhttp::request_parser<bhttp::string_body> parser;
  parser.header_limit(kMaxHeaderBytes);
  parser.body_limit(kMaxBodyBytes);
  parser.eager(true);
  boost::beast::error_code ec;
  std::string_view rest = input;
  // The server reads in pieces: feed small chunks to exercise the parser's resumption.
  const std::size_t chunk = size == 0 ? 1 : 1 + data[0] % 64;
  std::string pending;
  while (!parser.is_done()) {
    const auto take = std::min(chunk, rest.size());
    pending.append(rest.substr(0, take));
    rest.remove_prefix(take);
    const auto used = parser.put(boost::asio::buffer(pending.data(), pending.size()), ec);
    pending.erase(0, used);
    if (ec == bhttp::error::need_more) {
      ec = {};
      if (take == 0) {
        // put_eof() requires that some input was seen, as in Beast's own read loop.
        if (parser.got_some()) parser.put_eof(ec);
        break;
      }
      continue;
    }
    if (ec) break;
    if (take == 0 && used == 0) break;
  }
  if (parser.is_header_done()) {
    const auto& msg = parser.get();
    (void)msg.keep_alive();
    for (const auto& f : msg)
      (void)http::iequals(f.name_string(), "expect");
    route(msg.method(), msg.target());
  }
  return 0;
}
