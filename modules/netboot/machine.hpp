// A machine of the inventory: what an operator registers (MachineSpec), what the inventory keeps
// (Machine: the spec plus index in rack, computed addresses, lifecycle state and dates), the
// lifecycle's transition table (sabakan's), and the filters queries use. Pure: no store.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/util/error.hpp"
#include "modules/netboot/ipam.hpp"

namespace neco::netboot {

enum class MachineState : std::uint8_t {
  uninitialized,  // registered, or back from updating/retired; not yet fit to run work
  healthy,        // can run applications
  unhealthy,      // has a problem to repair
  unreachable,    // cannot be reached (the leader sets it from missed heartbeats)
  updating,       // being updated; becomes uninitialized after its reboot
  retiring,       // to be retired or repaired; applications move away
  retired,        // data gone; the only state a machine may be removed in
};

inline constexpr std::array<MachineState, 7> kAllStates = {
    MachineState::uninitialized, MachineState::healthy,  MachineState::unhealthy,
    MachineState::unreachable,   MachineState::updating, MachineState::retiring,
    MachineState::retired,
};

// Stable lower-case names, as in JSON.
std::string_view to_string(MachineState state) noexcept;
std::optional<MachineState> parse_machine_state(std::string_view name);

// The states `from` may move to, in table order; never contains `from` itself.
std::span<const MachineState> allowed_transitions(MachineState from) noexcept;
bool transition_allowed(MachineState from, MachineState to) noexcept;
// failed_precondition naming both states and listing the allowed targets, unless allowed.
Expected<void> check_transition(MachineState from, MachineState to);

// The role of the rack's boot server: it takes the rack's boot index (node_index_offset).
inline constexpr std::string_view kBootRole = "boot";

// What an operator registers. JSON: {"serial", "rack", "role", "bmc_type", "labels"?,
// "retire_date"?}; retire_date is unix seconds or an RFC 3339 UTC date ("2030-01-31" or
// "2030-01-31T00:00:00Z").
struct MachineSpec {
  std::string serial;  // SMBIOS serial: 1-64 of [A-Za-z0-9._-], starting alphanumeric
  std::uint32_t rack = 0;
  std::string role;  // a label value, non-empty; "boot" takes the boot index
  std::map<std::string, std::string> labels;
  std::string bmc_type;          // e.g. "iDRAC-9", "IPMI-2.0": 1-64 of [A-Za-z0-9._/-]
  std::int64_t retire_date = 0;  // unix seconds, 0 for none

  friend bool operator==(const MachineSpec&, const MachineSpec&) = default;
};

Expected<MachineSpec> machine_spec_from_json(const nlohmann::json& j);
nlohmann::json to_json(const MachineSpec& spec);
// invalid_argument naming the field and the value.
Expected<void> validate(const MachineSpec& spec);

// A machine as the inventory keeps it. The addresses are computed at registration from the
// IPAM config, which cannot change while machines exist, so they stay true.
struct Machine {
  std::string serial;
  std::uint32_t rack = 0;
  std::uint32_t index_in_rack = 0;
  std::string role;
  std::map<std::string, std::string> labels;
  std::string bmc_type;
  std::int64_t register_date = 0;  // unix seconds
  std::int64_t retire_date = 0;    // unix seconds, 0 for none
  MachineState state = MachineState::uninitialized;
  std::int64_t state_since = 0;  // unix seconds of the last state change
  std::vector<Interface> ipv4;   // one per NIC (node_ip_per_node)
  Interface bmc;

  // Whether `ip` is one of its node addresses or its BMC address.
  bool has_address(std::uint32_t ip) const;
  friend bool operator==(const Machine&, const Machine&) = default;
};

// {"serial", "rack", "index_in_rack", "role", "labels", "bmc_type", "register_date",
//  "retire_date", "state", "state_since", "ipv4": [interface...], "bmc": interface}
nlohmann::json to_json(const Machine& machine);
Expected<Machine> machine_from_json(const nlohmann::json& j);

// A change to a machine's operator-owned fields. JSON: {"labels": {"k": "v", "gone": null},
// "retire_date": N | "date"}; a null label value removes the label (removing an absent label
// is not an error), like a JSON merge patch.
struct MachineUpdate {
  std::map<std::string, std::optional<std::string>> labels;
  std::optional<std::int64_t> retire_date;
};
Expected<MachineUpdate> machine_update_from_json(const nlohmann::json& j);
// Applies the update to a copy of `machine`; invalid_argument for a bad label or date.
Expected<Machine> apply(const Machine& machine, const MachineUpdate& update);

// Which machines a query returns: every set field must match (labels: each one).
struct MachineFilter {
  std::optional<std::string> serial;
  std::optional<std::uint32_t> rack;
  std::optional<std::string> role;
  std::optional<MachineState> state;
  std::map<std::string, std::string> labels;
  std::optional<std::uint32_t> address;  // a node NIC or BMC address

  bool matches(const Machine& machine) const;
};
// From URL query parameters: serial, rack, role, state, address (dotted), labels
// ("k=v,k2=v2"); unknown parameters are errors.
Expected<MachineFilter> machine_filter_from_params(
    const std::map<std::string, std::string>& params);

// Unix seconds from JSON: an integer >= 0, or an RFC 3339 UTC date "YYYY-MM-DD" or
// "YYYY-MM-DDTHH:MM:SSZ". `what` names the field in errors.
Expected<std::int64_t> date_from_json(const nlohmann::json& j, std::string_view what);

}  // namespace neco::netboot
