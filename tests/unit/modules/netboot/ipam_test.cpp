#include "modules/netboot/ipam.hpp"

#include <catch2/catch.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/unit/modules/netboot/ipam_example.hpp"

using namespace neco;
using namespace neco::netboot;
using nlohmann::json;

namespace {

// sabakan's documented example (docs/ipam.md), in neco's key names. Expected addresses below
// are worked out by hand from the formulas in netboot.md.
IpamConfig example() {
  return neco::netboot::testing::ipam_example();
}

Ipam make(const IpamConfig& c) {
  auto ipam = Ipam::make(c);
  if (!ipam) FAIL("Ipam::make: " << ipam.error().message);
  return *ipam;
}

std::uint32_t ip(const char* text) {
  auto v = parse_ipv4_u32(text);
  if (!v) FAIL("bad test address " << text);
  return *v;
}

std::vector<std::string> addresses(const std::vector<Interface>& nics) {
  std::vector<std::string> out;
  out.reserve(nics.size());
  for (const auto& n : nics)
    out.push_back(format_ipv4(n.address));
  return out;
}

}  // namespace

TEST_CASE("IPv4 text and bytes", "[netboot][ipam]") {
  CHECK(parse_ipv4_u32("0.0.0.0") == 0U);
  CHECK(parse_ipv4_u32("255.255.255.255") == 0xffffffffU);
  CHECK(parse_ipv4_u32("10.69.0.197") == 0x0a4500c5U);
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01.2.3.4", "1.2.3.4 ", " 1.2.3.4",
                          "1..2.3", "a.b.c.d", "1.2.3.-4", "1.2.3.4/24", "1234.1.1.1"}) {
    INFO(bad);
    CHECK_FALSE(parse_ipv4_u32(bad));
  }
  CHECK(format_ipv4(0xffffffffU) == "255.255.255.255");
  CHECK(format_ipv4(0) == "0.0.0.0");
  CHECK(ipv4_from_bytes({10, 69, 0, 197}) == 0x0a4500c5U);
  CHECK(ipv4_to_bytes(0x0a4500c5U) == std::array<std::uint8_t, 4>{10, 69, 0, 197});
  CHECK(prefix_mask(0) == 0U);
  CHECK(prefix_mask(1) == 0x80000000U);
  CHECK(prefix_mask(26) == 0xffffffc0U);
  CHECK(prefix_mask(32) == 0xffffffffU);
}

TEST_CASE("IPAM computes sabakan's documented example", "[netboot][ipam]") {
  const auto ipam = make(example());
  // Node pool: 65536 / (64 × 3) = 341 racks; BMC pool: (4096 − 256) / 32 = 120 racks.
  CHECK(ipam.max_racks() == 120);
  CHECK(ipam.boot_index() == 3);
  CHECK(ipam.first_node_index() == 4);
  CHECK(ipam.last_node_index() == 30);

  auto r0 = ipam.node_addresses(0, 4);
  REQUIRE(r0);
  CHECK(addresses(*r0) == std::vector<std::string>{"10.69.0.4", "10.69.0.68", "10.69.0.132"});
  CHECK(format_ipv4((*r0)[0].gateway) == "10.69.0.1");
  CHECK(format_ipv4((*r0)[1].gateway) == "10.69.0.65");
  CHECK(format_ipv4((*r0)[2].gateway) == "10.69.0.129");
  CHECK(format_ipv4((*r0)[0].netmask()) == "255.255.255.192");
  CHECK((*r0)[0].prefix_len == 26);
  auto b0 = ipam.bmc_address(0, 4);
  REQUIRE(b0);
  CHECK(format_ipv4(b0->address) == "10.72.17.4");
  CHECK(format_ipv4(b0->gateway) == "10.72.16.1");
  CHECK(format_ipv4(b0->netmask()) == "255.255.240.0");

  auto r1 = ipam.node_addresses(1, 5);
  REQUIRE(r1);
  CHECK(addresses(*r1) == std::vector<std::string>{"10.69.0.197", "10.69.1.5", "10.69.1.69"});
  CHECK(format_ipv4((*r1)[0].gateway) == "10.69.0.193");
  CHECK(format_ipv4((*r1)[1].gateway) == "10.69.1.1");
  CHECK(format_ipv4((*r1)[2].gateway) == "10.69.1.65");
  CHECK(format_ipv4(ipam.bmc_address(1, 5)->address) == "10.72.17.37");

  // The boot server takes the boot index.
  CHECK(format_ipv4(ipam.node_addresses(0, 3)->front().address) == "10.69.0.3");

  // The last rack: 192 × 119 = 22848 = 89 × 256 + 64; BMC 256 + 32 × 119 = 4064 = 15 × 256 + 224.
  auto last = ipam.node_addresses(119, 30);
  REQUIRE(last);
  CHECK(addresses(*last) ==
        std::vector<std::string>{"10.69.89.94", "10.69.89.158", "10.69.89.222"});
  CHECK(format_ipv4(ipam.bmc_address(119, 30)->address) == "10.72.31.254");
  CHECK(format_ipv4(ipam.bmc_address(119, 30)->gateway) == "10.72.16.1");

  // Rack 120 has no BMC range left, index 2 and 31 are outside the rack's indexes.
  auto beyond = ipam.node_addresses(120, 4);
  REQUIRE_FALSE(beyond);
  CHECK(beyond.error().code == Errc::invalid_argument);
  CHECK_THAT(beyond.error().message, Catch::Contains("racks 0 to 119"));
  CHECK_FALSE(ipam.bmc_address(120, 4));
  CHECK(ipam.node_addresses(0, 2).error().code == Errc::invalid_argument);
  CHECK(ipam.node_addresses(0, 31).error().code == Errc::invalid_argument);
  CHECK_FALSE(ipam.bmc_address(0, 31));
}

TEST_CASE("IPAM subnets, lease ranges and locating an address", "[netboot][ipam]") {
  const auto ipam = make(example());
  auto subnets = ipam.node_subnets(1);
  REQUIRE(subnets);
  REQUIRE(subnets->size() == 3);
  CHECK((*subnets)[0] == IpamSubnet{ip("10.69.0.192"), 26, ip("10.69.0.193")});
  CHECK((*subnets)[1] == IpamSubnet{ip("10.69.1.0"), 26, ip("10.69.1.1")});
  CHECK((*subnets)[2] == IpamSubnet{ip("10.69.1.64"), 26, ip("10.69.1.65")});
  CHECK(ipam.bmc_subnet(7) == IpamSubnet{ip("10.72.16.0"), 20, ip("10.72.16.1")});

  // Leases: just above the last index (offset 31) up to the range's second-last address
  // (offset 62): 32 addresses.
  auto leases = ipam.lease_range(1, 0);
  REQUIRE(leases);
  CHECK(*leases == LeaseRange{ip("10.69.0.223"), 32});
  CHECK(format_ipv4(leases->last()) == "10.69.0.254");
  CHECK(ipam.lease_range(1, 2) == LeaseRange{ip("10.69.1.95"), 32});
  CHECK(ipam.lease_range(1, 3).error().code == Errc::invalid_argument);
  CHECK(ipam.lease_range(120, 0).error().code == Errc::invalid_argument);

  // A relay's giaddr is usually the gateway: it names rack and NIC.
  auto gw = ipam.locate(ip("10.69.0.193"));
  REQUIRE(gw);
  CHECK(gw->rack == 1);
  CHECK(gw->nic == 0);
  CHECK(gw->subnet == (*subnets)[0]);
  CHECK(gw->leases == *leases);
  CHECK_FALSE(gw->index);

  auto node = ipam.locate(ip("10.69.1.69"));
  REQUIRE(node);
  CHECK(node->rack == 1);
  CHECK(node->nic == 2);
  CHECK(node->index == 5U);

  CHECK(ipam.locate(ip("10.69.0.3"))->index == 3U);    // boot server of rack 0
  CHECK(ipam.locate(ip("10.69.0.30"))->index == 30U);  // last node of rack 0
  CHECK_FALSE(ipam.locate(ip("10.69.0.31"))->index);   // first lease address
  CHECK_FALSE(ipam.locate(ip("10.69.0.63"))->index);   // range's last address
  CHECK(ipam.locate(ip("10.69.0.63"))->nic == 0);
  CHECK(ipam.locate(ip("10.69.0.64"))->nic == 1);
  CHECK(ipam.locate(ip("10.69.89.255"))->rack == 119);  // last address of the last rack
  auto outside = ipam.locate(ip("10.69.90.0"));         // rack 120: beyond the BMC pool
  REQUIRE_FALSE(outside);
  CHECK(outside.error().code == Errc::not_found);
  CHECK_THAT(outside.error().message, Catch::Contains("10.69.90.0"));
  CHECK(ipam.locate(ip("10.68.255.255")).error().code == Errc::not_found);
  CHECK(ipam.locate(ip("10.72.17.4")).error().code == Errc::not_found);  // a BMC address

  const auto j = to_json(*gw);
  CHECK(j["rack"] == 1);
  CHECK(j["subnet"]["gateway"] == "10.69.0.193");
  CHECK(j["subnet"]["netmask"] == "255.255.255.192");
  CHECK(j["leases"] == json{{"first", "10.69.0.223"}, {"last", "10.69.0.254"}, {"count", 32}});
  CHECK(j["index"].is_null());
}

TEST_CASE("IPAM at the ends of the address space", "[netboot][ipam]") {
  IpamConfig c;
  c.max_nodes_in_rack = 10;
  c.node_ipv4_pool = "0.0.0.0/1";
  c.node_ipv4_range_size = 8;
  c.node_ipv4_range_mask = 24;
  c.node_ip_per_node = 1;
  c.node_index_offset = 3;
  c.node_gateway_offset = 1;
  c.bmc_ipv4_pool = "128.0.0.0/1";
  c.bmc_ipv4_range_size = 8;
  c.bmc_ipv4_range_mask = 24;
  c.bmc_ipv4_gateway_offset = 2;
  const auto ipam = make(c);
  CHECK(ipam.max_racks() == 8388608);  // 2^31 / 256
  const std::uint32_t last = 8388607;
  CHECK(format_ipv4(ipam.node_addresses(last, 13)->front().address) == "127.255.255.13");
  CHECK(format_ipv4(ipam.bmc_address(last, 13)->address) == "255.255.255.13");
  CHECK(format_ipv4(ipam.bmc_address(last, 13)->gateway) == "255.255.255.2");
  CHECK(ipam.lease_range(last) == LeaseRange{ip("127.255.255.14"), 241});
  CHECK(format_ipv4(ipam.lease_range(last)->last()) == "127.255.255.254");
  CHECK(ipam.locate(ip("127.255.255.254"))->rack == last);
  CHECK(ipam.locate(ip("0.0.0.0"))->rack == 0U);
  CHECK(ipam.locate(ip("0.0.0.5"))->index == 5U);
  CHECK(ipam.locate(ip("128.0.0.0")).error().code == Errc::not_found);
  CHECK(ipam.locate(ip("255.255.255.255")).error().code == Errc::not_found);
  CHECK_FALSE(ipam.node_addresses(last + 1, 4));
  CHECK_FALSE(ipam.node_addresses(0xffffffffU, 4));
  CHECK_FALSE(ipam.bmc_address(0xffffffffU, 4));

  // Rack 0 sits at the pool's start (and node_ipv4_offset moves it).
  CHECK(format_ipv4(ipam.node_addresses(0, 4)->front().address) == "0.0.0.4");
  c.node_ipv4_offset = "0.0.1.0";
  const auto shifted = make(c);
  CHECK(format_ipv4(shifted.node_addresses(0, 4)->front().address) == "0.0.1.4");
  CHECK(shifted.max_racks() == 8388607);
}

TEST_CASE("IPAM pool exhaustion", "[netboot][ipam]") {
  auto c = example();
  c.node_ipv4_pool = "10.69.0.0/24";  // 256 addresses: one rack of 3 × 64
  auto one = make(c);
  CHECK(one.max_racks() == 1);
  CHECK(one.node_addresses(0, 30));
  CHECK(one.node_addresses(1, 4).error().code == Errc::invalid_argument);
  CHECK(one.locate(ip("10.69.0.191"))->rack == 0U);
  CHECK(one.locate(ip("10.69.0.192")).error().code == Errc::not_found);  // the leftover

  c.node_ip_per_node = 4;  // exactly one rack
  CHECK(make(c).max_racks() == 1);
  c.node_ip_per_node = 5;  // 320 > 256
  auto none = Ipam::make(c);
  REQUIRE_FALSE(none);
  CHECK_THAT(none.error().message, Catch::StartsWith("node_ipv4_pool"));
  CHECK_THAT(none.error().message, Catch::Contains("holds no rack"));
}

TEST_CASE("IPAM refuses each bad config naming the field", "[netboot][ipam]") {
  struct Case {
    const char* field;  // what the message starts with
    std::function<void(IpamConfig&)> edit;
  };
  const std::vector<Case> cases = {
      {"max_nodes_in_rack", [](IpamConfig& c) { c.max_nodes_in_rack = 0; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = "10.69.0.0"; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = "10.69.0.0/33"; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = "10.69.0.0/"; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = "10.69.0.0/016"; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = "300.69.0.0/16"; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = "10.69.0.1/16"; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = "10.69.0.0/32"; }},
      {"node_ipv4_pool", [](IpamConfig& c) { c.node_ipv4_pool = ""; }},
      {"node_ipv4_offset", [](IpamConfig& c) { c.node_ipv4_offset = "256"; }},
      {"node_ipv4_offset", [](IpamConfig& c) { c.node_ipv4_offset = "0.1.0.0"; }},  // = size
      {"node_ipv4_offset", [](IpamConfig& c) { c.node_ipv4_offset = "0.0.0.1"; }},  // unaligned
      {"node_ipv4_range_size", [](IpamConfig& c) { c.node_ipv4_range_size = 1; }},
      {"node_ipv4_range_size", [](IpamConfig& c) { c.node_ipv4_range_size = 31; }},
      {"node_ipv4_range_mask", [](IpamConfig& c) { c.node_ipv4_range_mask = 27; }},
      {"node_ipv4_range_mask", [](IpamConfig& c) { c.node_ipv4_range_mask = 15; }},
      {"node_ip_per_node", [](IpamConfig& c) { c.node_ip_per_node = 0; }},
      {"node_index_offset", [](IpamConfig& c) { c.node_index_offset = 0; }},
      {"node_index_offset + max_nodes_in_rack", [](IpamConfig& c) { c.max_nodes_in_rack = 59; }},
      {"node_gateway_offset", [](IpamConfig& c) { c.node_gateway_offset = 0; }},
      {"node_gateway_offset", [](IpamConfig& c) { c.node_gateway_offset = 3; }},
      {"bmc_ipv4_pool", [](IpamConfig& c) { c.bmc_ipv4_pool = "10.72.16.0/19"; }},
      {"bmc_ipv4_pool", [](IpamConfig& c) { c.bmc_ipv4_pool = "10.69.128.0/20"; }},  // overlap
      {"bmc_ipv4_offset", [](IpamConfig& c) { c.bmc_ipv4_offset = "0.0.16.0"; }},
      {"bmc_ipv4_offset", [](IpamConfig& c) { c.bmc_ipv4_offset = "0.0.0.16"; }},
      {"bmc_ipv4_range_size", [](IpamConfig& c) { c.bmc_ipv4_range_size = 4; }},
      {"bmc_ipv4_range_size",  // index 31 is the last address of a 32-address BMC range
       [](IpamConfig& c) { c.max_nodes_in_rack = 28; }},
      {"bmc_ipv4_range_mask", [](IpamConfig& c) { c.bmc_ipv4_range_mask = 28; }},
      {"bmc_ipv4_range_mask", [](IpamConfig& c) { c.bmc_ipv4_range_mask = 19; }},
      {"bmc_ipv4_gateway_offset", [](IpamConfig& c) { c.bmc_ipv4_gateway_offset = 0; }},
      {"bmc_ipv4_gateway_offset", [](IpamConfig& c) { c.bmc_ipv4_gateway_offset = 5; }},
  };
  for (const auto& tc : cases) {
    auto c = example();
    tc.edit(c);
    auto r = Ipam::make(c);
    INFO(tc.field << " <- " << to_json(c).dump());
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK_THAT(r.error().message, Catch::StartsWith(tc.field));
  }
  // The largest index that still leaves one lease address: 3 + 58 = 61 = 64 − 3.
  auto c = example();
  c.max_nodes_in_rack = 58;
  c.bmc_ipv4_range_size = 6;
  c.bmc_ipv4_offset = "0.0.0.0";
  auto tight = make(c);
  CHECK(tight.lease_range(0) == LeaseRange{ip("10.69.0.62"), 1});
}

TEST_CASE("IPAM config JSON round trip and strict reading", "[netboot][ipam]") {
  const auto c = example();
  const auto j = to_json(c);
  CHECK(j["node_ipv4_pool"] == "10.69.0.0/16");
  CHECK(j["bmc_ipv4_offset"] == "0.0.1.0");
  auto back = ipam_config_from_json(j);
  REQUIRE(back);
  CHECK(*back == c);
  // Through text too.
  auto reparsed = ipam_config_from_json(json::parse(j.dump()));
  REQUIRE(reparsed);
  CHECK(*reparsed == c);

  // The offsets are optional.
  auto no_offsets = j;
  no_offsets.erase("node_ipv4_offset");
  no_offsets.erase("bmc_ipv4_offset");
  auto parsed = ipam_config_from_json(no_offsets);
  REQUIRE(parsed);
  CHECK(parsed->node_ipv4_offset.empty());
  CHECK(parsed->bmc_ipv4_offset.empty());

  const auto refused = [&](const json& bad, const char* needle) {
    auto r = ipam_config_from_json(bad);
    INFO(bad.dump());
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK_THAT(r.error().message, Catch::Contains(needle));
  };
  auto missing = j;
  missing.erase("node_ip_per_node");
  refused(missing, "'node_ip_per_node' is required");
  auto unknown = j;
  unknown["node_ipv4_ofset"] = "0.0.0.0";
  refused(unknown, "unknown key 'node_ipv4_ofset'");
  auto wrong_type = j;
  wrong_type["node_ipv4_range_size"] = "6";
  refused(wrong_type, "'node_ipv4_range_size' must be an integer");
  auto negative = j;
  negative["max_nodes_in_rack"] = -1;
  refused(negative, "'max_nodes_in_rack' must be an integer");
  auto fraction = j;
  fraction["max_nodes_in_rack"] = 1.5;
  refused(fraction, "'max_nodes_in_rack'");
  auto huge = j;
  huge["max_nodes_in_rack"] = 4294967296ULL;
  refused(huge, "'max_nodes_in_rack'");
  auto not_string = j;
  not_string["bmc_ipv4_pool"] = 10;
  refused(not_string, "'bmc_ipv4_pool' must be a string");
  refused(json::array(), "expected a JSON object");
}
