#include "agent/http/router.hpp"

#include <algorithm>

namespace neco::http {
namespace {

bool valid_name(std::string_view name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// Characters a literal segment may not hold: they would never occur in a normalised path
// (query, fragment, escapes) or would be read as pattern syntax.
bool valid_literal(std::string_view seg) {
  if (seg == "." || seg == "..") return false;
  return seg.find_first_of("{}*?#%") == std::string_view::npos &&
         std::none_of(seg.begin(), seg.end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

// Splits "/a/b" into {"a", "b"}; "/" into {}.
std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  while (!path.empty()) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
    if (path.empty()) out.emplace_back();  // trailing slash: an empty last segment
  }
  return out;
}

}  // namespace

bool Router::method_allowed(Verb method, bool mutates) noexcept {
  if (mutates) return method == Verb::post || method == Verb::put || method == Verb::delete_;
  return method == Verb::get || method == Verb::head;
}

Expected<void> Router::add(std::string_view pattern, std::string help, Handler handler,
                           bool mutates) {
  auto bad = [&](std::string_view why) {
    return fail(Errc::invalid_argument,
                "Bad route pattern \"" + std::string(pattern) + "\": " + std::string(why));
  };
  if (!handler) return bad("no handler");
  if (pattern.empty() || pattern.front() != '/') return bad("must start with '/'");
  Route route;
  const auto parts = split_path(pattern);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const std::string_view seg = parts[i];
    const bool last = i + 1 == parts.size();
    if (seg.empty()) return bad("empty segment");
    Segment s;
    if (seg == "*" || (seg.size() > 5 && seg.front() == '{' && seg.ends_with("...}"))) {
      if (!last) return bad("catch-all must be the last segment");
      s.kind = Segment::Kind::catch_all;
      s.text = seg == "*" ? std::string("*") : std::string(seg.substr(1, seg.size() - 5));
      if (s.text != "*" && !valid_name(s.text)) return bad("bad catch-all name");
    } else if (seg.front() == '{' && seg.back() == '}') {
      s.kind = Segment::Kind::param;
      s.text = std::string(seg.substr(1, seg.size() - 2));
      if (!valid_name(s.text)) return bad("bad parameter name");
    } else {
      if (!valid_literal(seg)) return bad("bad literal segment");
      s.text = std::string(seg);
    }
    if (s.kind != Segment::Kind::literal) {
      for (const auto& prev : route.segments) {
        if (prev.kind != Segment::Kind::literal && prev.text == s.text) {
          return bad("parameter name used twice");
        }
      }
    }
    route.segments.push_back(std::move(s));
  }
  // Two patterns that differ only in parameter names match exactly the same paths.
  auto same_shape = [&](const Route& other) {
    if (other.info.mutates != mutates || other.segments.size() != route.segments.size()) {
      return false;
    }
    for (std::size_t i = 0; i < route.segments.size(); ++i) {
      const auto& a = route.segments[i];
      const auto& b = other.segments[i];
      if (a.kind != b.kind) return false;
      if (a.kind == Segment::Kind::literal && a.text != b.text) return false;
    }
    return true;
  };
  for (const auto& other : routes_) {
    if (same_shape(other)) {
      return fail(Errc::already_exists,
                  "Route \"" + std::string(pattern) + "\" duplicates \"" + other.info.path + "\"");
    }
  }
  route.info = RouteInfo{std::string(pattern), std::move(help), mutates};
  route.handler = std::move(handler);
  routes_.push_back(std::move(route));
  return {};
}

bool Router::bind(const Route& route, std::string_view path, Pairs& params,
                  std::vector<int>& rank) {
  params.clear();
  rank.clear();
  const auto parts = split_path(path);
  std::size_t i = 0;
  for (const auto& seg : route.segments) {
    if (seg.kind == Segment::Kind::catch_all) {
      // The remainder of the path after the segments matched so far, without its leading '/'.
      std::string rest;
      for (std::size_t j = i; j < parts.size(); ++j) {
        if (j > i) rest.push_back('/');
        rest.append(parts[j]);
      }
      params.emplace_back(seg.text, std::move(rest));
      rank.push_back(0);
      return true;
    }
    if (i >= parts.size()) return false;
    if (seg.kind == Segment::Kind::literal) {
      if (parts[i] != seg.text) return false;
      rank.push_back(2);
    } else {
      if (parts[i].empty()) return false;
      params.emplace_back(seg.text, std::string(parts[i]));
      rank.push_back(1);
    }
    ++i;
  }
  if (i != parts.size()) return false;
  rank.push_back(3);  // an exact end beats a catch-all that matched nothing at this position
  return true;
}

RouteMatch Router::match(Verb method, std::string_view path) const {
  RouteMatch result;
  const Route* best = nullptr;
  std::vector<int> best_rank;
  Pairs params;
  std::vector<int> rank;
  bool any_path_match = false;
  bool allow_read = false;
  bool allow_write = false;
  for (const auto& route : routes_) {
    if (!bind(route, path, params, rank)) continue;
    any_path_match = true;
    (route.info.mutates ? allow_write : allow_read) = true;
    if (!method_allowed(method, route.info.mutates)) continue;
    if (best == nullptr || rank > best_rank) {
      best = &route;
      best_rank = rank;
      result.params = params;
    }
  }
  if (best != nullptr) {
    result.kind = RouteMatch::Kind::found;
    result.handler = &best->handler;
    result.route = &best->info;
    return result;
  }
  result.params.clear();
  if (!any_path_match) return result;
  result.kind = RouteMatch::Kind::method_not_allowed;
  if (allow_read) result.allow = "GET, HEAD";
  if (allow_write) result.allow += std::string(allow_read ? ", " : "") + "POST, PUT, DELETE";
  return result;
}

std::vector<RouteInfo> Router::routes() const {
  std::vector<RouteInfo> out;
  out.reserve(routes_.size());
  for (const auto& r : routes_)
    out.push_back(r.info);
  std::sort(out.begin(), out.end(), [](const RouteInfo& a, const RouteInfo& b) {
    return a.path != b.path ? a.path < b.path : a.mutates < b.mutates;
  });
  return out;
}

}  // namespace neco::http
