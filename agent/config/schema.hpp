// Typed, strict reading of role-file sections. Each section is a struct plus a Schema that
// declares every field once: key, member, one-line doc, options (required, secret, range,
// allowed values). The same declaration parses, validates, dumps (secrets redacted) and
// documents the section, so the three cannot drift apart.
#pragma once

#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::config {

using Duration = std::chrono::milliseconds;

// Collects every problem of one file as "FILE:LINE:COLUMN: message" (1-based positions).
class Diagnostics {
 public:
  explicit Diagnostics(std::string file) : file_(std::move(file)) {}

  // Records a problem at the position of a YAML node (or of its parent when it has none).
  void error(const YAML::Mark& at, std::string_view message);
  bool ok() const { return lines_.empty(); }
  const std::vector<std::string>& lines() const { return lines_; }
  const std::string& file() const { return file_; }
  // All lines joined with newlines, as one invalid_argument error.
  Error to_error() const;

 private:
  std::string file_;
  std::vector<std::string> lines_;
};

// Renders a scalar/sequence/map node's kind for messages ("a mapping", "a list", ...).
std::string_view describe_kind(const YAML::Node& node);

// Reading a value of type T from a node; false (and a diagnostic) on a wrong type.
bool decode(const YAML::Node& node, std::string_view path, bool& out, Diagnostics& diag);
bool decode(const YAML::Node& node, std::string_view path, std::string& out, Diagnostics& diag);
bool decode(const YAML::Node& node, std::string_view path, std::int64_t& out, Diagnostics& diag);
bool decode(const YAML::Node& node, std::string_view path, double& out, Diagnostics& diag);
bool decode(const YAML::Node& node, std::string_view path, Duration& out, Diagnostics& diag);
bool decode(const YAML::Node& node, std::string_view path, std::vector<std::string>& out,
            Diagnostics& diag);
bool decode(const YAML::Node& node, std::string_view path, std::map<std::string, std::string>& out,
            Diagnostics& diag);

nlohmann::json encode(bool v);
nlohmann::json encode(const std::string& v);
nlohmann::json encode(std::int64_t v);
nlohmann::json encode(double v);
nlohmann::json encode(Duration v);
nlohmann::json encode(const std::vector<std::string>& v);
nlohmann::json encode(const std::map<std::string, std::string>& v);

// "1500ms", "10s", "5m", "1h", "1h30m"; plain integers are refused so units are never guessed.
std::optional<Duration> parse_duration(std::string_view text);
std::string format_duration(Duration d);

// Per-field options. `check` returns an empty string when the value is fine, else the reason.
template <class F>
struct Opts {
  bool required = false;
  bool secret = false;  // redacted in dumps and /config
  std::optional<F> min;
  std::optional<F> max;
  std::vector<std::string> one_of;  // for strings: the allowed values
  std::function<std::string(const F&)> check;
};

// One documented field, for references and `neco config check --explain`-style output.
struct FieldDoc {
  std::string key;  // dotted path
  std::string type;
  std::string default_value;
  std::string doc;
  bool required = false;
};

template <class T>
class Schema {
 public:
  // Declares a field bound to member `m`; its default is whatever T{} holds.
  template <class F>
  Schema& field(const std::string& key, F T::*m, const std::string& doc, Opts<F> opts = {});

  // Declares a nested mapping parsed by its own schema.
  template <class S>
  Schema& section(const std::string& key, S T::*m, const Schema<S>& schema, const std::string& doc,
                  bool required = false);

  // Declares a list of mappings, each parsed by `schema` (paths read "key[0].field").
  template <class S>
  Schema& list(const std::string& key, std::vector<S> T::*m, const Schema<S>& schema,
               const std::string& doc, bool required = false);

  // Declares a key that is valid here but parsed by someone else (for example `modules`).
  Schema& external(const std::string& key, const std::string& doc);

  // Parses `node` (a mapping or null) into `out`, which already holds the defaults.
  // Unknown keys, wrong types, out-of-range values and missing required fields are reported.
  void parse(const YAML::Node& node, std::string_view path, T& out, Diagnostics& diag) const;

  // The effective values as JSON, secrets replaced by "<redacted>".
  nlohmann::json dump(const T& value) const;

  // Every field with its type, default and doc.
  void document(std::string_view prefix, const T& defaults, std::vector<FieldDoc>& out) const;

 private:
  struct Entry {
    std::string key;
    std::string doc;
    bool required = false;
    std::function<void(const YAML::Node&, std::string_view, T&, Diagnostics&)> parse;
    std::function<nlohmann::json(const T&)> dump;
    std::function<void(std::string_view, const T&, std::vector<FieldDoc>&)> document;
  };
  std::vector<Entry> entries_;
};

// Type names used in docs and wrong-type messages.
template <class F>
constexpr std::string_view type_name() {
  if constexpr (std::is_same_v<F, bool>)
    return "boolean";
  else if constexpr (std::is_same_v<F, std::string>)
    return "string";
  else if constexpr (std::is_same_v<F, std::int64_t>)
    return "integer";
  else if constexpr (std::is_same_v<F, double>)
    return "number";
  else if constexpr (std::is_same_v<F, Duration>)
    return "duration";
  else if constexpr (std::is_same_v<F, std::vector<std::string>>)
    return "list of strings";
  else
    return "map of strings";
}

std::string join_path(std::string_view prefix, std::string_view key);
std::string quote(std::string_view value);
std::string render_value(const nlohmann::json& v);

template <class T>
template <class F>
Schema<T>& Schema<T>::field(const std::string& key, F T::*m, const std::string& doc, Opts<F> opts) {
  Entry e;
  e.required = opts.required;
  e.parse = [m, opts](const YAML::Node& node, std::string_view path, T& out, Diagnostics& diag) {
    F value{};
    if (!decode(node, path, value, diag)) return;
    if constexpr (std::is_arithmetic_v<F> && !std::is_same_v<F, bool>) {
      if ((opts.min && value < *opts.min) || (opts.max && value > *opts.max)) {
        diag.error(node.Mark(), std::string(path) + ": " + render_value(encode(value)) +
                                    " is out of range " +
                                    (opts.min ? render_value(encode(*opts.min)) : "") + ".." +
                                    (opts.max ? render_value(encode(*opts.max)) : ""));
        return;
      }
    } else if constexpr (std::is_same_v<F, Duration>) {
      if ((opts.min && value < *opts.min) || (opts.max && value > *opts.max)) {
        diag.error(node.Mark(), std::string(path) + ": " + format_duration(value) +
                                    " is out of range " +
                                    (opts.min ? format_duration(*opts.min) : "") + ".." +
                                    (opts.max ? format_duration(*opts.max) : ""));
        return;
      }
    } else if constexpr (std::is_same_v<F, std::string>) {
      if (!opts.one_of.empty()) {
        bool found = false;
        std::string allowed;
        for (const auto& a : opts.one_of) {
          found = found || a == value;
          allowed += (allowed.empty() ? "" : ", ") + a;
        }
        if (!found) {
          diag.error(node.Mark(),
                     std::string(path) + ": " + quote(value) + " is not one of: " + allowed);
          return;
        }
      }
    }
    if (opts.check) {
      if (auto why = opts.check(value); !why.empty()) {
        diag.error(node.Mark(), std::string(path) + ": " + why);
        return;
      }
    }
    out.*m = std::move(value);
  };
  e.dump = [m, secret = opts.secret](const T& v) -> nlohmann::json {
    if (secret) return (v.*m == F{}) ? nlohmann::json("") : nlohmann::json("<redacted>");
    return encode(v.*m);
  };
  e.document = [m, key, doc, required = opts.required](std::string_view prefix, const T& defaults,
                                                       std::vector<FieldDoc>& out) {
    out.push_back({join_path(prefix, key), std::string(type_name<F>()),
                   required ? "" : render_value(encode(defaults.*m)), doc, required});
  };
  e.key = key;
  e.doc = doc;
  entries_.push_back(std::move(e));
  return *this;
}

template <class T>
template <class S>
Schema<T>& Schema<T>::section(const std::string& key, S T::*m, const Schema<S>& schema,
                              const std::string& doc, bool required) {
  auto shared = std::make_shared<Schema<S>>(schema);
  Entry e;
  e.required = required;
  e.parse = [m, shared](const YAML::Node& node, std::string_view path, T& out, Diagnostics& diag) {
    shared->parse(node, path, out.*m, diag);
  };
  e.dump = [m, shared](const T& v) { return shared->dump(v.*m); };
  e.document = [m, shared, key](std::string_view prefix, const T& defaults,
                                std::vector<FieldDoc>& out) {
    shared->document(join_path(prefix, key), defaults.*m, out);
  };
  e.key = key;
  e.doc = doc;
  entries_.push_back(std::move(e));
  return *this;
}

template <class T>
template <class S>
Schema<T>& Schema<T>::list(const std::string& key, std::vector<S> T::*m, const Schema<S>& schema,
                           const std::string& doc, bool required) {
  auto shared = std::make_shared<Schema<S>>(schema);
  Entry e;
  e.required = required;
  e.parse = [m, shared](const YAML::Node& node, std::string_view path, T& out, Diagnostics& diag) {
    if (node.IsNull()) {
      (out.*m).clear();
      return;
    }
    if (!node.IsSequence()) {
      diag.error(node.Mark(),
                 std::string(path) + ": expected a list, got " + std::string(describe_kind(node)));
      return;
    }
    std::vector<S> items;
    for (std::size_t i = 0; i < node.size(); ++i) {
      S item{};
      shared->parse(node[i], std::string(path) + "[" + std::to_string(i) + "]", item, diag);
      items.push_back(std::move(item));
    }
    out.*m = std::move(items);
  };
  e.dump = [m, shared](const T& v) {
    nlohmann::json a = nlohmann::json::array();
    for (const auto& item : v.*m)
      a.push_back(shared->dump(item));
    return a;
  };
  e.document = [shared, key](std::string_view prefix, const T&, std::vector<FieldDoc>& out) {
    shared->document(join_path(prefix, key) + "[]", S{}, out);
  };
  e.key = key;
  e.doc = doc;
  entries_.push_back(std::move(e));
  return *this;
}

template <class T>
Schema<T>& Schema<T>::external(const std::string& key, const std::string& doc) {
  Entry e;
  e.key = key;
  e.doc = doc;
  e.parse = [](const YAML::Node&, std::string_view, T&, Diagnostics&) {};
  entries_.push_back(std::move(e));
  return *this;
}

template <class T>
void Schema<T>::parse(const YAML::Node& node, std::string_view path, T& out,
                      Diagnostics& diag) const {
  if (node.IsNull() || !node.IsDefined()) {
    for (const auto& e : entries_) {
      if (e.required) {
        diag.error(node.Mark(), "missing required field " + quote(join_path(path, e.key)));
      }
    }
    return;
  }
  if (!node.IsMap()) {
    diag.error(node.Mark(), std::string(path.empty() ? "file" : path) +
                                ": expected a mapping, got " + std::string(describe_kind(node)));
    return;
  }
  std::vector<bool> seen(entries_.size(), false);
  std::vector<std::string> keys_seen;
  for (const auto& kv : node) {
    const YAML::Node& k = kv.first;
    if (!k.IsScalar()) {
      diag.error(k.Mark(), "keys must be plain strings");
      continue;
    }
    const std::string key = k.Scalar();
    bool duplicate = false;
    for (const auto& s : keys_seen)
      duplicate = duplicate || s == key;
    if (duplicate) {
      diag.error(k.Mark(), "duplicate key " + quote(join_path(path, key)));
      continue;
    }
    keys_seen.push_back(key);
    size_t i = 0;
    while (i < entries_.size() && entries_[i].key != key)
      ++i;
    if (i == entries_.size()) {
      std::string known;
      for (const auto& e : entries_)
        known += (known.empty() ? "" : ", ") + e.key;
      diag.error(k.Mark(), "unknown key " + quote(join_path(path, key)) +
                               (known.empty() ? "" : " (known keys: " + known + ")"));
      continue;
    }
    seen[i] = true;
    entries_[i].parse(kv.second, join_path(path, key), out, diag);
  }
  for (size_t i = 0; i < entries_.size(); ++i) {
    if (entries_[i].required && !seen[i]) {
      diag.error(node.Mark(), "missing required field " + quote(join_path(path, entries_[i].key)));
    }
  }
}

template <class T>
nlohmann::json Schema<T>::dump(const T& value) const {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& e : entries_) {
    if (e.dump) j[e.key] = e.dump(value);
  }
  return j;
}

template <class T>
void Schema<T>::document(std::string_view prefix, const T& defaults,
                         std::vector<FieldDoc>& out) const {
  for (const auto& e : entries_) {
    if (e.document) e.document(prefix, defaults, out);
  }
}

}  // namespace neco::config
