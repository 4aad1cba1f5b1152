// The DHCP engine: every message type, direct and relayed, each NAK rule, reply routing
// (RFC 2131 §4.1), option 82 echo, the boot file in replies, and lease allocation.
#include <catch2/catch.hpp>

#include "modules/netboot/dhcp_engine.hpp"

using namespace neco::netboot;

namespace {

constexpr Ipv4 kServer{10, 69, 0, 1};
constexpr std::int64_t kNow = 1'700'000'000;

EngineConfig config() {
  EngineConfig c;
  auto a = make_subnet("10.69.0.0/24", "10.69.0.100-10.69.0.103");
  auto b = make_subnet("10.70.0.0/24", "10.70.0.10-10.70.0.20");
  REQUIRE(a);
  REQUIRE(b);
  a->routers = {Ipv4{10, 69, 0, 1}};
  a->dns_servers = {Ipv4{10, 69, 0, 53}, Ipv4{10, 69, 0, 54}};
  a->domain = "boot.example";
  c.subnets = {*a, *b};
  c.lease_seconds = 600;
  c.boot.ipxe_script_url = "http://10.69.0.1/ipxe/${serial}";
  return c;
}

Packet client(MessageType type, std::uint8_t mac_last) {
  Packet p;
  p.xid = 0x11223344;
  p.chaddr = {0x52, 0x54, 0x00, 0x12, 0x34, mac_last};
  p.set_message_type(type);
  return p;
}

Arrival direct() {
  return {kServer, false};
}

// What goes on the wire must parse back to the same reply.
Packet wire(const Packet& p) {
  auto parsed = parse(serialize(p));
  REQUIRE(parsed);
  REQUIRE(*parsed == p);
  return *parsed;
}

// DISCOVER → OFFER → REQUEST(selecting) → ACK; returns the bound address.
Ipv4 bind(DhcpEngine& e, std::uint8_t mac, std::int64_t now = kNow) {
  auto offer = e.handle(client(MessageType::discover, mac), direct(), now);
  REQUIRE(offer.reply);
  Packet req = client(MessageType::request, mac);
  req.set_ipv4_option(opt::server_id, kServer);
  req.set_ipv4_option(opt::requested_ip, offer.reply->yiaddr);
  auto ack = e.handle(req, direct(), now);
  REQUIRE(ack.reply);
  REQUIRE(ack.reply->message_type() == MessageType::ack);
  return ack.reply->yiaddr;
}

}  // namespace

TEST_CASE("subnets are validated with reasons") {
  CHECK(make_subnet("10.69.0.0/24", "10.69.0.10-10.69.0.20"));
  CHECK_FALSE(make_subnet("10.69.0.1/24", "10.69.0.10-10.69.0.20"));  // host bits
  CHECK_FALSE(make_subnet("10.69.0.0/33", "10.69.0.10-10.69.0.20"));
  CHECK_FALSE(make_subnet("10.69.0.0", "10.69.0.10-10.69.0.20"));
  CHECK_FALSE(make_subnet("10.69.0.0/24", "10.69.0.20-10.69.0.10"));   // reversed
  CHECK_FALSE(make_subnet("10.69.0.0/24", "10.69.0.0-10.69.0.10"));    // network address
  CHECK_FALSE(make_subnet("10.69.0.0/24", "10.69.0.10-10.69.0.255"));  // broadcast
  CHECK_FALSE(make_subnet("10.69.0.0/24", "10.69.1.10-10.69.1.20"));   // outside
  CHECK_FALSE(make_subnet("10.69.0.0/24", "10.69.0.010-10.69.0.20"));  // leading zero
  auto bad = make_subnet("10.69.0.1/24", "10.69.0.10-10.69.0.20");
  CHECK(bad.error().message.find("host bits") != std::string::npos);
}

TEST_CASE("DISCOVER gets an OFFER with address, lease times and subnet options") {
  DhcpEngine e(config());
  auto o = e.handle(client(MessageType::discover, 1), direct(), kNow);
  REQUIRE(o.reply);
  Packet r = wire(*o.reply);
  CHECK(r.op == Op::boot_reply);
  CHECK(r.xid == 0x11223344);
  CHECK(r.message_type() == MessageType::offer);
  CHECK(r.yiaddr == Ipv4{10, 69, 0, 100});
  CHECK(r.server_id() == kServer);
  CHECK(r.lease_time() == 600u);
  CHECK(r.renewal_time() == 300u);
  CHECK(r.rebinding_time() == 525u);
  CHECK(r.subnet_mask() == Ipv4{255, 255, 255, 0});
  CHECK(r.routers() == std::vector<Ipv4>{{10, 69, 0, 1}});
  CHECK(r.dns_servers().size() == 2);
  CHECK(r.domain_name() == "boot.example");
  CHECK(r.chaddr == client(MessageType::discover, 1).chaddr);
  CHECK(o.to.broadcast);
  CHECK(o.to.port == 68);
  CHECK_FALSE(o.durable);  // an offer promises nothing
  CHECK(o.changes.empty());
  CHECK(e.leases().by_address(to_u32({10, 69, 0, 100}))->state == LeaseState::offered);
}

TEST_CASE("the boot decision lands in the reply") {
  DhcpEngine e(config());
  Packet pxe = client(MessageType::discover, 2);
  pxe.set_string_option(opt::vendor_class, "PXEClient:Arch:00007:UNDI:003016");
  pxe.set_u16_option(opt::client_arch, 7);
  auto o = e.handle(pxe, direct(), kNow);
  REQUIRE(o.reply);
  CHECK(o.reply->file == "ipxe.efi");
  CHECK(o.reply->bootfile_name() == "ipxe.efi");
  CHECK(o.reply->siaddr == kServer);  // next-server: we serve TFTP
  Packet ipxe = pxe;
  ipxe.set_string_option(opt::user_class, "iPXE");
  o = e.handle(ipxe, direct(), kNow);
  CHECK(o.reply->bootfile_name() == "http://10.69.0.1/ipxe/${serial}");
  CHECK(o.reply->siaddr == Ipv4{});
  Packet plain = client(MessageType::discover, 3);
  o = e.handle(plain, direct(), kNow);
  CHECK(o.reply->file.empty());
  CHECK_FALSE(o.reply->bootfile_name());
}

TEST_CASE("SELECTING: ACK for our offer, silence for another server's, NAK for no offer") {
  DhcpEngine e(config());
  const Ipv4 a = bind(e, 1);
  CHECK(a == Ipv4{10, 69, 0, 100});
  const Lease* l = e.leases().by_address(to_u32(a));
  REQUIRE(l);
  CHECK(l->state == LeaseState::bound);
  CHECK(l->expires == kNow + 600);

  // A client that picked another server's offer: no reply, our offer freed.
  auto offer = e.handle(client(MessageType::discover, 2), direct(), kNow);
  Packet other = client(MessageType::request, 2);
  other.set_ipv4_option(opt::server_id, Ipv4{10, 69, 0, 2});
  other.set_ipv4_option(opt::requested_ip, offer.reply->yiaddr);
  auto o = e.handle(other, direct(), kNow);
  CHECK_FALSE(o.reply);
  CHECK(o.dropped == "other_server");
  CHECK(e.leases().by_address(to_u32(offer.reply->yiaddr))->state == LeaseState::released);

  // Asking us for an address we did not offer it.
  Packet wrong = client(MessageType::request, 3);
  wrong.set_ipv4_option(opt::server_id, kServer);
  wrong.set_ipv4_option(opt::requested_ip, a);  // client 1's
  o = e.handle(wrong, direct(), kNow);
  REQUIRE(o.reply);
  CHECK(o.reply->message_type() == MessageType::nak);
  CHECK(o.to.broadcast);
  CHECK_FALSE(o.reply->lease_time());
  CHECK(o.reply->yiaddr == Ipv4{});
}

TEST_CASE("the ACK is durable: its lease must be committed before it is sent") {
  DhcpEngine e(config());
  auto offer = e.handle(client(MessageType::discover, 1), direct(), kNow);
  Packet req = client(MessageType::request, 1);
  req.set_ipv4_option(opt::server_id, kServer);
  req.set_ipv4_option(opt::requested_ip, offer.reply->yiaddr);
  auto o = e.handle(req, direct(), kNow);
  CHECK(o.durable);
  REQUIRE(o.changes.size() == 1);
  CHECK(o.changes[0].state == LeaseState::bound);
  CHECK(o.changes[0].address == to_u32(offer.reply->yiaddr));
}

TEST_CASE("INIT-REBOOT: ACK for the client's own binding, NAK otherwise") {
  DhcpEngine e(config());
  const Ipv4 a = bind(e, 1);
  Packet reboot = client(MessageType::request, 1);
  reboot.set_ipv4_option(opt::requested_ip, a);
  auto o = e.handle(reboot, direct(), kNow + 60);
  REQUIRE(o.reply);
  CHECK(o.reply->message_type() == MessageType::ack);
  CHECK(o.reply->yiaddr == a);
  // Another client claiming it, an address we never bound, an address off this link.
  Packet thief = client(MessageType::request, 2);
  thief.set_ipv4_option(opt::requested_ip, a);
  CHECK(e.handle(thief, direct(), kNow).reply->message_type() == MessageType::nak);
  Packet unknown = client(MessageType::request, 3);
  unknown.set_ipv4_option(opt::requested_ip, Ipv4{10, 69, 0, 103});
  CHECK(e.handle(unknown, direct(), kNow).reply->message_type() == MessageType::nak);
  Packet moved = client(MessageType::request, 1);
  moved.set_ipv4_option(opt::requested_ip, Ipv4{192, 168, 1, 5});
  auto m = e.handle(moved, direct(), kNow);
  CHECK(m.reply->message_type() == MessageType::nak);
  CHECK(m.event.find("moved") != std::string::npos);
}

TEST_CASE("RENEWING is unicast to ciaddr and extends; REBINDING is answered too") {
  DhcpEngine e(config());
  const Ipv4 a = bind(e, 1);
  Packet renew = client(MessageType::request, 1);
  renew.ciaddr = a;
  auto o = e.handle(renew, Arrival{kServer, true}, kNow + 300);
  REQUIRE(o.reply);
  CHECK(o.reply->message_type() == MessageType::ack);
  CHECK(o.reply->ciaddr == a);
  CHECK_FALSE(o.to.broadcast);
  CHECK(o.to.address == a);
  CHECK(o.to.port == 68);
  CHECK(e.leases().by_address(to_u32(a))->expires == kNow + 300 + 600);
  auto rebind = e.handle(renew, Arrival{kServer, false}, kNow + 530);
  CHECK(rebind.reply->message_type() == MessageType::ack);
  // A renewal for an address bound to someone else: NAK, broadcast.
  Packet other = client(MessageType::request, 2);
  other.ciaddr = a;
  auto n = e.handle(other, Arrival{kServer, true}, kNow);
  CHECK(n.reply->message_type() == MessageType::nak);
  CHECK(n.to.broadcast);
}

TEST_CASE("relayed: subnet by giaddr, or by option 82 link selection; reply to the relay") {
  DhcpEngine e(config());
  Packet d = client(MessageType::discover, 9);
  d.giaddr = {10, 70, 0, 1};
  d.hops = 1;
  const std::vector<std::uint8_t> rai = {1, 3, 'p', 'o', '1', 2, 2, 'r', '7'};
  d.options.set(opt::relay_agent_info, rai);
  auto o = e.handle(d, Arrival{{10, 68, 0, 1}, true}, kNow);
  REQUIRE(o.reply);
  CHECK(o.reply->yiaddr == Ipv4{10, 70, 0, 10});
  CHECK(o.reply->giaddr == Ipv4{10, 70, 0, 1});
  CHECK(o.reply->server_id() == Ipv4{10, 68, 0, 1});
  CHECK(o.to.address == Ipv4{10, 70, 0, 1});
  CHECK(o.to.port == 67);
  CHECK_FALSE(o.to.broadcast);
  auto echoed = o.reply->relay_agent_info();
  REQUIRE(echoed);
  CHECK(std::vector<std::uint8_t>(echoed->begin(), echoed->end()) == rai);
  // Link selection (RFC 3527) overrides giaddr.
  Packet ls = client(MessageType::discover, 10);
  ls.giaddr = {10, 70, 0, 1};
  ls.options.set(opt::relay_agent_info, std::vector<std::uint8_t>{5, 4, 10, 69, 0, 0});
  auto l = e.handle(ls, Arrival{{10, 68, 0, 1}, true}, kNow);
  CHECK(l.reply->yiaddr == Ipv4{10, 69, 0, 100});
  // A relay for a subnet we do not serve: dropped, counted.
  Packet far = client(MessageType::discover, 11);
  far.giaddr = {172, 16, 0, 1};
  auto f = e.handle(far, Arrival{{10, 68, 0, 1}, true}, kNow);
  CHECK_FALSE(f.reply);
  CHECK(f.dropped == "no_subnet");
  // A relayed NAK goes to the relay with the broadcast bit set.
  Packet bad = client(MessageType::request, 12);
  bad.giaddr = {10, 70, 0, 1};
  bad.set_ipv4_option(opt::requested_ip, Ipv4{10, 70, 0, 15});
  auto n = e.handle(bad, Arrival{{10, 68, 0, 1}, true}, kNow);
  CHECK(n.reply->message_type() == MessageType::nak);
  CHECK(n.reply->broadcast());
  CHECK(n.to.address == Ipv4{10, 70, 0, 1});
  CHECK(n.to.port == 67);
}

TEST_CASE("client id (61) identifies the client, not the MAC") {
  DhcpEngine e(config());
  Packet a = client(MessageType::discover, 1);
  a.options.set(opt::client_id, std::vector<std::uint8_t>{0, 's', 'n', '1'});
  auto o1 = e.handle(a, direct(), kNow);
  Packet b = client(MessageType::discover, 2);  // another NIC, same client id
  b.options.set(opt::client_id, std::vector<std::uint8_t>{0, 's', 'n', '1'});
  auto o2 = e.handle(b, direct(), kNow);
  CHECK(o1.reply->yiaddr == o2.reply->yiaddr);
}

TEST_CASE("DECLINE rests the address; RELEASE frees it; INFORM gets options only") {
  DhcpEngine e(config());
  const Ipv4 a = bind(e, 1);
  Packet dec = client(MessageType::decline, 1);
  dec.set_ipv4_option(opt::server_id, kServer);
  dec.set_ipv4_option(opt::requested_ip, a);
  auto o = e.handle(dec, direct(), kNow);
  CHECK_FALSE(o.reply);
  REQUIRE(o.changes.size() == 1);
  CHECK(o.changes[0].state == LeaseState::declined);
  CHECK_FALSE(o.durable);
  // The declined address is not offered again, not even to the same client.
  auto again = e.handle(client(MessageType::discover, 1), direct(), kNow);
  CHECK(again.reply->yiaddr != a);

  const Ipv4 b = bind(e, 2);
  Packet rel = client(MessageType::release, 2);
  rel.ciaddr = b;
  rel.set_ipv4_option(opt::server_id, kServer);
  auto r = e.handle(rel, Arrival{kServer, true}, kNow);
  CHECK_FALSE(r.reply);
  CHECK(e.leases().by_address(to_u32(b))->state == LeaseState::released);
  // A release of someone else's address changes nothing.
  Packet forged = client(MessageType::release, 3);
  forged.ciaddr = a;
  CHECK(e.handle(forged, Arrival{kServer, true}, kNow).dropped == "release_not_bound");

  Packet inf = client(MessageType::inform, 4);
  inf.ciaddr = {10, 69, 0, 7};
  auto i = e.handle(inf, Arrival{kServer, true}, kNow);
  REQUIRE(i.reply);
  CHECK(i.reply->message_type() == MessageType::ack);
  CHECK(i.reply->yiaddr == Ipv4{});
  CHECK_FALSE(i.reply->lease_time());
  CHECK(i.reply->routers().size() == 1);
  CHECK(i.to.address == Ipv4{10, 69, 0, 7});
  CHECK(i.changes.empty());
}

TEST_CASE("allocation: sticky, requested, fresh first, then the longest-ended; never twice") {
  DhcpEngine e(config());  // 4 addresses in 10.69.0.100-103
  std::vector<Ipv4> got;
  for (std::uint8_t m = 1; m <= 4; ++m)
    got.push_back(bind(e, m));
  CHECK(got ==
        std::vector<Ipv4>{{10, 69, 0, 100}, {10, 69, 0, 101}, {10, 69, 0, 102}, {10, 69, 0, 103}});
  // Full: a fifth client gets nothing while all are bound.
  auto full = e.handle(client(MessageType::discover, 5), direct(), kNow);
  CHECK_FALSE(full.reply);
  CHECK(full.dropped == "pool_exhausted");
  // Once client 2's lease has ended, the fifth client may have it; client 2 then gets another
  // ended one, never the same address as client 5.
  const std::int64_t later = kNow + 601;
  auto o5 = e.handle(client(MessageType::discover, 5), direct(), later);
  REQUIRE(o5.reply);
  auto o2 = e.handle(client(MessageType::discover, 2), direct(), later);
  REQUIRE(o2.reply);
  CHECK(o2.reply->yiaddr == got[1]);  // sticky: client 2 first gets its own back
  CHECK(o5.reply->yiaddr != o2.reply->yiaddr);
  // A requested free address is honoured.
  DhcpEngine f(config());
  Packet want = client(MessageType::discover, 1);
  want.set_ipv4_option(opt::requested_ip, Ipv4{10, 69, 0, 102});
  CHECK(f.handle(want, direct(), kNow).reply->yiaddr == Ipv4{10, 69, 0, 102});
}

TEST_CASE("server messages and BOOTREPLYs sent to us are dropped") {
  DhcpEngine e(config());
  Packet p = client(MessageType::offer, 1);
  CHECK(e.handle(p, direct(), kNow).dropped == "server_message_type");
  Packet q = client(MessageType::discover, 1);
  q.op = Op::boot_reply;
  CHECK(e.handle(q, direct(), kNow).dropped == "not_a_request");
}
