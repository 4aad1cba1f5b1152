#include "modules/netboot/ipam.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "modules/netboot/json_fields.hpp"

namespace neco::netboot {
namespace {

using nlohmann::json;

struct Cidr {
  std::uint32_t base = 0;
  std::uint32_t prefix_len = 0;
  std::uint64_t size() const { return std::uint64_t{1} << (32 - prefix_len); }
  std::uint64_t end() const { return std::uint64_t{base} + size(); }  // one past the last
};

std::optional<Cidr> parse_cidr(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const auto ip = parse_ipv4_u32(text.substr(0, slash));
  const auto len_text = text.substr(slash + 1);
  std::uint32_t len = 0;
  const auto* end = len_text.data() + len_text.size();
  const auto [ptr, ec] = std::from_chars(len_text.data(), end, len);
  if (!ip || len_text.empty() || len_text.size() > 2 || ec != std::errc() || ptr != end ||
      len > 32) {
    return std::nullopt;
  }
  return Cidr{*ip, len};
}

Error bad(std::string message) {
  return Error{Errc::invalid_argument, std::move(message)};
}

// What one pool (node or BMC) contributes once validated.
struct Pool {
  std::uint32_t base = 0;  // pool + offset
  std::uint64_t end = 0;   // one past the pool's last address
  Cidr cidr;
};

// The checks node and BMC pools share. `p` is the key prefix ("node_ipv4" / "bmc_ipv4").
Expected<Pool> check_pool(std::string_view p, const std::string& pool_text,
                          const std::string& offset_text, std::uint32_t range_size,
                          std::uint32_t range_mask) {
  const auto cidr = parse_cidr(pool_text);
  if (!cidr) {
    return std::unexpected(
        bad(fmt::format("{}_pool: '{}' is not an IPv4 network like 10.69.0.0/16", p, pool_text)));
  }
  if ((cidr->base & ~prefix_mask(cidr->prefix_len)) != 0) {
    return std::unexpected(bad(
        fmt::format("{}_pool: '{}' has host bits set (the network is {}/{})", p, pool_text,
                    format_ipv4(cidr->base & prefix_mask(cidr->prefix_len)), cidr->prefix_len)));
  }
  std::uint32_t offset = 0;
  if (!offset_text.empty()) {
    const auto o = parse_ipv4_u32(offset_text);
    if (!o) {
      return std::unexpected(bad(fmt::format(
          "{}_offset: '{}' is not a dotted-quad IPv4 address like 0.0.1.0", p, offset_text)));
    }
    offset = *o;
  }
  if (range_size < 2 || range_size > 30) {
    return std::unexpected(bad(fmt::format(
        "{}_range_size: {} is out of bounds: a range holds 2^size addresses, size 2 to 30", p,
        range_size)));
  }
  const std::uint64_t range = std::uint64_t{1} << range_size;
  if (range > cidr->size()) {
    return std::unexpected(bad(
        fmt::format("{}_pool: {} has {} address(es), fewer than one range of 2^{}_range_size = {}",
                    p, pool_text, cidr->size(), p, range)));
  }
  if (offset >= cidr->size()) {
    return std::unexpected(
        bad(fmt::format("{}_offset: {} is beyond the end of {}_pool {} ({} addresses)", p,
                        format_ipv4(offset), p, pool_text, cidr->size())));
  }
  if (offset % range != 0) {
    return std::unexpected(
        bad(fmt::format("{}_offset: {} must be a multiple of the range size 2^{} = {}, so that "
                        "ranges align with their subnets",
                        p, format_ipv4(offset), range_size, range)));
  }
  if (range_mask > 32 - range_size) {
    return std::unexpected(bad(fmt::format(
        "{}_range_mask: /{} is smaller than one range of 2^{} addresses (use /{} or shorter)", p,
        range_mask, range_size, 32 - range_size)));
  }
  if (range_mask < cidr->prefix_len) {
    return std::unexpected(bad(
        fmt::format("{}_range_mask: /{} is larger than {}_pool {}", p, range_mask, p, pool_text)));
  }
  return Pool{cidr->base + offset, cidr->end(), *cidr};
}

IpamSubnet subnet_of(std::uint32_t ip, std::uint32_t prefix_len, std::uint32_t gateway_offset) {
  const auto network = ip & prefix_mask(prefix_len);
  return IpamSubnet{network, prefix_len, network + gateway_offset};
}

}  // namespace

std::string format_ipv4(std::uint32_t ip) {
  return fmt::format("{}.{}.{}.{}", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
}

std::optional<std::uint32_t> parse_ipv4_u32(std::string_view text) {
  std::uint32_t ip = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (text.empty() || text.front() != '.') return std::nullopt;
      text.remove_prefix(1);
    }
    const auto digits = std::min(text.find_first_not_of("0123456789"), text.size());
    if (digits == 0 || digits > 3 || (digits > 1 && text.front() == '0')) return std::nullopt;
    std::uint32_t value = 0;
    std::from_chars(text.data(), text.data() + digits, value);
    if (value > 255) return std::nullopt;
    ip = (ip << 8) | value;
    text.remove_prefix(digits);
  }
  if (!text.empty()) return std::nullopt;
  return ip;
}

std::uint32_t ipv4_from_bytes(const std::array<std::uint8_t, 4>& bytes) {
  return (std::uint32_t{bytes[0]} << 24) | (std::uint32_t{bytes[1]} << 16) |
         (std::uint32_t{bytes[2]} << 8) | std::uint32_t{bytes[3]};
}

std::array<std::uint8_t, 4> ipv4_to_bytes(std::uint32_t ip) {
  return {static_cast<std::uint8_t>(ip >> 24), static_cast<std::uint8_t>(ip >> 16),
          static_cast<std::uint8_t>(ip >> 8), static_cast<std::uint8_t>(ip)};
}

std::uint32_t prefix_mask(std::uint32_t prefix_len) {
  if (prefix_len == 0) return 0;
  if (prefix_len >= 32) return 0xffffffffU;
  return ~((std::uint32_t{1} << (32 - prefix_len)) - 1);
}

// ---- JSON

namespace {
constexpr std::string_view kIpam = "ipam";
}

Expected<IpamConfig> ipam_config_from_json(const json& j) {
  using namespace json_fields;
  if (auto ok = check_object(
          j, kIpam,
          {"max_nodes_in_rack", "node_ipv4_pool", "node_ipv4_offset", "node_ipv4_range_size",
           "node_ipv4_range_mask", "node_ip_per_node", "node_index_offset", "node_gateway_offset",
           "bmc_ipv4_pool", "bmc_ipv4_offset", "bmc_ipv4_range_size", "bmc_ipv4_range_mask",
           "bmc_ipv4_gateway_offset"});
      !ok) {
    return std::unexpected(ok.error());
  }
  IpamConfig c;
  Error error;
  bool failed = false;
  const auto u32 = [&](std::string_view key, std::uint32_t& out) {
    if (failed) return;
    auto v = require_u32(j, kIpam, key);
    if (!v) {
      error = v.error();
      failed = true;
      return;
    }
    out = *v;
  };
  const auto str = [&](std::string_view key, std::string& out, bool required) {
    if (failed) return;
    auto v = get_string(j, kIpam, key);
    if (!v || (!*v && required)) {
      error = v ? Error{Errc::invalid_argument, fmt::format("{}: '{}' is required", kIpam, key)}
                : v.error();
      failed = true;
      return;
    }
    if (*v) out = std::move(**v);
  };
  u32("max_nodes_in_rack", c.max_nodes_in_rack);
  str("node_ipv4_pool", c.node_ipv4_pool, true);
  str("node_ipv4_offset", c.node_ipv4_offset, false);
  u32("node_ipv4_range_size", c.node_ipv4_range_size);
  u32("node_ipv4_range_mask", c.node_ipv4_range_mask);
  u32("node_ip_per_node", c.node_ip_per_node);
  u32("node_index_offset", c.node_index_offset);
  u32("node_gateway_offset", c.node_gateway_offset);
  str("bmc_ipv4_pool", c.bmc_ipv4_pool, true);
  str("bmc_ipv4_offset", c.bmc_ipv4_offset, false);
  u32("bmc_ipv4_range_size", c.bmc_ipv4_range_size);
  u32("bmc_ipv4_range_mask", c.bmc_ipv4_range_mask);
  u32("bmc_ipv4_gateway_offset", c.bmc_ipv4_gateway_offset);
  if (failed) return std::unexpected(error);
  return c;
}

json to_json(const IpamConfig& c) {
  return json{{"max_nodes_in_rack", c.max_nodes_in_rack},
              {"node_ipv4_pool", c.node_ipv4_pool},
              {"node_ipv4_offset", c.node_ipv4_offset},
              {"node_ipv4_range_size", c.node_ipv4_range_size},
              {"node_ipv4_range_mask", c.node_ipv4_range_mask},
              {"node_ip_per_node", c.node_ip_per_node},
              {"node_index_offset", c.node_index_offset},
              {"node_gateway_offset", c.node_gateway_offset},
              {"bmc_ipv4_pool", c.bmc_ipv4_pool},
              {"bmc_ipv4_offset", c.bmc_ipv4_offset},
              {"bmc_ipv4_range_size", c.bmc_ipv4_range_size},
              {"bmc_ipv4_range_mask", c.bmc_ipv4_range_mask},
              {"bmc_ipv4_gateway_offset", c.bmc_ipv4_gateway_offset}};
}

json to_json(const Interface& nic) {
  return json{{"address", format_ipv4(nic.address)},
              {"netmask", format_ipv4(nic.netmask())},
              {"mask_bits", nic.prefix_len},
              {"gateway", format_ipv4(nic.gateway)}};
}

Expected<Interface> interface_from_json(const json& j) {
  using namespace json_fields;
  constexpr std::string_view what = "interface";
  if (auto ok = check_object(j, what, {"address", "netmask", "mask_bits", "gateway"}); !ok) {
    return std::unexpected(ok.error());
  }
  auto address = require_string(j, what, "address");
  if (!address) return std::unexpected(address.error());
  auto gateway = require_string(j, what, "gateway");
  if (!gateway) return std::unexpected(gateway.error());
  auto bits = require_u32(j, what, "mask_bits");
  if (!bits) return std::unexpected(bits.error());
  const auto a = parse_ipv4_u32(*address);
  const auto g = parse_ipv4_u32(*gateway);
  if (!a || !g || *bits > 32) {
    return fail(Errc::invalid_argument, "interface: bad address, gateway or mask_bits");
  }
  return Interface{*a, *bits, *g};
}

json to_json(const IpamSubnet& s) {
  return json{{"network", format_ipv4(s.network)},
              {"netmask", format_ipv4(s.netmask())},
              {"mask_bits", s.prefix_len},
              {"gateway", format_ipv4(s.gateway)}};
}

json to_json(const LeaseRange& r) {
  return json{{"first", format_ipv4(r.first)},
              {"last", r.count == 0 ? std::string() : format_ipv4(r.last())},
              {"count", r.count}};
}

json to_json(const RackLocation& l) {
  json j{{"rack", l.rack},
         {"nic", l.nic},
         {"subnet", to_json(l.subnet)},
         {"leases", to_json(l.leases)}};
  j["index"] = l.index ? json(*l.index) : json(nullptr);
  return j;
}

// ---- Validation and arithmetic

Expected<Ipam> Ipam::make(const IpamConfig& c) {
  if (c.max_nodes_in_rack == 0) {
    return std::unexpected(bad("max_nodes_in_rack: must be at least 1"));
  }
  auto node = check_pool("node_ipv4", c.node_ipv4_pool, c.node_ipv4_offset, c.node_ipv4_range_size,
                         c.node_ipv4_range_mask);
  if (!node) return std::unexpected(node.error());
  if (c.node_ip_per_node == 0) {
    return std::unexpected(bad("node_ip_per_node: must be at least 1"));
  }
  if (c.node_index_offset == 0) {
    return std::unexpected(
        bad("node_index_offset: must be at least 1 (index 0 would be the range's first address)"));
  }
  // A node range: [0, gateway], boot server and nodes [index_offset, index_offset + max],
  // at least one lease address, and its last address (the broadcast address when the range is
  // its own subnet) unused.
  const std::uint64_t node_range = std::uint64_t{1} << c.node_ipv4_range_size;
  const std::uint64_t last_index = std::uint64_t{c.node_index_offset} + c.max_nodes_in_rack;
  if (last_index + 2 >= node_range) {
    return std::unexpected(bad(fmt::format(
        "node_index_offset + max_nodes_in_rack: {} + {} = {} leaves no DHCP lease address in a "
        "node range of 2^{} = {} addresses (the largest allowed is {})",
        c.node_index_offset, c.max_nodes_in_rack, last_index, c.node_ipv4_range_size, node_range,
        node_range - 3)));
  }
  if (c.node_gateway_offset == 0 || c.node_gateway_offset >= c.node_index_offset) {
    return std::unexpected(bad(fmt::format(
        "node_gateway_offset: {} must be from 1 to node_index_offset - 1 = {}, below every node "
        "address",
        c.node_gateway_offset, c.node_index_offset - 1)));
  }
  const std::uint64_t node_block = node_range * c.node_ip_per_node;
  const std::uint64_t node_racks = (node->end - node->base) / node_block;
  if (node_racks == 0) {
    return std::unexpected(bad(fmt::format(
        "node_ipv4_pool: {} holds no rack after node_ipv4_offset: a rack takes node_ip_per_node "
        "x 2^node_ipv4_range_size = {} addresses",
        c.node_ipv4_pool, node_block)));
  }

  auto bmc = check_pool("bmc_ipv4", c.bmc_ipv4_pool, c.bmc_ipv4_offset, c.bmc_ipv4_range_size,
                        c.bmc_ipv4_range_mask);
  if (!bmc) return std::unexpected(bmc.error());
  const std::uint64_t bmc_range = std::uint64_t{1} << c.bmc_ipv4_range_size;
  // BMC addresses use the same index, and never the range's last address either: for the last
  // range of a subnet that is the broadcast address.
  if (last_index + 1 >= bmc_range) {
    return std::unexpected(bad(
        fmt::format("bmc_ipv4_range_size: a BMC range of 2^{} = {} addresses cannot hold index {} "
                    "(node_index_offset + max_nodes_in_rack) below its last address",
                    c.bmc_ipv4_range_size, bmc_range, last_index)));
  }
  if (c.bmc_ipv4_gateway_offset == 0 || c.bmc_ipv4_gateway_offset >= c.node_index_offset) {
    return std::unexpected(bad(fmt::format(
        "bmc_ipv4_gateway_offset: {} must be from 1 to node_index_offset - 1 = {}, below every "
        "BMC address",
        c.bmc_ipv4_gateway_offset, c.node_index_offset - 1)));
  }
  const std::uint64_t bmc_racks = (bmc->end - bmc->base) / bmc_range;
  if (bmc_racks == 0) {
    return std::unexpected(
        bad(fmt::format("bmc_ipv4_pool: {} holds no rack after bmc_ipv4_offset: a rack takes "
                        "2^bmc_ipv4_range_size = {} addresses",
                        c.bmc_ipv4_pool, bmc_range)));
  }
  if (node->cidr.base < bmc->end && bmc->cidr.base < node->end) {
    return std::unexpected(bad(fmt::format("bmc_ipv4_pool: {} overlaps node_ipv4_pool {}",
                                           c.bmc_ipv4_pool, c.node_ipv4_pool)));
  }

  Ipam ipam(c);
  ipam.node_base_ = node->base;
  ipam.bmc_base_ = bmc->base;
  ipam.max_racks_ = static_cast<std::uint32_t>(std::min(node_racks, bmc_racks));
  return ipam;
}

Expected<void> Ipam::check_rack(std::uint32_t rack) const {
  if (rack >= max_racks_) {
    return fail(Errc::invalid_argument,
                fmt::format("rack {} is beyond the IPAM pools: they hold racks 0 to {}", rack,
                            max_racks_ - 1));
  }
  return {};
}

Expected<void> Ipam::check_index(std::uint32_t index) const {
  if (index < boot_index() || index > last_node_index()) {
    return fail(Errc::invalid_argument, fmt::format("index in rack {} is outside {} to {}", index,
                                                    boot_index(), last_node_index()));
  }
  return {};
}

Expected<std::vector<IpamSubnet>> Ipam::node_subnets(std::uint32_t rack) const {
  if (auto ok = check_rack(rack); !ok) return std::unexpected(ok.error());
  const std::uint64_t range = std::uint64_t{1} << config_.node_ipv4_range_size;
  const std::uint64_t block = node_base_ + range * config_.node_ip_per_node * rack;
  std::vector<IpamSubnet> out;
  for (std::uint32_t nic = 0; nic < config_.node_ip_per_node; ++nic) {
    out.push_back(subnet_of(static_cast<std::uint32_t>(block + nic * range),
                            config_.node_ipv4_range_mask, config_.node_gateway_offset));
  }
  return out;
}

Expected<IpamSubnet> Ipam::bmc_subnet(std::uint32_t rack) const {
  if (auto ok = check_rack(rack); !ok) return std::unexpected(ok.error());
  const std::uint64_t range = std::uint64_t{1} << config_.bmc_ipv4_range_size;
  return subnet_of(static_cast<std::uint32_t>(bmc_base_ + range * rack),
                   config_.bmc_ipv4_range_mask, config_.bmc_ipv4_gateway_offset);
}

Expected<std::vector<Interface>> Ipam::node_addresses(std::uint32_t rack,
                                                      std::uint32_t index) const {
  if (auto ok = check_index(index); !ok) return std::unexpected(ok.error());
  auto subnets = node_subnets(rack);
  if (!subnets) return std::unexpected(subnets.error());
  const std::uint64_t range = std::uint64_t{1} << config_.node_ipv4_range_size;
  const std::uint64_t block = node_base_ + range * config_.node_ip_per_node * rack;
  std::vector<Interface> out;
  for (std::uint32_t nic = 0; nic < config_.node_ip_per_node; ++nic) {
    const auto& s = (*subnets)[nic];
    out.push_back(Interface{static_cast<std::uint32_t>(block + nic * range + index), s.prefix_len,
                            s.gateway});
  }
  return out;
}

Expected<Interface> Ipam::bmc_address(std::uint32_t rack, std::uint32_t index) const {
  if (auto ok = check_index(index); !ok) return std::unexpected(ok.error());
  auto subnet = bmc_subnet(rack);
  if (!subnet) return std::unexpected(subnet.error());
  const std::uint64_t range = std::uint64_t{1} << config_.bmc_ipv4_range_size;
  return Interface{static_cast<std::uint32_t>(bmc_base_ + range * rack + index), subnet->prefix_len,
                   subnet->gateway};
}

Expected<LeaseRange> Ipam::lease_range(std::uint32_t rack, std::uint32_t nic) const {
  if (auto ok = check_rack(rack); !ok) return std::unexpected(ok.error());
  if (nic >= config_.node_ip_per_node) {
    return fail(Errc::invalid_argument,
                fmt::format("nic {} is outside 0 to {}", nic, config_.node_ip_per_node - 1));
  }
  const std::uint64_t range = std::uint64_t{1} << config_.node_ipv4_range_size;
  const std::uint64_t start =
      node_base_ + range * (std::uint64_t{config_.node_ip_per_node} * rack + nic);
  // From just above the last node index up to, not including, the range's last address.
  const std::uint64_t first = last_node_index() + 1;
  return LeaseRange{static_cast<std::uint32_t>(start + first),
                    static_cast<std::uint32_t>(range - 1 - first)};
}

Expected<RackLocation> Ipam::locate(std::uint32_t ip) const {
  const std::uint64_t range = std::uint64_t{1} << config_.node_ipv4_range_size;
  const std::uint64_t block = range * config_.node_ip_per_node;
  const std::uint64_t end = node_base_ + block * max_racks_;
  if (ip < node_base_ || ip >= end) {
    return fail(Errc::not_found, fmt::format("{} is in no rack's node range ({} to {})",
                                             format_ipv4(ip), format_ipv4(node_base_),
                                             format_ipv4(static_cast<std::uint32_t>(end - 1))));
  }
  const std::uint64_t d = ip - node_base_;
  RackLocation loc;
  loc.rack = static_cast<std::uint32_t>(d / block);
  loc.nic = static_cast<std::uint32_t>((d % block) / range);
  loc.subnet = subnet_of(ip, config_.node_ipv4_range_mask, config_.node_gateway_offset);
  loc.leases = *lease_range(loc.rack, loc.nic);
  const auto host = static_cast<std::uint32_t>(d % range);
  if (host >= boot_index() && host <= last_node_index()) loc.index = host;
  return loc;
}

}  // namespace neco::netboot
