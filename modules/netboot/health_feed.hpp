// The leader's feed from cluster membership into the machine lifecycle: a machine whose agent
// stops heartbeating becomes unreachable, one whose agent reports healthy again becomes healthy,
// one whose agent reports a failing module becomes unhealthy. Operator-driven states (updating,
// retiring, retired) are never touched.
//
// A machine's agent is the cluster member named like its serial, compared case-insensitively
// (node names are lower case): give each server's role file `node.name: <serial>`.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "agent/store/store.hpp"
#include "agent/util/error.hpp"
#include "modules/netboot/inventory.hpp"

namespace neco::netboot {

// The state the feed moves a machine to, or nullopt to leave it. `verdict` is the leader's
// membership state of its node ("healthy", "unreachable"), `health` what the node last reported
// of itself ("healthy", "degraded", "failed", ...).
std::optional<MachineState> fed_state(MachineState current, std::string_view verdict,
                                      std::string_view health);

struct FeedResult {
  std::int64_t matched = 0;  // machines with a cluster member
  std::int64_t changed = 0;  // state changes written
  std::int64_t failed = 0;   // changes refused (raced with an operator, or fenced)
};

// One pass: reads the cluster's members, status and verdicts from `store` and every machine of
// `inventory`, and writes the changes through it (the leader's inventory writes fenced). Who in
// the audit log is "netboot-health-feed".
Expected<FeedResult> feed_machine_states(store::Store& store, Inventory& inventory);

}  // namespace neco::netboot
