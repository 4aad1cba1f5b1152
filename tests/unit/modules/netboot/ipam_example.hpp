// sabakan's documented IPAM example (docs/ipam.md) in neco's key names, shared by the IPAM and
// inventory tests. max_nodes_in_rack is 27, not sabakan's 28: with 28, index 31 of the last
// rack would get its BMC range's broadcast address, which neco refuses.
#pragma once

#include "modules/netboot/ipam.hpp"

namespace neco::netboot::testing {

inline IpamConfig ipam_example() {
  IpamConfig c;
  c.max_nodes_in_rack = 27;
  c.node_ipv4_pool = "10.69.0.0/16";
  c.node_ipv4_offset = "";
  c.node_ipv4_range_size = 6;
  c.node_ipv4_range_mask = 26;
  c.node_ip_per_node = 3;
  c.node_index_offset = 3;
  c.node_gateway_offset = 1;
  c.bmc_ipv4_pool = "10.72.16.0/20";
  c.bmc_ipv4_offset = "0.0.1.0";
  c.bmc_ipv4_range_size = 5;
  c.bmc_ipv4_range_mask = 20;
  c.bmc_ipv4_gateway_offset = 1;
  return c;
}

}  // namespace neco::netboot::testing
