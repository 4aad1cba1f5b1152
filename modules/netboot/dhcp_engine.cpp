#include "modules/netboot/dhcp_engine.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <charconv>
#include <limits>

namespace neco::netboot {

std::uint32_t to_u32(const Ipv4& ip) noexcept {
  return (std::uint32_t{ip[0]} << 24) | (std::uint32_t{ip[1]} << 16) | (std::uint32_t{ip[2]} << 8) |
         std::uint32_t{ip[3]};
}

Ipv4 to_ipv4(std::uint32_t ip) noexcept {
  return {static_cast<std::uint8_t>(ip >> 24), static_cast<std::uint8_t>(ip >> 16),
          static_cast<std::uint8_t>(ip >> 8), static_cast<std::uint8_t>(ip)};
}

std::optional<Ipv4> parse_ipv4(std::string_view text) {
  Ipv4 out{};
  for (std::size_t i = 0; i < 4; ++i) {
    auto dot = text.find('.');
    std::string_view part = text.substr(0, dot);
    if (i < 3 && dot == std::string_view::npos) return std::nullopt;
    if (i == 3 && dot != std::string_view::npos) return std::nullopt;
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) {
      return std::nullopt;
    }
    unsigned v = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc() || p != part.data() + part.size() || v > 255) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(v);
    text.remove_prefix(dot == std::string_view::npos ? text.size() : dot + 1);
  }
  return out;
}

std::uint32_t Subnet::mask() const noexcept {
  return prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - prefix);
}

bool Subnet::contains(std::uint32_t ip) const noexcept {
  return (ip & mask()) == network;
}

Expected<Subnet> make_subnet(std::string_view cidr, std::string_view range) {
  Subnet s;
  s.name = std::string(cidr);
  auto slash = cidr.find('/');
  auto net = parse_ipv4(cidr.substr(0, slash));
  int prefix = -1;
  if (slash != std::string_view::npos) {
    auto len = cidr.substr(slash + 1);
    auto [p, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
    if (ec != std::errc() || p != len.data() + len.size()) prefix = -1;
  }
  if (!net || prefix < 8 || prefix > 30) {
    return fail(Errc::invalid_argument,
                fmt::format("subnet \"{}\": expected A.B.C.D/N with N from 8 to 30", cidr));
  }
  s.prefix = prefix;
  s.network = to_u32(*net);
  if ((s.network & ~s.mask()) != 0) {
    return fail(Errc::invalid_argument,
                fmt::format("subnet \"{}\": host bits are set (the network is {}/{})", cidr,
                            to_string(to_ipv4(s.network & s.mask())), prefix));
  }
  auto dash = range.find('-');
  auto first = parse_ipv4(range.substr(0, dash));
  auto last = dash == std::string_view::npos ? std::nullopt : parse_ipv4(range.substr(dash + 1));
  if (!first || !last) {
    return fail(Errc::invalid_argument,
                fmt::format("range \"{}\": expected FIRST-LAST (two IPv4 addresses)", range));
  }
  s.range_first = to_u32(*first);
  s.range_last = to_u32(*last);
  const std::uint32_t broadcast = s.network | ~s.mask();
  if (s.range_first > s.range_last) {
    return fail(Errc::invalid_argument, fmt::format("range \"{}\": first is after last", range));
  }
  if (!s.contains(s.range_first) || !s.contains(s.range_last) || s.range_first == s.network ||
      s.range_last == broadcast) {
    return fail(Errc::invalid_argument,
                fmt::format("range \"{}\" must lie inside {} without its network and broadcast "
                            "addresses",
                            range, cidr));
  }
  return s;
}

std::string_view to_string(LeaseState s) noexcept {
  switch (s) {
    case LeaseState::offered:
      return "offered";
    case LeaseState::bound:
      return "bound";
    case LeaseState::released:
      return "released";
    case LeaseState::declined:
      return "declined";
  }
  return "unknown";
}

std::optional<LeaseState> parse_lease_state(std::string_view s) noexcept {
  for (auto st :
       {LeaseState::offered, LeaseState::bound, LeaseState::released, LeaseState::declined}) {
    if (to_string(st) == s) return st;
  }
  return std::nullopt;
}

// ---- lease table ----

LeaseTable::LeaseTable(std::vector<Subnet> subnets) : subnets_(std::move(subnets)) {
  pools_.resize(subnets_.size());
  for (std::size_t i = 0; i < subnets_.size(); ++i) {
    pools_[i].ever_leased.assign((subnets_[i].range_size() + 63) / 64, 0);
  }
}

const Subnet* LeaseTable::subnet_for(std::uint32_t ip) const {
  for (const auto& s : subnets_) {
    if (s.contains(ip)) return &s;
  }
  return nullptr;
}

std::size_t LeaseTable::subnet_index(const Subnet& s) const {
  return static_cast<std::size_t>(&s - subnets_.data());
}

const Lease* LeaseTable::by_address(std::uint32_t ip) const {
  auto it = by_address_.find(ip);
  return it == by_address_.end() ? nullptr : &it->second;
}

const Lease* LeaseTable::by_client(std::string_view client, const Subnet& subnet) const {
  auto [b, e] = by_client_.equal_range(std::string(client));
  for (auto it = b; it != e; ++it) {
    if (subnet.contains(it->second)) return by_address(it->second);
  }
  return nullptr;
}

void LeaseTable::mark(std::size_t subnet, std::uint32_t ip) {
  const std::uint32_t off = ip - subnets_[subnet].range_first;
  pools_[subnet].ever_leased[off / 64] |= std::uint64_t{1} << (off % 64);
}

std::optional<std::uint32_t> LeaseTable::choose(const Subnet& subnet, std::string_view client,
                                                std::optional<std::uint32_t> requested,
                                                std::int64_t now) {
  if (const Lease* own = by_client(client, subnet);
      own != nullptr && subnet.in_range(own->address)) {
    // A declined address is not handed back to the client that found it in use.
    if (own->state != LeaseState::declined) return own->address;
  }
  if (requested && subnet.in_range(*requested)) {
    const Lease* l = by_address(*requested);
    if (l == nullptr || (!l->holds(now) && l->client == client)) return requested;
  }
  const std::size_t idx = subnet_index(subnet);
  Pool& pool = pools_[idx];
  const std::uint32_t size = subnet.range_size();
  // Fresh addresses first, round-robin, so a released address stays with its last client for
  // as long as possible. 64 at a time: a full bitmap word is skipped in one step.
  for (std::uint32_t scanned = 0; scanned < size;) {
    const std::uint32_t off = pool.cursor;
    const std::uint64_t word = pool.ever_leased[off / 64];
    const std::uint64_t free_bits = ~word >> (off % 64);
    const std::uint32_t span = std::min<std::uint32_t>(64 - off % 64, size - off);
    if (free_bits != 0) {
      const auto bit = static_cast<std::uint32_t>(std::countr_zero(free_bits));
      if (bit < span) {
        pool.cursor = (off + bit + 1) % size;
        return subnet.range_first + off + bit;
      }
    }
    scanned += span;
    pool.cursor = (off + span) % size;
  }
  // Every address has been leased once: the one whose lease ended longest ago.
  const Lease* best = nullptr;
  for (std::uint32_t ip = subnet.range_first;; ++ip) {
    const Lease* l = by_address(ip);
    if (l != nullptr && !l->holds(now) && (best == nullptr || l->expires < best->expires)) {
      best = l;
    }
    if (ip == subnet.range_last) break;
  }
  if (best == nullptr) return std::nullopt;
  return best->address;
}

void LeaseTable::put(const Lease& lease) {
  const Subnet* s = subnet_for(lease.address);
  if (s != nullptr) {
    // The client's other lease in this subnet goes: one address per client per subnet.
    auto [b, e] = by_client_.equal_range(lease.client);
    for (auto it = b; it != e;) {
      if (it->second != lease.address && s->contains(it->second)) {
        by_address_.erase(it->second);
        it = by_client_.erase(it);
      } else {
        ++it;
      }
    }
  }
  if (auto old = by_address_.find(lease.address); old != by_address_.end()) {
    auto [b, e] = by_client_.equal_range(old->second.client);
    for (auto it = b; it != e; ++it) {
      if (it->second == lease.address) {
        by_client_.erase(it);
        break;
      }
    }
  }
  by_address_[lease.address] = lease;
  by_client_.emplace(lease.client, lease.address);
  if (s != nullptr && s->in_range(lease.address)) mark(subnet_index(*s), lease.address);
}

void LeaseTable::clear() {
  by_address_.clear();
  by_client_.clear();
  for (auto& p : pools_) {
    std::fill(p.ever_leased.begin(), p.ever_leased.end(), 0);
    p.cursor = 0;
  }
}

std::vector<Lease> LeaseTable::all() const {
  std::vector<Lease> out;
  out.reserve(by_address_.size());
  for (const auto& [ip, l] : by_address_)
    out.push_back(l);
  std::sort(out.begin(), out.end(),
            [](const Lease& a, const Lease& b) { return a.address < b.address; });
  return out;
}

// ---- engine ----

namespace {

constexpr std::uint16_t kServerPort = 67;
constexpr std::uint16_t kClientPort = 68;

std::string key_of(const Packet& p) {
  auto k = p.client_key();
  return {k.begin(), k.end()};
}

bool is_zero(const Ipv4& ip) {
  return ip == Ipv4{};
}

}  // namespace

DhcpEngine::DhcpEngine(EngineConfig config)
    : config_(std::move(config)), leases_(config_.subnets) {}

const Subnet* DhcpEngine::select_subnet(const Packet& request, const Arrival& arrival) const {
  // RFC 3527 link selection beats giaddr (the relay's own address may be on another link),
  // giaddr beats ciaddr (RFC 2131 §4.3.1), and a direct packet belongs to the arrival link.
  if (auto link = request.link_selection()) return leases_.subnet_for(to_u32(*link));
  if (!is_zero(request.giaddr)) return leases_.subnet_for(to_u32(request.giaddr));
  if (!is_zero(request.ciaddr) && arrival.unicast) {
    return leases_.subnet_for(to_u32(request.ciaddr));
  }
  return leases_.subnet_for(to_u32(arrival.local));
}

Packet DhcpEngine::reply_to(const Packet& request, MessageType type, const Arrival& arrival) const {
  Packet r;
  r.op = Op::boot_reply;
  r.htype = request.htype;
  r.hlen = request.hlen;
  r.xid = request.xid;
  r.flags = request.flags;
  r.giaddr = request.giaddr;
  r.chaddr = request.chaddr;
  r.set_message_type(type);
  r.set_ipv4_option(opt::server_id, arrival.local);
  // RFC 3046 §2.2: the relay agent information comes back unchanged.
  if (auto rai = request.relay_agent_info()) r.options.set(opt::relay_agent_info, *rai);
  return r;
}

void DhcpEngine::add_config_options(Packet& reply, const Subnet& subnet) const {
  reply.set_ipv4_option(opt::subnet_mask, to_ipv4(subnet.mask()));
  if (!subnet.routers.empty()) reply.set_ipv4_list_option(opt::router, subnet.routers);
  if (!subnet.dns_servers.empty()) {
    reply.set_ipv4_list_option(opt::dns_servers, subnet.dns_servers);
  }
  if (!subnet.domain.empty()) reply.set_string_option(opt::domain_name, subnet.domain);
}

void DhcpEngine::add_lease_times(Packet& reply) const {
  const std::uint32_t t = config_.lease_seconds;
  reply.set_u32_option(opt::lease_time, t);
  reply.set_u32_option(opt::renewal_time, t / 2);                                       // T1: 0.5
  reply.set_u32_option(opt::rebinding_time, static_cast<std::uint32_t>(t * 7ULL / 8));  // T2
}

void DhcpEngine::add_boot(Packet& reply, const Packet& request, const Arrival& arrival,
                          std::string& event) const {
  const BootDecision d = decide_boot(request, config_.boot);
  event += fmt::format(" boot={} ({})", to_string(d.kind), d.reason);
  if (d.kind == BootKind::none) return;
  reply.set_string_option(opt::bootfile_name, d.boot_file);
  if (d.boot_file.size() < Packet::kFileSize) reply.file = d.boot_file;
  if (!d.vendor_class.empty()) reply.set_string_option(opt::vendor_class, d.vendor_class);
  if (d.kind == BootKind::tftp) reply.siaddr = arrival.local;  // we serve TFTP too
}

Destination DhcpEngine::route(const Packet& request, const Packet& reply) const {
  Destination d;
  const bool is_nak = reply.message_type() == MessageType::nak;
  if (!is_zero(request.giaddr)) {
    d.address = request.giaddr;
  } else if (!is_nak && !is_zero(request.ciaddr)) {
    d.address = request.ciaddr;
  } else {
    // RFC 2131 §4.1: a NAK to a direct client is broadcast. A client without an address yet
    // is too: unicasting to yiaddr needs an ARP entry for chaddr, while a broadcast reaches it
    // whatever its broadcast flag says (clients listen on raw sockets).
    d.broadcast = true;
  }
  d.port = is_zero(request.giaddr) ? kClientPort : kServerPort;
  return d;
}

Outcome DhcpEngine::nak(const Packet& request, const Arrival& arrival, std::string why) const {
  Outcome o;
  Packet r = reply_to(request, MessageType::nak, arrival);
  // RFC 2131 Table 3: a NAK carries no lease options; relays broadcast it to the client.
  if (!is_zero(request.giaddr)) r.set_broadcast(true);
  o.to = route(request, r);
  o.reply = std::move(r);
  o.event = "NAK: " + std::move(why);
  return o;
}

Outcome DhcpEngine::handle(const Packet& request, const Arrival& arrival, std::int64_t now) {
  Outcome o;
  if (request.op != Op::boot_request) {
    o.dropped = "not_a_request";
    return o;
  }
  switch (*request.message_type()) {
    case MessageType::discover:
      return discover(request, arrival, now);
    case MessageType::request:
      return this->request(request, arrival, now);
    case MessageType::decline:
      return decline(request, arrival, now);
    case MessageType::release:
      return release(request, arrival, now);
    case MessageType::inform:
      return inform(request, arrival);
    default:
      o.dropped = "server_message_type";  // OFFER/ACK/NAK sent to a server
      return o;
  }
}

Outcome DhcpEngine::discover(const Packet& request, const Arrival& arrival, std::int64_t now) {
  Outcome o;
  const Subnet* subnet = select_subnet(request, arrival);
  if (subnet == nullptr) {
    o.dropped = "no_subnet";
    return o;
  }
  const std::string client = key_of(request);
  std::optional<std::uint32_t> requested;
  if (auto r = request.requested_ip()) requested = to_u32(*r);
  auto address = leases_.choose(*subnet, client, requested, now);
  if (!address) {
    o.dropped = "pool_exhausted";
    return o;
  }
  const Lease* prior = leases_.by_address(*address);
  // An address the client already holds stays bound; a new one is held for the offer only.
  if (prior == nullptr || prior->client != client || prior->state != LeaseState::bound ||
      !prior->holds(now)) {
    Lease l;
    l.address = *address;
    l.client = client;
    l.hw = request.hardware_address_string();
    l.hostname = std::string(request.hostname().value_or(""));
    l.state = LeaseState::offered;
    l.expires = now + config_.offer_seconds;
    leases_.put(l);  // offers are not persisted: a new leader just offers again
  }
  Packet r = reply_to(request, MessageType::offer, arrival);
  r.yiaddr = to_ipv4(*address);
  add_lease_times(r);
  add_config_options(r, *subnet);
  o.event = fmt::format("OFFER {} to {} on {}", to_string(r.yiaddr),
                        request.hardware_address_string(), subnet->name);
  add_boot(r, request, arrival, o.event);
  o.to = route(request, r);
  o.reply = std::move(r);
  return o;
}

Outcome DhcpEngine::ack(const Packet& request, const Arrival& arrival, const Subnet& subnet,
                        std::uint32_t address, std::int64_t now, std::string_view how) {
  Outcome o;
  Lease l;
  l.address = address;
  l.client = key_of(request);
  l.hw = request.hardware_address_string();
  l.hostname = std::string(request.hostname().value_or(""));
  l.state = LeaseState::bound;
  l.expires = now + config_.lease_seconds;
  leases_.put(l);
  o.changes.push_back(l);
  o.durable = true;
  Packet r = reply_to(request, MessageType::ack, arrival);
  r.ciaddr = request.ciaddr;
  r.yiaddr = to_ipv4(address);
  add_lease_times(r);
  add_config_options(r, subnet);
  o.event = fmt::format("ACK {} ({}) to {} on {}", to_string(r.yiaddr), how,
                        request.hardware_address_string(), subnet.name);
  add_boot(r, request, arrival, o.event);
  o.to = route(request, r);
  o.reply = std::move(r);
  return o;
}

Outcome DhcpEngine::request(const Packet& request, const Arrival& arrival, std::int64_t now) {
  Outcome o;
  const std::string client = key_of(request);
  const auto server_id = request.server_id();
  const auto requested = request.requested_ip();
  const Subnet* subnet = select_subnet(request, arrival);

  if (server_id) {
    // SELECTING: the client answers one server's offer.
    if (*server_id != arrival.local) {
      // It chose another server: our offer to it is void.
      if (subnet != nullptr) {
        if (const Lease* l = leases_.by_client(client, *subnet);
            l != nullptr && l->state == LeaseState::offered) {
          Lease freed = *l;
          freed.state = LeaseState::released;
          freed.expires = now;
          leases_.put(freed);
        }
      }
      o.dropped = "other_server";
      return o;
    }
    if (!requested || subnet == nullptr) {
      return nak(request, arrival, "SELECTING without a requested address or subnet");
    }
    const std::uint32_t want = to_u32(*requested);
    const Lease* l = leases_.by_address(want);
    if (l == nullptr || l->client != client || !l->holds(now) || l->state == LeaseState::declined ||
        !subnet->in_range(want)) {
      return nak(request, arrival,
                 fmt::format("{} was not offered to {}", to_string(*requested),
                             request.hardware_address_string()));
    }
    return ack(request, arrival, *subnet, want, now, "selecting");
  }

  if (subnet == nullptr) {
    o.dropped = "no_subnet";
    return o;
  }
  std::uint32_t want = 0;
  std::string_view how;
  if (requested && is_zero(request.ciaddr)) {
    want = to_u32(*requested);  // INIT-REBOOT: a client that rebooted checks its address
    how = "init-reboot";
  } else if (!is_zero(request.ciaddr)) {
    want = to_u32(request.ciaddr);  // RENEWING (unicast) or REBINDING (broadcast)
    how = arrival.unicast ? "renewing" : "rebinding";
  } else {
    return nak(request, arrival,
               "REQUEST with neither a server id, a requested address nor ciaddr");
  }
  if (!subnet->contains(want)) {
    return nak(
        request, arrival,
        fmt::format("{} is not on {} (the client moved)", to_string(to_ipv4(want)), subnet->name));
  }
  const Lease* l = leases_.by_address(want);
  // Authoritative for our subnets: an address we have no binding of this client for is wrong.
  if (l == nullptr || l->client != client || l->state == LeaseState::declined ||
      (l->state != LeaseState::bound && l->holds(now)) || !subnet->in_range(want)) {
    return nak(request, arrival,
               fmt::format("{} ({}) is not bound to {}", to_string(to_ipv4(want)), how,
                           request.hardware_address_string()));
  }
  // Our own expired or released binding of this client, not taken since: it may have it back.
  return ack(request, arrival, *subnet, want, now, how);
}

Outcome DhcpEngine::decline(const Packet& request, const Arrival& arrival, std::int64_t now) {
  Outcome o;
  const auto requested = request.requested_ip();
  if (!requested || request.server_id() != arrival.local) {
    o.dropped = !requested ? "decline_without_address" : "other_server";
    return o;
  }
  const Lease* l = leases_.by_address(to_u32(*requested));
  if (l == nullptr || l->client != key_of(request)) {
    o.dropped = "decline_not_leased";
    return o;
  }
  // Someone else uses the address (the client's ARP check saw it): keep it out of the pool.
  Lease d = *l;
  d.state = LeaseState::declined;
  d.expires = now + config_.decline_seconds;
  leases_.put(d);
  o.changes.push_back(d);
  o.event = fmt::format("DECLINE {} by {}: resting it for {} s", to_string(*requested),
                        request.hardware_address_string(), config_.decline_seconds);
  return o;
}

Outcome DhcpEngine::release(const Packet& request, const Arrival& arrival, std::int64_t now) {
  Outcome o;
  if (request.server_id() && *request.server_id() != arrival.local) {
    o.dropped = "other_server";
    return o;
  }
  const Lease* l = leases_.by_address(to_u32(request.ciaddr));
  if (l == nullptr || l->client != key_of(request) || l->state != LeaseState::bound) {
    o.dropped = "release_not_bound";
    return o;
  }
  Lease r = *l;
  r.state = LeaseState::released;
  r.expires = now;
  leases_.put(r);
  o.changes.push_back(r);
  o.event =
      fmt::format("RELEASE {} by {}", to_string(request.ciaddr), request.hardware_address_string());
  return o;
}

Outcome DhcpEngine::inform(const Packet& request, const Arrival& arrival) {
  Outcome o;
  const Subnet* subnet = select_subnet(request, arrival);
  if (subnet == nullptr || is_zero(request.ciaddr)) {
    o.dropped = subnet == nullptr ? "no_subnet" : "inform_without_ciaddr";
    return o;
  }
  // RFC 2131 §3.4: configuration only, no lease, no yiaddr; straight to ciaddr.
  Packet r = reply_to(request, MessageType::ack, arrival);
  r.ciaddr = request.ciaddr;
  add_config_options(r, *subnet);
  o.event = fmt::format("ACK (inform) to {} at {}", request.hardware_address_string(),
                        to_string(request.ciaddr));
  add_boot(r, request, arrival, o.event);
  o.to = route(request, r);
  o.reply = std::move(r);
  return o;
}

}  // namespace neco::netboot
