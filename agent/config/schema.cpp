#include "agent/config/schema.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace neco::config {
namespace {

// yaml-cpp marks a quoted scalar with the "!" tag; plain scalars carry "?" (or nothing).
bool is_quoted(const YAML::Node& node) {
  return node.Tag() == "!";
}

// YAML text is Unicode; yaml-cpp passes invalid UTF-8 through, and such a value would break
// every JSON consumer (/config, --json) later. Refuse it where it is written.
bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    char32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    static constexpr char32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

std::string wrong_type(std::string_view path, std::string_view want, const YAML::Node& node) {
  std::string got(describe_kind(node));
  if (node.IsScalar()) got += " " + quote(node.Scalar());
  return fmt::format("{}: expected {}, got {}", path, want, got);
}

}  // namespace

void Diagnostics::error(const YAML::Mark& at, std::string_view message) {
  // yaml-cpp counts from 0 and uses -1 for "no position" (a node built in memory).
  const int line = at.line >= 0 ? at.line + 1 : 1;
  const int column = at.column >= 0 ? at.column + 1 : 1;
  lines_.push_back(fmt::format("{}:{}:{}: {}", file_, line, column, message));
}

Error Diagnostics::to_error() const {
  std::string text;
  for (const auto& l : lines_)
    text += (text.empty() ? "" : "\n") + l;
  return Error{Errc::invalid_argument, text};
}

std::string_view describe_kind(const YAML::Node& node) {
  if (!node.IsDefined() || node.IsNull()) return "nothing";
  if (node.IsMap()) return "a mapping";
  if (node.IsSequence()) return "a list";
  return "the value";
}

std::string join_path(std::string_view prefix, std::string_view key) {
  if (prefix.empty()) return std::string(key);
  return fmt::format("{}.{}", prefix, key);
}

std::string quote(std::string_view value) {
  std::string out = "'";
  for (char c : value) {
    if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\x{:02x}", c);
    else
      out += c;
  }
  return out + "'";
}

std::string render_value(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

bool decode(const YAML::Node& node, std::string_view path, bool& out, Diagnostics& diag) {
  // Only true/false: YAML 1.1's yes/no/on/off are exactly the kind of surprise a role file
  // must not have.
  if (node.IsScalar() && !is_quoted(node)) {
    if (node.Scalar() == "true") return out = true, true;
    if (node.Scalar() == "false") return out = false, true;
  }
  diag.error(node.Mark(), wrong_type(path, "a boolean (true or false)", node));
  return false;
}

bool decode(const YAML::Node& node, std::string_view path, std::string& out, Diagnostics& diag) {
  if (!node.IsScalar()) {
    diag.error(node.Mark(), wrong_type(path, "a string", node));
    return false;
  }
  if (!valid_utf8(node.Scalar())) {
    diag.error(node.Mark(), fmt::format("{}: not valid UTF-8", path));
    return false;
  }
  out = node.Scalar();
  return true;
}

bool decode(const YAML::Node& node, std::string_view path, std::int64_t& out, Diagnostics& diag) {
  if (node.IsScalar() && !is_quoted(node)) {
    const std::string& s = node.Scalar();
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && p == s.data() + s.size() && !s.empty()) return out = v, true;
    if (ec == std::errc::result_out_of_range) {
      diag.error(node.Mark(), fmt::format("{}: {} does not fit in a 64-bit integer", path, s));
      return false;
    }
  }
  diag.error(node.Mark(), wrong_type(path, "an integer", node));
  return false;
}

bool decode(const YAML::Node& node, std::string_view path, double& out, Diagnostics& diag) {
  if (node.IsScalar() && !is_quoted(node)) {
    const std::string& s = node.Scalar();
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && p == s.data() + s.size() && !s.empty() && std::isfinite(v)) {
      return out = v, true;
    }
  }
  diag.error(node.Mark(), wrong_type(path, "a number", node));
  return false;
}

bool decode(const YAML::Node& node, std::string_view path, Duration& out, Diagnostics& diag) {
  if (node.IsScalar()) {
    if (auto d = parse_duration(node.Scalar())) return out = *d, true;
  }
  diag.error(node.Mark(),
             wrong_type(path, "a duration with a unit (for example 500ms, 10s, 5m, 1h)", node));
  return false;
}

bool decode(const YAML::Node& node, std::string_view path, std::vector<std::string>& out,
            Diagnostics& diag) {
  if (!node.IsSequence()) {
    diag.error(node.Mark(), wrong_type(path, "a list of strings", node));
    return false;
  }
  std::vector<std::string> values;
  bool ok = true;
  for (size_t i = 0; i < node.size(); ++i) {
    std::string v;
    ok = decode(node[i], fmt::format("{}[{}]", path, i), v, diag) && ok;
    values.push_back(std::move(v));
  }
  if (ok) out = std::move(values);
  return ok;
}

bool decode(const YAML::Node& node, std::string_view path, std::map<std::string, std::string>& out,
            Diagnostics& diag) {
  if (node.IsNull()) return out.clear(), true;
  if (!node.IsMap()) {
    diag.error(node.Mark(), wrong_type(path, "a mapping of strings", node));
    return false;
  }
  std::map<std::string, std::string> values;
  bool ok = true;
  for (const auto& kv : node) {
    std::string key;
    std::string value;
    if (!kv.first.IsScalar()) {
      diag.error(kv.first.Mark(), fmt::format("{}: keys must be plain strings", path));
      ok = false;
      continue;
    }
    key = kv.first.Scalar();
    if (!valid_utf8(key)) {
      diag.error(kv.first.Mark(), fmt::format("{}: a key is not valid UTF-8", path));
      ok = false;
      continue;
    }
    if (values.count(key) != 0) {
      diag.error(kv.first.Mark(), fmt::format("duplicate key {}", quote(join_path(path, key))));
      ok = false;
      continue;
    }
    ok = decode(kv.second, join_path(path, key), value, diag) && ok;
    values.emplace(std::move(key), std::move(value));
  }
  if (ok) out = std::move(values);
  return ok;
}

nlohmann::json encode(bool v) {
  return v;
}
nlohmann::json encode(const std::string& v) {
  return v;
}
nlohmann::json encode(std::int64_t v) {
  return v;
}
nlohmann::json encode(double v) {
  return v;
}
nlohmann::json encode(Duration v) {
  return format_duration(v);
}
nlohmann::json encode(const std::vector<std::string>& v) {
  return v;
}
nlohmann::json encode(const std::map<std::string, std::string>& v) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, val] : v)
    j[k] = val;
  return j;
}

std::optional<Duration> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::int64_t total_ms = 0;
  size_t i = 0;
  while (i < text.size()) {
    std::int64_t n = 0;
    auto [p, ec] = std::from_chars(text.data() + i, text.data() + text.size(), n);
    if (ec != std::errc() || n < 0) return std::nullopt;
    i = static_cast<size_t>(p - text.data());
    std::int64_t unit_ms = 0;
    if (text.substr(i, 2) == "ms")
      unit_ms = 1, i += 2;
    else if (text.substr(i, 1) == "s")
      unit_ms = 1000, i += 1;
    else if (text.substr(i, 1) == "m")
      unit_ms = 60'000, i += 1;
    else if (text.substr(i, 1) == "h")
      unit_ms = 3'600'000, i += 1;
    else
      return std::nullopt;  // a bare number: refuse rather than guess the unit
    if (n > (INT64_MAX - total_ms) / unit_ms) return std::nullopt;
    total_ms += n * unit_ms;
  }
  return Duration(total_ms);
}

std::string format_duration(Duration d) {
  const auto ms = d.count();
  if (ms != 0 && ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
  if (ms != 0 && ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
  if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
  return fmt::format("{}ms", ms);
}

}  // namespace neco::config
