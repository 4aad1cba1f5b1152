#include "agent/http/request.hpp"

#include <algorithm>

namespace neco::http {
namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string_view> find_first(const Pairs& pairs, std::string_view name) {
  for (const auto& [k, v] : pairs) {
    if (k == name) return std::string_view(v);
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string_view> Request::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (iequals(k, name)) return std::string_view(v);
  }
  return std::nullopt;
}

std::optional<std::string_view> Request::query_param(std::string_view name) const {
  return find_first(query, name);
}

std::vector<std::string_view> Request::query_params(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const auto& [k, v] : query) {
    if (k == name) out.emplace_back(v);
  }
  return out;
}

std::optional<std::string_view> Request::path_param(std::string_view name) const {
  return find_first(path_params, name);
}

Expected<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      const bool complete = i + 2 < text.size();
      const int hi = complete ? hex_value(text[i + 1]) : -1;
      const int lo = complete ? hex_value(text[i + 2]) : -1;
      if (hi < 0 || lo < 0) return fail(Errc::invalid_argument, "bad percent-escape");
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    // A NUL would truncate the value wherever it meets a C API (paths, logs); no caller needs it.
    if (c == '\0') return fail(Errc::invalid_argument, "NUL in request-target");
    out.push_back(c);
  }
  return out;
}

Expected<std::string> normalise_path(std::string_view raw_path) {
  if (raw_path.empty() || raw_path.front() != '/') {
    return fail(Errc::invalid_argument, "path must start with '/'");
  }
  auto decoded = percent_decode(raw_path, false);
  if (!decoded) return std::unexpected(decoded.error());
  // Segments are split after decoding, so "%2e%2e" and "%2F" cannot smuggle a ".." past us.
  std::vector<std::string_view> segments;
  std::string_view rest = *decoded;
  while (!rest.empty()) {
    const auto slash = rest.find('/');
    const std::string_view seg = rest.substr(0, slash);
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (seg.empty() || seg == ".") continue;
    if (seg == "..") {
      if (segments.empty()) return fail(Errc::invalid_argument, "path escapes the root");
      segments.pop_back();
      continue;
    }
    segments.push_back(seg);
  }
  std::string out;
  out.reserve(decoded->size());
  for (const auto seg : segments) {
    out.push_back('/');
    out.append(seg);
  }
  if (out.empty()) out = "/";
  return out;
}

Expected<Pairs> parse_query(std::string_view raw_query) {
  Pairs out;
  while (!raw_query.empty()) {
    const auto amp = raw_query.find('&');
    const std::string_view item = raw_query.substr(0, amp);
    raw_query = amp == std::string_view::npos ? std::string_view() : raw_query.substr(amp + 1);
    if (item.empty()) continue;
    const auto eq = item.find('=');
    auto name = percent_decode(item.substr(0, eq), true);
    if (!name) return std::unexpected(name.error());
    std::string value;
    if (eq != std::string_view::npos) {
      auto v = percent_decode(item.substr(eq + 1), true);
      if (!v) return std::unexpected(v.error());
      value = std::move(*v);
    }
    out.emplace_back(std::move(*name), std::move(value));
  }
  return out;
}

Expected<Target> parse_target(std::string_view target) {
  // Absolute-form must be accepted by HTTP/1.1 servers (RFC 9112 3.2.2); the authority is
  // irrelevant to a local listener, so it is dropped.
  std::string storage;
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
      target.remove_prefix(scheme.size());
      const auto end = target.find_first_of("/?#");
      target = end == std::string_view::npos ? std::string_view() : target.substr(end);
      if (target.empty() || target.front() != '/') {
        storage = "/";  // "http://h" and "http://h?q" mean the root
        storage.append(target);
        target = storage;
      }
      break;
    }
  }
  const auto hash = target.find('#');
  if (hash != std::string_view::npos) target = target.substr(0, hash);
  const auto qmark = target.find('?');
  Target out;
  auto path = normalise_path(target.substr(0, qmark));
  if (!path) return std::unexpected(path.error());
  out.path = std::move(*path);
  if (qmark != std::string_view::npos) {
    auto query = parse_query(target.substr(qmark + 1));
    if (!query) return std::unexpected(query.error());
    out.query = std::move(*query);
  }
  return out;
}

}  // namespace neco::http
