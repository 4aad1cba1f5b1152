#include "modules/netboot/machine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <nlohmann/json.hpp>
#include <utility>

#include "modules/netboot/json_fields.hpp"

namespace neco::netboot {
namespace {

using nlohmann::json;
using S = MachineState;

// sabakan's table (docs/lifecycle.md): who moves a machine where is the caller's business.
constexpr std::array<S, 2> kFromUninitialized = {S::healthy, S::retiring};
constexpr std::array<S, 4> kFromHealthy = {S::unhealthy, S::unreachable, S::updating, S::retiring};
constexpr std::array<S, 4> kFromUnhealthy = {S::healthy, S::unreachable, S::updating, S::retiring};
constexpr std::array<S, 4> kFromUnreachable = {S::healthy, S::unhealthy, S::updating, S::retiring};
constexpr std::array<S, 1> kFromUpdating = {S::uninitialized};
constexpr std::array<S, 1> kFromRetiring = {S::retired};
constexpr std::array<S, 1> kFromRetired = {S::uninitialized};

Error bad(std::string message) {
  return Error{Errc::invalid_argument, std::move(message)};
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// Kubernetes' label name/value shape (as sabakan checks): 1-63 characters of [A-Za-z0-9_.-],
// alphanumeric at both ends.
bool is_label_token(std::string_view s) {
  if (s.empty() || s.size() > 63 || !is_alnum(s.front()) || !is_alnum(s.back())) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool is_serial(std::string_view s) {
  if (s.empty() || s.size() > 64 || !is_alnum(s.front())) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return is_alnum(c) || c == '_' || c == '.' || c == '-'; });
}

bool is_bmc_type(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return is_alnum(c) || c == '_' || c == '.' || c == '-' || c == '/';
  });
}

// Prints a user value in an error without letting it break the line.
std::string shown(std::string_view s) {
  std::string out = "'";
  for (const char c : s.substr(0, 80)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  if (s.size() > 80) out += "...";
  return out + "'";
}

Expected<void> check_label(std::string_view name, std::string_view value) {
  if (!is_label_token(name)) {
    return std::unexpected(bad(fmt::format(
        "labels: name {} must be 1-63 characters of [A-Za-z0-9_.-], alphanumeric at both ends",
        shown(name))));
  }
  if (!value.empty() && !is_label_token(value)) {
    return std::unexpected(
        bad(fmt::format("labels: value {} of {} must be empty or 1-63 characters of "
                        "[A-Za-z0-9_.-], alphanumeric at both ends",
                        shown(value), shown(name))));
  }
  return {};
}

constexpr std::size_t kMaxLabels = 64;

Expected<std::map<std::string, std::string>> labels_from_json(const json& j) {
  if (!j.is_object()) return std::unexpected(bad("labels: expected an object of strings"));
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : j.items()) {
    if (!v.is_string()) {
      return std::unexpected(bad(fmt::format("labels: value of {} must be a string", shown(k))));
    }
    out.emplace(k, v.get<std::string>());
  }
  return out;
}

bool parse_digits(std::string_view s, int& out) {
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size() &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::optional<std::int64_t> parse_date(std::string_view s) {
  // YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ
  if (s.size() != 10 && s.size() != 20) return std::nullopt;
  if (s[4] != '-' || s[7] != '-') return std::nullopt;
  int y = 0;
  int mo = 0;
  int d = 0;
  int h = 0;
  int mi = 0;
  int sec = 0;
  if (!parse_digits(s.substr(0, 4), y) || !parse_digits(s.substr(5, 2), mo) ||
      !parse_digits(s.substr(8, 2), d)) {
    return std::nullopt;
  }
  if (s.size() == 20) {
    if (s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != 'Z') return std::nullopt;
    if (!parse_digits(s.substr(11, 2), h) || !parse_digits(s.substr(14, 2), mi) ||
        !parse_digits(s.substr(17, 2), sec) || h > 23 || mi > 59 || sec > 59) {
      return std::nullopt;
    }
  }
  const std::chrono::year_month_day ymd{std::chrono::year(y),
                                        std::chrono::month(static_cast<unsigned>(mo)),
                                        std::chrono::day(static_cast<unsigned>(d))};
  if (!ymd.ok() || y < 1970) return std::nullopt;
  const auto days = std::chrono::sys_days(ymd).time_since_epoch().count();
  return std::int64_t{days} * 86400 + std::int64_t{h} * 3600 + std::int64_t{mi} * 60 + sec;
}

}  // namespace

std::string_view to_string(MachineState state) noexcept {
  switch (state) {
    case S::uninitialized:
      return "uninitialized";
    case S::healthy:
      return "healthy";
    case S::unhealthy:
      return "unhealthy";
    case S::unreachable:
      return "unreachable";
    case S::updating:
      return "updating";
    case S::retiring:
      return "retiring";
    case S::retired:
      return "retired";
  }
  return "uninitialized";
}

std::optional<MachineState> parse_machine_state(std::string_view name) {
  for (const auto s : kAllStates) {
    if (to_string(s) == name) return s;
  }
  return std::nullopt;
}

std::span<const MachineState> allowed_transitions(MachineState from) noexcept {
  switch (from) {
    case S::uninitialized:
      return kFromUninitialized;
    case S::healthy:
      return kFromHealthy;
    case S::unhealthy:
      return kFromUnhealthy;
    case S::unreachable:
      return kFromUnreachable;
    case S::updating:
      return kFromUpdating;
    case S::retiring:
      return kFromRetiring;
    case S::retired:
      return kFromRetired;
  }
  return {};
}

bool transition_allowed(MachineState from, MachineState to) noexcept {
  const auto allowed = allowed_transitions(from);
  return std::find(allowed.begin(), allowed.end(), to) != allowed.end();
}

Expected<void> check_transition(MachineState from, MachineState to) {
  if (transition_allowed(from, to)) return {};
  std::string allowed;
  for (const auto s : allowed_transitions(from)) {
    if (!allowed.empty()) allowed += ", ";
    allowed += to_string(s);
  }
  return fail(Errc::failed_precondition,
              fmt::format("a machine in state {} cannot become {}; from {} it may become: {}",
                          to_string(from), to_string(to), to_string(from), allowed));
}

// ---- MachineSpec

Expected<std::int64_t> date_from_json(const json& j, std::string_view what) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<std::uint64_t>();
    if (v <= 253402300799U) return static_cast<std::int64_t>(v);  // up to 9999-12-31
  } else if (j.is_number_integer() && j.get<std::int64_t>() >= 0) {
    return j.get<std::int64_t>();
  } else if (j.is_string()) {
    if (auto d = parse_date(j.get<std::string>())) return *d;
  }
  return std::unexpected(bad(fmt::format(
      "{}: expected unix seconds or a UTC date like 2030-01-31 or 2030-01-31T00:00:00Z, got {}",
      what, j.dump())));
}

Expected<MachineSpec> machine_spec_from_json(const json& j) {
  using namespace json_fields;
  constexpr std::string_view what = "machine";
  if (auto ok =
          check_object(j, what, {"serial", "rack", "role", "labels", "bmc_type", "retire_date"});
      !ok) {
    return std::unexpected(ok.error());
  }
  MachineSpec spec;
  auto serial = require_string(j, what, "serial");
  if (!serial) return std::unexpected(serial.error());
  spec.serial = std::move(*serial);
  auto rack = require_u32(j, what, "rack");
  if (!rack) return std::unexpected(rack.error());
  spec.rack = *rack;
  auto role = require_string(j, what, "role");
  if (!role) return std::unexpected(role.error());
  spec.role = std::move(*role);
  auto bmc_type = require_string(j, what, "bmc_type");
  if (!bmc_type) return std::unexpected(bmc_type.error());
  spec.bmc_type = std::move(*bmc_type);
  if (const auto it = j.find("labels"); it != j.end() && !it->is_null()) {
    auto labels = labels_from_json(*it);
    if (!labels) return std::unexpected(labels.error());
    spec.labels = std::move(*labels);
  }
  if (const auto it = j.find("retire_date"); it != j.end() && !it->is_null()) {
    auto date = date_from_json(*it, "retire_date");
    if (!date) return std::unexpected(date.error());
    spec.retire_date = *date;
  }
  if (auto ok = validate(spec); !ok) return std::unexpected(ok.error());
  return spec;
}

json to_json(const MachineSpec& spec) {
  return json{{"serial", spec.serial},     {"rack", spec.rack},
              {"role", spec.role},         {"labels", spec.labels},
              {"bmc_type", spec.bmc_type}, {"retire_date", spec.retire_date}};
}

Expected<void> validate(const MachineSpec& spec) {
  if (!is_serial(spec.serial)) {
    return std::unexpected(bad(
        fmt::format("serial: {} must be 1-64 characters of [A-Za-z0-9_.-], starting alphanumeric",
                    shown(spec.serial))));
  }
  if (!is_label_token(spec.role)) {
    return std::unexpected(bad(
        fmt::format("role: {} must be 1-63 characters of [A-Za-z0-9_.-], alphanumeric at both ends",
                    shown(spec.role))));
  }
  if (!is_bmc_type(spec.bmc_type)) {
    return std::unexpected(bad(fmt::format(
        "bmc_type: {} must be 1-64 characters of [A-Za-z0-9_./-]", shown(spec.bmc_type))));
  }
  if (spec.labels.size() > kMaxLabels) {
    return std::unexpected(
        bad(fmt::format("labels: {} labels, at most {} allowed", spec.labels.size(), kMaxLabels)));
  }
  for (const auto& [k, v] : spec.labels) {
    if (auto ok = check_label(k, v); !ok) return ok;
  }
  if (spec.retire_date < 0) return std::unexpected(bad("retire_date: must not be negative"));
  return {};
}

// ---- Machine

bool Machine::has_address(std::uint32_t ip) const {
  return bmc.address == ip || std::any_of(ipv4.begin(), ipv4.end(),
                                          [&](const Interface& nic) { return nic.address == ip; });
}

json to_json(const Machine& m) {
  json nics = json::array();
  for (const auto& nic : m.ipv4)
    nics.push_back(to_json(nic));
  return json{{"serial", m.serial},
              {"rack", m.rack},
              {"index_in_rack", m.index_in_rack},
              {"role", m.role},
              {"labels", m.labels},
              {"bmc_type", m.bmc_type},
              {"register_date", m.register_date},
              {"retire_date", m.retire_date},
              {"state", to_string(m.state)},
              {"state_since", m.state_since},
              {"ipv4", std::move(nics)},
              {"bmc", to_json(m.bmc)}};
}

Expected<Machine> machine_from_json(const json& j) {
  using namespace json_fields;
  constexpr std::string_view what = "machine record";
  if (auto ok =
          check_object(j, what,
                       {"serial", "rack", "index_in_rack", "role", "labels", "bmc_type",
                        "register_date", "retire_date", "state", "state_since", "ipv4", "bmc"});
      !ok) {
    return std::unexpected(ok.error());
  }
  Machine m;
  const auto req_i64 = [&](std::string_view key) -> Expected<std::int64_t> {
    auto v = get_i64(j, what, key);
    if (!v) return std::unexpected(v.error());
    if (!*v) return fail(Errc::invalid_argument, fmt::format("{}: '{}' is required", what, key));
    return **v;
  };
  auto serial = require_string(j, what, "serial");
  auto role = require_string(j, what, "role");
  auto bmc_type = require_string(j, what, "bmc_type");
  auto state = require_string(j, what, "state");
  auto rack = require_u32(j, what, "rack");
  auto index = require_u32(j, what, "index_in_rack");
  auto registered = req_i64("register_date");
  auto retire = req_i64("retire_date");
  auto since = req_i64("state_since");
  if (!serial) return std::unexpected(serial.error());
  if (!role) return std::unexpected(role.error());
  if (!bmc_type) return std::unexpected(bmc_type.error());
  if (!state) return std::unexpected(state.error());
  if (!rack) return std::unexpected(rack.error());
  if (!index) return std::unexpected(index.error());
  if (!registered) return std::unexpected(registered.error());
  if (!retire) return std::unexpected(retire.error());
  if (!since) return std::unexpected(since.error());
  m.serial = std::move(*serial);
  m.role = std::move(*role);
  m.bmc_type = std::move(*bmc_type);
  const auto parsed_state = parse_machine_state(*state);
  if (!parsed_state) {
    return std::unexpected(bad(fmt::format("{}: unknown state {}", what, shown(*state))));
  }
  m.state = *parsed_state;
  m.rack = *rack;
  m.index_in_rack = *index;
  m.register_date = *registered;
  m.retire_date = *retire;
  m.state_since = *since;
  if (const auto it = j.find("labels"); it != j.end() && !it->is_null()) {
    auto labels = labels_from_json(*it);
    if (!labels) return std::unexpected(labels.error());
    m.labels = std::move(*labels);
  }
  const auto nics = j.find("ipv4");
  if (nics == j.end() || !nics->is_array()) {
    return std::unexpected(bad(fmt::format("{}: 'ipv4' must be an array", what)));
  }
  for (const auto& n : *nics) {
    auto nic = interface_from_json(n);
    if (!nic) return std::unexpected(nic.error());
    m.ipv4.push_back(*nic);
  }
  const auto bmc = j.find("bmc");
  if (bmc == j.end()) return std::unexpected(bad(fmt::format("{}: 'bmc' is required", what)));
  auto bmc_nic = interface_from_json(*bmc);
  if (!bmc_nic) return std::unexpected(bmc_nic.error());
  m.bmc = *bmc_nic;
  return m;
}

// ---- MachineUpdate

Expected<MachineUpdate> machine_update_from_json(const json& j) {
  using namespace json_fields;
  constexpr std::string_view what = "machine update";
  if (auto ok = check_object(j, what, {"labels", "retire_date"}); !ok) {
    return std::unexpected(ok.error());
  }
  MachineUpdate u;
  if (const auto it = j.find("labels"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) {
      return std::unexpected(bad("labels: expected an object of strings or nulls"));
    }
    for (const auto& [k, v] : it->items()) {
      if (v.is_null()) {
        u.labels.emplace(k, std::nullopt);
      } else if (v.is_string()) {
        u.labels.emplace(k, v.get<std::string>());
      } else {
        return std::unexpected(
            bad(fmt::format("labels: value of {} must be a string or null", shown(k))));
      }
    }
  }
  if (const auto it = j.find("retire_date"); it != j.end() && !it->is_null()) {
    auto date = date_from_json(*it, "retire_date");
    if (!date) return std::unexpected(date.error());
    u.retire_date = *date;
  }
  return u;
}

Expected<Machine> apply(const Machine& machine, const MachineUpdate& update) {
  Machine out = machine;
  for (const auto& [k, v] : update.labels) {
    if (v) {
      if (auto ok = check_label(k, *v); !ok) return std::unexpected(ok.error());
      out.labels[k] = *v;
    } else {
      out.labels.erase(k);
    }
  }
  if (out.labels.size() > kMaxLabels) {
    return std::unexpected(
        bad(fmt::format("labels: {} labels, at most {} allowed", out.labels.size(), kMaxLabels)));
  }
  if (update.retire_date) {
    if (*update.retire_date < 0) return std::unexpected(bad("retire_date: must not be negative"));
    out.retire_date = *update.retire_date;
  }
  return out;
}

// ---- MachineFilter

bool MachineFilter::matches(const Machine& m) const {
  if (serial && m.serial != *serial) return false;
  if (rack && m.rack != *rack) return false;
  if (role && m.role != *role) return false;
  if (state && m.state != *state) return false;
  if (address && !m.has_address(*address)) return false;
  return std::all_of(labels.begin(), labels.end(), [&](const auto& kv) {
    const auto it = m.labels.find(kv.first);
    return it != m.labels.end() && it->second == kv.second;
  });
}

Expected<MachineFilter> machine_filter_from_params(
    const std::map<std::string, std::string>& params) {
  MachineFilter f;
  for (const auto& [key, value] : params) {
    if (key == "serial") {
      f.serial = value;
    } else if (key == "role") {
      f.role = value;
    } else if (key == "rack") {
      std::uint32_t rack = 0;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), rack);
      if (value.empty() || ec != std::errc() || ptr != value.data() + value.size()) {
        return std::unexpected(bad(fmt::format("rack: {} is not a rack number", shown(value))));
      }
      f.rack = rack;
    } else if (key == "state") {
      f.state = parse_machine_state(value);
      if (!f.state) {
        return std::unexpected(bad(fmt::format(
            "state: {} is not one of uninitialized, healthy, unhealthy, unreachable, updating, "
            "retiring, retired",
            shown(value))));
      }
    } else if (key == "address") {
      f.address = parse_ipv4_u32(value);
      if (!f.address) {
        return std::unexpected(
            bad(fmt::format("address: {} is not an IPv4 address", shown(value))));
      }
    } else if (key == "labels") {
      std::string_view rest = value;
      while (!rest.empty()) {
        const auto comma = rest.find(',');
        const auto item = rest.substr(0, comma);
        const auto eq = item.find('=');
        if (eq == std::string_view::npos) {
          return std::unexpected(bad(fmt::format("labels: {} is not name=value", shown(item))));
        }
        f.labels[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
        if (comma == std::string_view::npos) break;
        rest.remove_prefix(comma + 1);
      }
    } else {
      return std::unexpected(bad(fmt::format(
          "unknown filter {}: use serial, rack, role, state, labels or address", shown(key))));
    }
  }
  return f;
}

}  // namespace neco::netboot
