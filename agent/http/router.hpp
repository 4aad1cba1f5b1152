// Maps a method and a normalised path to a handler. Built once, then shared immutably with the
// server (config reloads build a new Router and swap it in), so matching needs no locks.
#pragma once

#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/http/request.hpp"
#include "agent/http/response.hpp"
#include "agent/util/error.hpp"

namespace neco::http {

// A route handler: a coroutine on the agent's executor. Throwing yields a 500 JSON error.
using Handler = std::function<boost::asio::awaitable<Response>(Request&)>;

// One registered route as listed by /help.
struct RouteInfo {
  std::string path;      // the pattern as registered, e.g. "/v1/mysql/{cluster}/switchover"
  std::string help;      // one line for /help
  bool mutates = false;  // true: POST/PUT/DELETE only; false: GET/HEAD only
};

// The outcome of Router::match.
struct RouteMatch {
  enum class Kind {
    found,               // `handler` and `params` are set
    not_found,           // no pattern matches the path (404)
    method_not_allowed,  // some pattern matches but none takes this method (405 + `allow`)
  };
  Kind kind = Kind::not_found;       // what happened
  const Handler* handler = nullptr;  // valid as long as the Router lives
  const RouteInfo* route = nullptr;  // the matched route, for logs
  Pairs params;                      // values of `{name}` / catch-all segments
  std::string allow;                 // Allow header value for 405, e.g. "GET, HEAD"
};

class Router {
 public:
  // Registers `pattern`: "/" or "/seg/{name}/..." with an optional last segment "{rest...}" or
  // "*" that takes the remaining path (possibly empty). Fails on a malformed or duplicate
  // pattern; the same pattern may be registered once as mutating and once as not.
  Expected<void> add(std::string_view pattern, std::string help, Handler handler,
                     bool mutates = false);

  // Pure lookup of an already normalised path. The most specific pattern wins: at the first
  // differing segment a literal beats `{name}`, which beats a catch-all.
  RouteMatch match(Verb method, std::string_view path) const;

  // All routes sorted by path, for /help.
  std::vector<RouteInfo> routes() const;

  // True when GET and HEAD may reach a non-mutating route, or POST/PUT/DELETE a mutating one.
  static bool method_allowed(Verb method, bool mutates) noexcept;

 private:
  struct Segment {
    enum class Kind { literal, param, catch_all };
    Kind kind = Kind::literal;
    std::string text;  // literal text, or the parameter name
  };
  struct Route {
    RouteInfo info;
    Handler handler;
    std::vector<Segment> segments;
  };

  // Binds `path` against `route`; fills `params` and the specificity rank on success.
  static bool bind(const Route& route, std::string_view path, Pairs& params,
                   std::vector<int>& rank);

  std::vector<Route> routes_;
};

}  // namespace neco::http
