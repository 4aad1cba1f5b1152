// The DHCPv4 server's decisions (RFC 2131/2132), without sockets or store: a packet and where
// it arrived go in; the reply, where it goes, and the lease changes to persist come out. The
// server (dhcp_server.hpp) owns the I/O, the group commit and the leadership; everything a
// client can observe is decided here, so every branch is a unit test on byte-exact packets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agent/util/error.hpp"
#include "modules/netboot/boot_decision.hpp"
#include "modules/netboot/dhcp_packet.hpp"

namespace neco::netboot {

std::uint32_t to_u32(const Ipv4& ip) noexcept;
Ipv4 to_ipv4(std::uint32_t ip) noexcept;
// Dotted quad, strictly: four decimal octets 0-255, no leading zeros beyond "0".
std::optional<Ipv4> parse_ipv4(std::string_view text);

// One subnet the server hands addresses in: the network (for subnet selection and the mask
// option), the dynamic range (inclusive), and the options its clients get.
struct Subnet {
  std::string name;  // "10.69.0.0/26", for logs and metrics
  std::uint32_t network = 0;
  int prefix = 24;
  std::uint32_t range_first = 0;
  std::uint32_t range_last = 0;
  std::vector<Ipv4> routers;
  std::vector<Ipv4> dns_servers;
  std::string domain;

  std::uint32_t mask() const noexcept;
  bool contains(std::uint32_t ip) const noexcept;
  bool in_range(std::uint32_t ip) const noexcept { return ip >= range_first && ip <= range_last; }
  std::uint32_t range_size() const noexcept { return range_last - range_first + 1; }
};

// "10.69.0.0/26" + "10.69.0.10-10.69.0.50": a valid subnet or invalid_argument saying why
// (network bits set below the prefix, range outside the subnet or reversed, network or
// broadcast address in the range).
Expected<Subnet> make_subnet(std::string_view cidr, std::string_view range);

enum class LeaseState : std::uint8_t { offered, bound, released, declined };
std::string_view to_string(LeaseState s) noexcept;
std::optional<LeaseState> parse_lease_state(std::string_view s) noexcept;

struct Lease {
  std::uint32_t address = 0;
  std::string client;  // the client key: option 61, else htype + chaddr (raw bytes)
  std::string hw;      // "aa:bb:cc:dd:ee:ff", for people
  std::string hostname;
  LeaseState state = LeaseState::offered;
  std::int64_t expires = 0;  // unix seconds

  // Whether the address is taken at `now`: an unexpired offer, binding or decline.
  bool holds(std::int64_t now) const noexcept {
    return state != LeaseState::released && expires > now;
  }
  friend bool operator==(const Lease&, const Lease&) = default;
};

// Leases by address and by client, with a per-subnet "ever leased" bitmap for allocation.
class LeaseTable {
 public:
  explicit LeaseTable(std::vector<Subnet> subnets = {});

  const std::vector<Subnet>& subnets() const { return subnets_; }
  // The subnet whose network contains `ip`, or null.
  const Subnet* subnet_for(std::uint32_t ip) const;
  const Lease* by_address(std::uint32_t ip) const;
  // The client's lease inside `subnet`, or null.
  const Lease* by_client(std::string_view client, const Subnet& subnet) const;

  // An address for `client` in `subnet`, in this order: its own lease there (even expired or
  // released: clients keep their address across reboots); `requested` when in the range and
  // not held by another client; the next address never leased (round-robin from a cursor);
  // the address whose lease ended longest ago. Nullopt when every address is held.
  std::optional<std::uint32_t> choose(const Subnet& subnet, std::string_view client,
                                      std::optional<std::uint32_t> requested, std::int64_t now);

  // Records `lease` at its address, replacing what was there and dropping the client's other
  // lease in the same subnet. The address must be in a subnet's range.
  void put(const Lease& lease);
  void clear();
  std::size_t size() const { return by_address_.size(); }
  std::vector<Lease> all() const;

 private:
  struct Pool {
    std::vector<std::uint64_t> ever_leased;  // bit per range address
    std::uint32_t cursor = 0;                // next offset to look at for a fresh address
  };
  std::size_t subnet_index(const Subnet& s) const;
  void mark(std::size_t subnet, std::uint32_t ip);

  std::vector<Subnet> subnets_;
  std::vector<Pool> pools_;
  std::unordered_map<std::uint32_t, Lease> by_address_;
  std::unordered_multimap<std::string, std::uint32_t> by_client_;
};

struct EngineConfig {
  std::vector<Subnet> subnets;
  std::uint32_t lease_seconds = 3600;
  std::uint32_t offer_seconds = 30;     // an offer holds its address this long
  std::uint32_t decline_seconds = 600;  // a declined (in use elsewhere) address rests this long
  BootConfig boot;
};

// Where a packet came in.
struct Arrival {
  Ipv4 local{};  // our address it was received on: server identifier and next-server
  bool unicast = false;
};

// Where a reply goes (RFC 2131 §4.1).
struct Destination {
  Ipv4 address{};
  std::uint16_t port = 68;
  bool broadcast = false;  // 255.255.255.255 on the arrival interface
};

struct Outcome {
  std::optional<Packet> reply;
  Destination to;
  // Leases to persist. `durable`: the reply may only be sent once they are committed (an ACK
  // promises the address); otherwise they are written in the background.
  std::vector<Lease> changes;
  bool durable = false;
  std::string_view dropped;  // why no reply, as a stable lower_snake reason ("" = answered
                             // or silent by design, e.g. a RELEASE)
  std::string event;         // one line for the debug log
};

class DhcpEngine {
 public:
  explicit DhcpEngine(EngineConfig config);

  Outcome handle(const Packet& request, const Arrival& arrival, std::int64_t now);

  LeaseTable& leases() { return leases_; }
  const EngineConfig& config() const { return config_; }

 private:
  const Subnet* select_subnet(const Packet& request, const Arrival& arrival) const;
  Packet reply_to(const Packet& request, MessageType type, const Arrival& arrival) const;
  void add_config_options(Packet& reply, const Subnet& subnet) const;
  void add_boot(Packet& reply, const Packet& request, const Arrival& arrival,
                std::string& event) const;
  void add_lease_times(Packet& reply) const;
  Destination route(const Packet& request, const Packet& reply) const;
  Outcome nak(const Packet& request, const Arrival& arrival, std::string why) const;

  Outcome discover(const Packet& request, const Arrival& arrival, std::int64_t now);
  Outcome request(const Packet& request, const Arrival& arrival, std::int64_t now);
  Outcome decline(const Packet& request, const Arrival& arrival, std::int64_t now);
  Outcome release(const Packet& request, const Arrival& arrival, std::int64_t now);
  Outcome inform(const Packet& request, const Arrival& arrival);
  Outcome ack(const Packet& request, const Arrival& arrival, const Subnet& subnet,
              std::uint32_t address, std::int64_t now, std::string_view how);

  EngineConfig config_;
  LeaseTable leases_;
};

}  // namespace neco::netboot
