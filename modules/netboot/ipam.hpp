// IP address management for netboot: a small config, validated strictly, from which every static
// address (node NICs, BMC) and every rack's DHCP lease range is computed — no allocation table,
// so any controller computes the same answer. The semantics follow sabakan's IPAM (per-rack
// ranges carved from a pool, index in rack as the host part); netboot.md has the formulas.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agent/util/error.hpp"

namespace neco::netboot {

// IPv4 addresses are host-order integers here (arithmetic is the point); these convert.
std::string format_ipv4(std::uint32_t ip);
// Dotted quad, exactly four decimal parts 0..255 without leading zeros ("010" is refused).
// (Not parse_ipv4: the DHCP engine's parse_ipv4 returns bytes, and both link into one binary.)
std::optional<std::uint32_t> parse_ipv4_u32(std::string_view text);
// The DHCP codec's byte order (network order, as on the wire).
std::uint32_t ipv4_from_bytes(const std::array<std::uint8_t, 4>& bytes);
std::array<std::uint8_t, 4> ipv4_to_bytes(std::uint32_t ip);
// The netmask of a prefix length 0..32 (0 → 0.0.0.0, 32 → 255.255.255.255).
std::uint32_t prefix_mask(std::uint32_t prefix_len);

// The IPAM settings, as stored and as the admin API takes them (JSON keys are these names).
// "Range" is one block of 2^range_size addresses; each rack gets node_ip_per_node consecutive
// node ranges (one per NIC) and one BMC range, in rack order from pool + offset.
struct IpamConfig {
  std::uint32_t max_nodes_in_rack = 0;        // nodes per rack besides the boot server
  std::string node_ipv4_pool;                 // CIDR of the node pool, host bits clear
  std::string node_ipv4_offset;               // dotted quad added to the pool base; "" = 0.0.0.0
  std::uint32_t node_ipv4_range_size = 0;     // bits: a node range holds 2^size addresses
  std::uint32_t node_ipv4_range_mask = 0;     // prefix length of the subnet a node range is in
  std::uint32_t node_ip_per_node = 0;         // NICs (addresses) per node, one range each
  std::uint32_t node_index_offset = 0;        // index of the boot server; others follow it
  std::uint32_t node_gateway_offset = 0;      // gateway = subnet network + this
  std::string bmc_ipv4_pool;                  // CIDR of the BMC pool, host bits clear
  std::string bmc_ipv4_offset;                // dotted quad added to the BMC pool base; "" = 0
  std::uint32_t bmc_ipv4_range_size = 0;      // bits: a BMC range holds 2^size addresses
  std::uint32_t bmc_ipv4_range_mask = 0;      // prefix length of the subnet a BMC range is in
  std::uint32_t bmc_ipv4_gateway_offset = 0;  // BMC gateway = BMC subnet network + this

  friend bool operator==(const IpamConfig&, const IpamConfig&) = default;
};

// Strict: every key required except the two offsets, no unknown keys, integers only. Errors
// name the key (invalid_argument). Does not validate the values: see Ipam::make.
Expected<IpamConfig> ipam_config_from_json(const nlohmann::json& j);
nlohmann::json to_json(const IpamConfig& config);

// An address with its subnet, as a NIC is configured.
struct Interface {
  std::uint32_t address = 0;
  std::uint32_t prefix_len = 0;
  std::uint32_t gateway = 0;

  std::uint32_t netmask() const { return prefix_mask(prefix_len); }
  std::uint32_t network() const { return address & netmask(); }
  friend bool operator==(const Interface&, const Interface&) = default;
};
// {"address", "netmask", "mask_bits", "gateway"}, addresses dotted.
nlohmann::json to_json(const Interface& nic);
Expected<Interface> interface_from_json(const nlohmann::json& j);

// A subnet with its gateway. (IpamSubnet, not Subnet: the DHCP engine has a Subnet of its own
// in this namespace, and two classes of one name in one binary break the ODR.)
struct IpamSubnet {
  std::uint32_t network = 0;
  std::uint32_t prefix_len = 0;
  std::uint32_t gateway = 0;

  std::uint32_t netmask() const { return prefix_mask(prefix_len); }
  friend bool operator==(const IpamSubnet&, const IpamSubnet&) = default;
};
nlohmann::json to_json(const IpamSubnet& subnet);

// Addresses a DHCP server may lease dynamically: [first, first + count).
struct LeaseRange {
  std::uint32_t first = 0;
  std::uint32_t count = 0;

  std::uint32_t last() const { return first + count - 1; }
  bool contains(std::uint32_t ip) const { return ip >= first && ip - first < count; }
  friend bool operator==(const LeaseRange&, const LeaseRange&) = default;
};
nlohmann::json to_json(const LeaseRange& range);

// Where an address of the node pool lies: which rack, which of the rack's node ranges (NIC),
// that range's subnet and its lease range, and the index it is the static address of, if any.
struct RackLocation {
  std::uint32_t rack = 0;
  std::uint32_t nic = 0;  // 0 .. node_ip_per_node - 1
  IpamSubnet subnet;
  LeaseRange leases;
  std::optional<std::uint32_t> index;  // set when the address is an index's static address

  friend bool operator==(const RackLocation&, const RackLocation&) = default;
};
nlohmann::json to_json(const RackLocation& location);

// A validated IPAM config and its arithmetic. Cheap to copy; pure.
class Ipam {
 public:
  // Validates every field and their combination; invalid_argument naming the field otherwise.
  static Expected<Ipam> make(const IpamConfig& config);

  const IpamConfig& config() const { return config_; }

  // Racks both pools hold: racks 0 .. max_racks() - 1 have addresses.
  std::uint32_t max_racks() const { return max_racks_; }
  // Index in rack of the boot server (role "boot") and the range of the others.
  std::uint32_t boot_index() const { return config_.node_index_offset; }
  std::uint32_t first_node_index() const { return config_.node_index_offset + 1; }
  std::uint32_t last_node_index() const {
    return config_.node_index_offset + config_.max_nodes_in_rack;
  }

  // invalid_argument unless rack < max_racks() (the message gives the limit).
  Expected<void> check_rack(std::uint32_t rack) const;
  // invalid_argument unless boot_index() <= index <= last_node_index().
  Expected<void> check_index(std::uint32_t index) const;

  // The rack's node subnets, one per NIC (node_ip_per_node of them).
  Expected<std::vector<IpamSubnet>> node_subnets(std::uint32_t rack) const;
  // The rack's BMC subnet.
  Expected<IpamSubnet> bmc_subnet(std::uint32_t rack) const;
  // Static addresses of (rack, index): one per NIC, and the BMC's.
  Expected<std::vector<Interface>> node_addresses(std::uint32_t rack, std::uint32_t index) const;
  Expected<Interface> bmc_address(std::uint32_t rack, std::uint32_t index) const;
  // The dynamic lease range of a rack's node range `nic`.
  Expected<LeaseRange> lease_range(std::uint32_t rack, std::uint32_t nic = 0) const;

  // Maps an address (e.g. a relay's giaddr or the receiving interface's address) to the node
  // range holding it; not_found outside every rack's node ranges.
  Expected<RackLocation> locate(std::uint32_t ip) const;

 private:
  explicit Ipam(IpamConfig config) : config_(std::move(config)) {}

  IpamConfig config_;
  std::uint32_t node_base_ = 0;  // node pool + node offset
  std::uint32_t bmc_base_ = 0;   // BMC pool + BMC offset
  std::uint32_t max_racks_ = 0;
};

}  // namespace neco::netboot
