#include "modules/netboot/health_feed.hpp"

#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/cluster/records.hpp"
#include "agent/log/log.hpp"

namespace neco::netboot {

namespace {

using S = MachineState;
namespace keys = cluster::keys;

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// name -> a string field of each JSON record under `prefix`.
Expected<std::map<std::string, std::string>> read_field(store::Store& store,
                                                        std::string_view prefix,
                                                        const char* field) {
  auto r = store.range({store::KeyRange::prefix(std::string(prefix)), 0});
  if (!r) return std::unexpected(r.error());
  std::map<std::string, std::string> out;
  for (const auto& kv : r->kvs) {
    auto j = nlohmann::json::parse(kv.value, nullptr, false);
    std::string value;
    if (j.is_object() && j.contains(field) && j[field].is_string()) {
      value = j[field].get<std::string>();
    }
    out[kv.key.substr(prefix.size())] = std::move(value);
  }
  return out;
}

}  // namespace

std::optional<MachineState> fed_state(MachineState current, std::string_view verdict,
                                      std::string_view health) {
  if (current == S::updating || current == S::retiring || current == S::retired) {
    return std::nullopt;
  }
  S want;
  if (verdict == cluster::kUnreachable) {
    want = S::unreachable;
  } else if (verdict == cluster::kHealthy && health == "healthy") {
    want = S::healthy;
  } else if (verdict == cluster::kHealthy && (health == "degraded" || health == "failed")) {
    want = S::unhealthy;
  } else {
    return std::nullopt;  // joining, starting, or a state this feed does not judge
  }
  if (want == current || !transition_allowed(current, want)) return std::nullopt;
  return want;
}

Expected<FeedResult> feed_machine_states(store::Store& store, Inventory& inventory) {
  auto verdicts = read_field(store, keys::kState, "state");
  if (!verdicts) return std::unexpected(verdicts.error());
  auto health = read_field(store, keys::kStatus, "health");
  if (!health) return std::unexpected(health.error());
  auto machines = inventory.query(MachineFilter{});
  if (!machines) return std::unexpected(machines.error());
  FeedResult result;
  for (const auto& m : *machines) {
    const auto node = lower(m.serial);
    auto v = verdicts->find(node);
    if (v == verdicts->end()) continue;
    ++result.matched;
    auto h = health->find(node);
    auto want = fed_state(m.state, v->second, h == health->end() ? "" : h->second);
    if (!want) continue;
    if (auto ok = inventory.set_state(m.serial, *want, "netboot-health-feed"); ok) {
      ++result.changed;
      log::Logger("netboot").info("machine {}: {} -> {} (node {} is {}, reports {})", m.serial,
                                  to_string(m.state), to_string(*want), node, v->second,
                                  h == health->end() ? "nothing" : h->second);
    } else {
      ++result.failed;
      log::Logger("netboot").warning("machine {}: not moved to {}: {}", m.serial, to_string(*want),
                                     ok.error().message);
    }
  }
  return result;
}

}  // namespace neco::netboot
