#include "modules/netboot/inventory.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <random>
#include <set>
#include <utility>

#include "modules/netboot/json_fields.hpp"

namespace neco::netboot {
namespace {

using nlohmann::json;
using store::Compare;
using store::CompareOp;
using store::KeyValue;
using store::Op;

std::int64_t to_unix(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::int64_t to_unix_us(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// Audit keys sort by time: 20 digits hold every non-negative int64.
std::string audit_time(std::int64_t unix_us) {
  return fmt::format("{:020}", std::max<std::int64_t>(unix_us, 0));
}

// Unix seconds to microseconds, saturating instead of overflowing.
std::int64_t seconds_to_us(std::int64_t seconds) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max() / 1'000'000;
  return std::clamp<std::int64_t>(seconds, 0, kMax) * 1'000'000;
}

std::uint32_t random_u32() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return static_cast<std::uint32_t>(rng());
}

Error corrupt(const std::string& key, const Error& e) {
  return Error{Errc::internal, fmt::format("corrupt record at '{}': {}", key, e.message)};
}

Error contention(std::string_view what) {
  return Error{Errc::unavailable,
               fmt::format("could not {}: the inventory kept changing underneath; retry", what)};
}

bool parse_u64(std::string_view s, std::uint64_t& out) {
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return !s.empty() && ec == std::errc() && ptr == s.data() + s.size();
}

Expected<Machine> decode_machine(const KeyValue& kv) {
  auto j = json_fields::parse(kv.value, "machine record");
  if (!j) return std::unexpected(corrupt(kv.key, j.error()));
  auto m = machine_from_json(*j);
  if (!m) return std::unexpected(corrupt(kv.key, m.error()));
  return m;
}

Expected<IpamConfig> decode_ipam(const KeyValue& kv) {
  auto j = json_fields::parse(kv.value, "ipam record");
  if (!j) return std::unexpected(corrupt(kv.key, j.error()));
  auto c = ipam_config_from_json(*j);
  if (!c) return std::unexpected(corrupt(kv.key, c.error()));
  return c;
}

// The machine count and the mod_revision to compare (0 when the key does not exist yet).
struct Count {
  std::uint64_t value = 0;
  std::int64_t mod_revision = 0;
};

Expected<Count> decode_count(const std::optional<KeyValue>& kv) {
  if (!kv) return Count{};
  Count c{0, kv->mod_revision};
  if (!parse_u64(kv->value, c.value)) {
    return std::unexpected(
        corrupt(kv->key, Error{Errc::internal, "not a count: '" + kv->value + "'"}));
  }
  return c;
}

}  // namespace

json to_json(const AuditEntry& e) {
  return json{{"id", e.id},         {"revision", e.revision}, {"time", e.time},
              {"who", e.who},       {"action", e.action},     {"serial", e.serial},
              {"before", e.before}, {"after", e.after}};
}

Expected<AuditQuery> audit_query_from_params(const std::map<std::string, std::string>& params) {
  AuditQuery q;
  for (const auto& [key, value] : params) {
    const auto number = [&]() -> Expected<std::int64_t> {
      std::int64_t v = 0;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (value.empty() || ec != std::errc() || ptr != value.data() + value.size() || v < 0) {
        return fail(Errc::invalid_argument,
                    fmt::format("{}: '{}' is not a non-negative integer", key, value));
      }
      return v;
    };
    if (key == "since" || key == "until" || key == "limit") {
      auto v = number();
      if (!v) return std::unexpected(v.error());
      if (key == "since") q.since = *v;
      if (key == "until") q.until = *v;
      if (key == "limit") q.limit = static_cast<std::size_t>(*v);
    } else if (key == "serial") {
      q.serial = value;
    } else if (key == "action") {
      q.action = value;
    } else if (key == "order") {
      if (value != "newest" && value != "oldest") {
        return fail(Errc::invalid_argument,
                    fmt::format("order: '{}' is neither newest nor oldest", value));
      }
      q.newest_first = value == "newest";
    } else {
      return fail(Errc::invalid_argument,
                  fmt::format("unknown audit filter '{}': use since, until, serial, action, "
                              "limit or order",
                              key));
    }
  }
  return q;
}

Inventory::Inventory(store::Store& store, Options options)
    : store_(store),
      prefix_(std::move(options.prefix)),
      txn_(std::move(options.txn)),
      clock_(std::move(options.clock)),
      max_attempts_(std::max(options.max_attempts, 1)) {}

std::string Inventory::machine_key(std::string_view serial) const {
  return prefix_ + "machines/" + std::string(serial);
}

std::string Inventory::index_key(std::uint32_t rack, std::uint32_t index) const {
  return fmt::format("{}index/{:010}/{:010}", prefix_, rack, index);
}

Expected<store::TxnResponse> Inventory::run(const store::Txn& txn) {
  return txn_ ? txn_(txn) : store_.txn(txn);
}

std::chrono::system_clock::time_point Inventory::now() const {
  return clock_ ? clock_() : std::chrono::system_clock::now();
}

Expected<std::optional<KeyValue>> Inventory::read(const std::string& key) {
  auto kv = store_.get(key);
  if (kv) return std::optional<KeyValue>(std::move(*kv));
  if (kv.error().code == Errc::not_found) return std::optional<KeyValue>();
  return std::unexpected(kv.error());
}

void add_audit_entry(store::Txn& txn, std::string_view audit_prefix,
                     std::chrono::system_clock::time_point now, std::string_view who,
                     std::string_view action, std::string_view serial, json before, json after) {
  auto key = fmt::format("{}{}-{:08x}", audit_prefix, audit_time(to_unix_us(now)), random_u32());
  const json entry{{"time", to_unix(now)},
                   {"who", who},
                   {"action", action},
                   {"serial", serial},
                   {"before", std::move(before)},
                   {"after", std::move(after)}};
  // A clash with another writer's key (same microsecond, same random part) fails the txn and
  // the caller's next round picks a new key.
  txn.compares.push_back(Compare::version(key, CompareOp::equal, 0));
  txn.success.push_back(Op::make_put(std::move(key), entry.dump()));
}

void Inventory::add_audit(store::Txn& txn, std::string_view who, std::string_view action,
                          std::string_view serial, json before, json after) {
  add_audit_entry(txn, audit_prefix(), now(), who, action, serial, std::move(before),
                  std::move(after));
}

// ---- IPAM

Expected<IpamConfig> Inventory::get_ipam() {
  auto kv = read(ipam_key());
  if (!kv) return std::unexpected(kv.error());
  if (!*kv) return fail(Errc::not_found, "IPAM is not configured");
  return decode_ipam(**kv);
}

Expected<IpamConfig> Inventory::put_ipam(const IpamConfig& config, std::string_view who) {
  if (auto ipam = Ipam::make(config); !ipam) return std::unexpected(ipam.error());
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    auto old_kv = read(ipam_key());
    if (!old_kv) return std::unexpected(old_kv.error());
    json before = nullptr;
    std::int64_t old_rev = 0;
    if (*old_kv) {
      auto old = decode_ipam(**old_kv);
      if (!old) return std::unexpected(old.error());
      if (*old == config) return config;
      before = to_json(*old);
      old_rev = (*old_kv)->mod_revision;
    }
    auto count_kv = read(count_key());
    if (!count_kv) return std::unexpected(count_kv.error());
    auto count = decode_count(*count_kv);
    if (!count) return std::unexpected(count.error());
    if (count->value > 0) {
      return fail(Errc::failed_precondition,
                  fmt::format("IPAM cannot change while machines are registered ({} now): their "
                              "addresses come from it; retire and remove them first",
                              count->value));
    }
    store::Txn txn;
    txn.compares.push_back(
        Compare::mod_revision(count_key(), CompareOp::equal, count->mod_revision));
    txn.compares.push_back(Compare::mod_revision(ipam_key(), CompareOp::equal, old_rev));
    txn.success.push_back(Op::make_put(ipam_key(), to_json(config).dump()));
    add_audit(txn, who, "put_ipam", "", std::move(before), to_json(config));
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return config;
  }
  return std::unexpected(contention("put the IPAM config"));
}

// ---- Machines

Expected<Machine> Inventory::register_machine(const MachineSpec& spec, std::string_view who) {
  if (auto ok = validate(spec); !ok) return std::unexpected(ok.error());
  const auto key = machine_key(spec.serial);
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    auto ipam_kv = read(ipam_key());
    if (!ipam_kv) return std::unexpected(ipam_kv.error());
    if (!*ipam_kv) {
      return fail(Errc::failed_precondition,
                  "IPAM is not configured: put an IPAM config before registering machines");
    }
    auto config = decode_ipam(**ipam_kv);
    if (!config) return std::unexpected(config.error());
    auto ipam = Ipam::make(*config);
    if (!ipam) return std::unexpected(corrupt(ipam_key(), ipam.error()));
    if (auto ok = ipam->check_rack(spec.rack); !ok) return std::unexpected(ok.error());

    auto existing = read(key);
    if (!existing) return std::unexpected(existing.error());
    if (*existing) {
      return fail(Errc::already_exists,
                  fmt::format("machine '{}' is already registered", spec.serial));
    }

    // The rack's claimed indexes.
    const auto rack_prefix = fmt::format("{}index/{:010}/", prefix_, spec.rack);
    auto claims = store_.range({store::KeyRange::prefix(rack_prefix), 0});
    if (!claims) return std::unexpected(claims.error());
    std::map<std::uint32_t, std::string> used;
    for (const auto& kv : claims->kvs) {
      std::uint64_t index = 0;
      if (parse_u64(std::string_view(kv.key).substr(rack_prefix.size()), index)) {
        used.emplace(static_cast<std::uint32_t>(index), kv.value);
      }
    }
    std::uint32_t index = 0;
    if (spec.role == kBootRole) {
      index = ipam->boot_index();
      if (const auto it = used.find(index); it != used.end()) {
        return fail(Errc::already_exists,
                    fmt::format("rack {} already has a boot server: '{}'", spec.rack, it->second));
      }
    } else {
      index = ipam->first_node_index();
      while (index <= ipam->last_node_index() && used.contains(index))
        ++index;
      if (index > ipam->last_node_index()) {
        return fail(Errc::failed_precondition,
                    fmt::format("rack {} is full: indexes {} to {} (max_nodes_in_rack {}) are all "
                                "taken",
                                spec.rack, ipam->first_node_index(), ipam->last_node_index(),
                                config->max_nodes_in_rack));
      }
    }

    auto count_kv = read(count_key());
    if (!count_kv) return std::unexpected(count_kv.error());
    auto count = decode_count(*count_kv);
    if (!count) return std::unexpected(count.error());

    Machine m;
    m.serial = spec.serial;
    m.rack = spec.rack;
    m.index_in_rack = index;
    m.role = spec.role;
    m.labels = spec.labels;
    m.bmc_type = spec.bmc_type;
    m.register_date = to_unix(now());
    m.retire_date = spec.retire_date;
    m.state = MachineState::uninitialized;
    m.state_since = m.register_date;
    auto nics = ipam->node_addresses(spec.rack, index);
    if (!nics) return std::unexpected(nics.error());
    m.ipv4 = std::move(*nics);
    auto bmc = ipam->bmc_address(spec.rack, index);
    if (!bmc) return std::unexpected(bmc.error());
    m.bmc = *bmc;

    const auto claim = index_key(spec.rack, index);
    store::Txn txn;
    txn.compares.push_back(Compare::version(key, CompareOp::equal, 0));
    txn.compares.push_back(Compare::version(claim, CompareOp::equal, 0));
    txn.compares.push_back(
        Compare::mod_revision(ipam_key(), CompareOp::equal, (*ipam_kv)->mod_revision));
    txn.compares.push_back(
        Compare::mod_revision(count_key(), CompareOp::equal, count->mod_revision));
    txn.success.push_back(Op::make_put(key, to_json(m).dump()));
    txn.success.push_back(Op::make_put(claim, spec.serial));
    txn.success.push_back(Op::make_put(count_key(), std::to_string(count->value + 1)));
    add_audit(txn, who, "register", spec.serial, nullptr, to_json(m));
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return m;
  }
  return std::unexpected(contention(fmt::format("register machine '{}'", spec.serial)));
}

Expected<Machine> Inventory::get(std::string_view serial) {
  auto kv = read(machine_key(serial));
  if (!kv) return std::unexpected(kv.error());
  if (!*kv) return fail(Errc::not_found, fmt::format("no machine '{}'", serial));
  return decode_machine(**kv);
}

Expected<std::vector<Machine>> Inventory::query(const MachineFilter& filter) {
  std::vector<Machine> out;
  if (filter.serial) {
    // Serials never contain '/', so an exact read; a bad one simply matches nothing.
    auto kv = read(machine_key(*filter.serial));
    if (!kv) return std::unexpected(kv.error());
    if (*kv) {
      auto m = decode_machine(**kv);
      if (!m) return std::unexpected(m.error());
      if (filter.matches(*m)) out.push_back(std::move(*m));
    }
    return out;
  }
  auto all = store_.range({store::KeyRange::prefix(prefix_ + "machines/"), 0});
  if (!all) return std::unexpected(all.error());
  for (const auto& kv : all->kvs) {
    auto m = decode_machine(kv);
    if (!m) return std::unexpected(m.error());
    if (filter.matches(*m)) out.push_back(std::move(*m));
  }
  return out;
}

std::string Inventory::template_key(std::string_view role) const {
  return prefix_ + "templates/" + std::string(role);
}

namespace {

Expected<BootTemplate> decode_template(const KeyValue& kv) {
  auto j = json_fields::parse(kv.value, "template record");
  if (!j) return std::unexpected(corrupt(kv.key, j.error()));
  auto t = boot_template_from_json(*j);
  if (!t) return std::unexpected(corrupt(kv.key, t.error()));
  t->updated = j->value("updated", std::int64_t{0});
  t->who = j->value("who", std::string());
  return t;
}

}  // namespace

Expected<BootTemplate> Inventory::get_template(std::string_view role) {
  if (!valid_template_name(role)) {
    return fail(Errc::invalid_argument, fmt::format("'{}' is not a role name", role));
  }
  auto kv = read(template_key(role));
  if (!kv) return std::unexpected(kv.error());
  if (!*kv) return fail(Errc::not_found, fmt::format("no boot template for role '{}'", role));
  return decode_template(**kv);
}

Expected<std::vector<BootTemplate>> Inventory::list_templates() {
  auto all = store_.range({store::KeyRange::prefix(prefix_ + "templates/"), 0});
  if (!all) return std::unexpected(all.error());
  std::vector<BootTemplate> out;
  for (const auto& kv : all->kvs) {
    auto t = decode_template(kv);
    if (!t) return std::unexpected(t.error());
    out.push_back(std::move(*t));
  }
  return out;
}

Expected<BootTemplate> Inventory::put_template(BootTemplate tpl, std::string_view who) {
  if (auto ok = validate(tpl); !ok) return std::unexpected(ok.error());
  const auto key = template_key(tpl.role);
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    auto kv = read(key);
    if (!kv) return std::unexpected(kv.error());
    json before = nullptr;
    std::int64_t old_rev = 0;
    if (*kv) {
      auto old = decode_template(**kv);
      if (!old) return std::unexpected(old.error());
      BootTemplate same = tpl;
      same.updated = old->updated;
      same.who = old->who;
      if (same == *old) return old;
      before = to_json(*old);
      old_rev = (*kv)->mod_revision;
    }
    tpl.updated = to_unix(now());
    tpl.who = who;
    store::Txn txn;
    txn.compares.push_back(Compare::mod_revision(key, CompareOp::equal, old_rev));
    txn.success.push_back(Op::make_put(key, to_json(tpl).dump()));
    add_audit(txn, who, "put_template", "", std::move(before), to_json(tpl));
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return tpl;
  }
  return std::unexpected(contention(fmt::format("store the template of role '{}'", tpl.role)));
}

Expected<void> Inventory::remove_template(std::string_view role, std::string_view who) {
  if (!valid_template_name(role)) {
    return fail(Errc::invalid_argument, fmt::format("'{}' is not a role name", role));
  }
  const auto key = template_key(role);
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    auto kv = read(key);
    if (!kv) return std::unexpected(kv.error());
    if (!*kv) return fail(Errc::not_found, fmt::format("no boot template for role '{}'", role));
    auto old = decode_template(**kv);
    json before = old ? to_json(*old) : json(nullptr);
    store::Txn txn;
    txn.compares.push_back(Compare::mod_revision(key, CompareOp::equal, (*kv)->mod_revision));
    txn.success.push_back(Op::make_delete(store::KeyRange::exact(key)));
    add_audit(txn, who, "remove_template", "", std::move(before), nullptr);
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return {};
  }
  return std::unexpected(contention(fmt::format("remove the template of role '{}'", role)));
}

// Read-modify-write of one machine record: `change` gives the next record from the current one
// (or refuses); an unchanged record is not written; a concurrent write retries.
Expected<Machine> Inventory::rewrite(
    std::string_view serial, std::string_view who, std::string_view action, std::string_view what,
    const std::function<Expected<Machine>(const Machine&)>& change) {
  const auto key = machine_key(serial);
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    auto kv = read(key);
    if (!kv) return std::unexpected(kv.error());
    if (!*kv) return fail(Errc::not_found, fmt::format("no machine '{}'", serial));
    auto m = decode_machine(**kv);
    if (!m) return std::unexpected(m.error());
    auto next = change(*m);
    if (!next) return std::unexpected(next.error());
    if (*next == *m) return next;
    store::Txn txn;
    txn.compares.push_back(Compare::mod_revision(key, CompareOp::equal, (*kv)->mod_revision));
    txn.success.push_back(Op::make_put(key, to_json(*next).dump()));
    add_audit(txn, who, action, serial, to_json(*m), to_json(*next));
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return next;
  }
  return std::unexpected(contention(fmt::format("{} machine '{}'", what, serial)));
}

Expected<Machine> Inventory::set_state(std::string_view serial, MachineState state,
                                       std::string_view who) {
  return rewrite(serial, who, "set_state", "set the state of",
                 [&](const Machine& m) -> Expected<Machine> {
                   if (m.state == state) return m;
                   if (auto ok = check_transition(m.state, state); !ok) {
                     return fail(Errc::failed_precondition,
                                 fmt::format("machine '{}': {}", serial, ok.error().message));
                   }
                   Machine next = m;
                   next.state = state;
                   next.state_since = to_unix(now());
                   return next;
                 });
}

Expected<Machine> Inventory::update(std::string_view serial, const MachineUpdate& update,
                                    std::string_view who) {
  return rewrite(serial, who, "update", "update",
                 [&](const Machine& m) { return apply(m, update); });
}

Expected<void> Inventory::remove(std::string_view serial, std::string_view who) {
  const auto key = machine_key(serial);
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    auto kv = read(key);
    if (!kv) return std::unexpected(kv.error());
    if (!*kv) return fail(Errc::not_found, fmt::format("no machine '{}'", serial));
    auto m = decode_machine(**kv);
    if (!m) return std::unexpected(m.error());
    if (m->state != MachineState::retired) {
      return fail(Errc::failed_precondition,
                  fmt::format("machine '{}' is {}: only a retired machine can be removed", serial,
                              to_string(m->state)));
    }
    auto count_kv = read(count_key());
    if (!count_kv) return std::unexpected(count_kv.error());
    auto count = decode_count(*count_kv);
    if (!count) return std::unexpected(count.error());
    store::Txn txn;
    txn.compares.push_back(Compare::mod_revision(key, CompareOp::equal, (*kv)->mod_revision));
    txn.compares.push_back(
        Compare::mod_revision(count_key(), CompareOp::equal, count->mod_revision));
    txn.success.push_back(Op::make_delete(store::KeyRange::exact(key)));
    txn.success.push_back(
        Op::make_delete(store::KeyRange::exact(index_key(m->rack, m->index_in_rack))));
    txn.success.push_back(
        Op::make_put(count_key(), std::to_string(count->value > 0 ? count->value - 1 : 0)));
    add_audit(txn, who, "remove", serial, to_json(*m), nullptr);
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return {};
  }
  return std::unexpected(contention(fmt::format("remove machine '{}'", serial)));
}

// ---- Audit

Expected<std::vector<AuditEntry>> Inventory::audit(const AuditQuery& q) {
  const auto prefix = audit_prefix();
  store::KeyRange range = store::KeyRange::prefix(prefix);
  if (q.since) range.key = prefix + audit_time(seconds_to_us(*q.since));
  if (q.until) range.range_end = prefix + audit_time(seconds_to_us(*q.until));
  if (range.key >= range.range_end) return std::vector<AuditEntry>{};
  const bool filtered = q.serial || q.action;
  const auto store_limit =
      (!filtered && !q.newest_first) ? static_cast<std::int64_t>(q.limit) : std::int64_t{0};
  auto r = store_.range({range, store_limit});
  if (!r) return std::unexpected(r.error());
  std::vector<AuditEntry> out;
  for (const auto& kv : r->kvs) {
    auto j = json_fields::parse(kv.value, "audit record");
    if (!j || !j->is_object()) {
      return std::unexpected(
          corrupt(kv.key, j ? Error{Errc::internal, "not an object"} : j.error()));
    }
    AuditEntry e;
    e.id = kv.key.substr(prefix.size());
    e.revision = kv.create_revision;
    e.time = j->value("time", std::int64_t{0});
    e.who = j->value("who", std::string());
    e.action = j->value("action", std::string());
    e.serial = j->value("serial", std::string());
    e.before = j->value("before", json(nullptr));
    e.after = j->value("after", json(nullptr));
    if (q.serial && e.serial != *q.serial) continue;
    if (q.action && e.action != *q.action) continue;
    out.push_back(std::move(e));
  }
  if (q.newest_first) std::reverse(out.begin(), out.end());
  if (q.limit > 0 && out.size() > q.limit) out.resize(q.limit);
  return out;
}

Expected<std::int64_t> Inventory::prune_audit(std::int64_t before, std::string_view who) {
  // Never past now: the prune's own entry (keyed at now) must stay outside the deleted range.
  const auto cutoff_us = std::min(seconds_to_us(before), to_unix_us(now()));
  for (int attempt = 0; attempt < max_attempts_; ++attempt) {
    store::Txn txn;
    txn.success.push_back(
        Op::make_delete(store::KeyRange{audit_prefix(), audit_prefix() + audit_time(cutoff_us)}));
    add_audit(txn, who, "prune_audit", "", nullptr, json{{"before", before}});
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return r->responses.front().del.deleted;
  }
  return std::unexpected(contention("prune the audit log"));
}

}  // namespace neco::netboot
