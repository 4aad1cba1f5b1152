// The DHCPv4 codec: byte-exact round trips of hand-built client packets, typed accessors,
// every reason a packet is dropped, option overload (RFC 2132 §9.3), RFC 3396 concatenation
// and splitting, the serializer's fixed order and padding, and packets captured from busybox
// udhcpc.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <string>

#include "modules/netboot/dhcp_packet.hpp"
#include "tests/unit/modules/netboot/dhcp_test_support.hpp"

namespace {

namespace nb = neco::netboot;
using namespace neco::netboot::testing;
using nb::MessageType;
using nb::ParseErrc;

nb::Packet parse_ok(const Bytes& bytes) {
  auto p = nb::parse(bytes);
  INFO((p ? std::string() : std::string(p.error().message)));
  REQUIRE(p.has_value());
  return *p;
}

nb::ParseError parse_err(const Bytes& bytes, const nb::ParseLimits& limits = {}) {
  auto p = nb::parse(bytes, limits);
  REQUIRE_FALSE(p.has_value());
  CHECK_FALSE(p.error().message.empty());
  return p.error();
}

Bytes bytes_of(nb::ByteView v) {
  return Bytes(v.begin(), v.end());
}

// A minimal valid DISCOVER to corrupt in the malformed cases.
Bytes minimal_discover() {
  Header h;
  h.xid = 1;
  h.mac = kMac;
  return packet(h, {option(53, {1})});
}

}  // namespace

TEST_CASE("hand-built client packets round-trip byte for byte", "[netboot][dhcp]") {
  const std::pair<const char*, Bytes> cases[] = {
      {"BIOS PXE DISCOVER", bios_pxe_discover()},
      {"UEFI HTTP DISCOVER", uefi_http_discover()},
      {"iPXE DISCOVER", ipxe_discover()},
      {"relayed REQUEST", relayed_request()},
      {"INFORM", inform()},
      {"RELEASE", release()},
      {"DECLINE", decline()},
  };
  for (const auto& [name, bytes] : cases) {
    SECTION(name) {
      const auto p = parse_ok(bytes);
      CHECK(nb::serialize(p) == bytes);
      // serialize → parse → serialize is the identity.
      const auto again = parse_ok(nb::serialize(p));
      CHECK(again == p);
      CHECK(nb::serialize(again) == bytes);
    }
  }
}

TEST_CASE("a BIOS PXE DISCOVER reads as such", "[netboot][dhcp]") {
  const auto p = parse_ok(bios_pxe_discover());
  CHECK(p.op == nb::Op::boot_request);
  CHECK(p.message_type() == MessageType::discover);
  CHECK(p.xid == 0x2e5d1a4c);
  CHECK(p.secs == 4);
  CHECK(p.broadcast());
  CHECK(p.hardware_address_string() == "52:54:00:12:34:56");
  CHECK(p.max_message_size() == 1260);
  CHECK(p.vendor_class() == "PXEClient:Arch:00000:UNDI:002001");
  CHECK(p.client_arch() == std::vector<std::uint16_t>{0});
  REQUIRE(p.client_machine_id());
  CHECK(p.client_machine_id()->size() == 17);
  CHECK((*p.client_machine_id())[0] == 0);
  REQUIRE(p.parameter_request_list());
  CHECK(p.parameter_request_list()->size() == 24);
  CHECK_FALSE(p.client_id());
  // Without option 61 the client key is htype followed by the MAC.
  CHECK(p.client_key() == Bytes{0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56});
  CHECK(p.user_classes().empty());
  CHECK_FALSE(p.ipxe_options());
  CHECK(p.sname.empty());
  CHECK(p.file.empty());
}

TEST_CASE("a UEFI HTTP boot DISCOVER reads as such", "[netboot][dhcp]") {
  const auto p = parse_ok(uefi_http_discover());
  CHECK(p.vendor_class() == "HTTPClient:Arch:00016:UNDI:003001");
  CHECK(p.client_arch() == std::vector<std::uint16_t>{0x10});
  CHECK(p.max_message_size() == 1472);
  CHECK_FALSE(p.broadcast());
}

TEST_CASE("an iPXE DISCOVER carries user class iPXE and option 175", "[netboot][dhcp]") {
  const auto p = parse_ok(ipxe_discover());
  CHECK(p.user_classes() == std::vector<std::string_view>{"iPXE"});
  CHECK(p.has_user_class("iPXE"));
  REQUIRE(p.ipxe_options());
  const auto subs = nb::parse_suboptions(*p.ipxe_options());
  REQUIRE(subs);
  REQUIRE(subs->size() == 7);
  CHECK((*subs)[0].code == 0xb1);  // bus id
  CHECK(bytes_of((*subs)[0].data) == Bytes{0x01, 0x80, 0x86, 0x10, 0x0e});
  REQUIRE(p.client_id());
  // Option 61 holds htype+MAC, so the key equals the fallback key of the BIOS DISCOVER.
  CHECK(p.client_key() == parse_ok(bios_pxe_discover()).client_key());
}

TEST_CASE("a relayed REQUEST keeps option 82 and reads its link selection", "[netboot][dhcp]") {
  const auto bytes = relayed_request();
  const auto p = parse_ok(bytes);
  CHECK(p.message_type() == MessageType::request);
  CHECK(p.hops == 1);
  CHECK(p.giaddr == nb::Ipv4{10, 1, 2, 1});
  CHECK(p.requested_ip() == nb::Ipv4{10, 1, 3, 50});
  CHECK(p.server_id() == nb::Ipv4{10, 0, 0, 1});
  CHECK(p.hostname() == "node-17");
  REQUIRE(p.relay_agent_info());
  CHECK(bytes_of(*p.relay_agent_info()) == relay_info_value());
  CHECK(p.link_selection() == nb::Ipv4{10, 1, 3, 0});

  // A reply built from it echoes option 82 unchanged, as the last option.
  nb::Packet reply;
  reply.op = nb::Op::boot_reply;
  reply.xid = p.xid;
  reply.giaddr = p.giaddr;
  reply.chaddr = p.chaddr;
  reply.set_message_type(MessageType::ack);
  reply.options.set(nb::opt::relay_agent_info, *p.relay_agent_info());
  reply.set_ipv4_option(nb::opt::server_id, {10, 0, 0, 1});
  const auto out = nb::serialize(reply);
  const auto info = relay_info_value();
  const auto end = std::find(out.begin() + 240, out.end(), std::uint8_t{255});
  REQUIRE(end - out.begin() > static_cast<std::ptrdiff_t>(info.size() + 2));
  CHECK(Bytes(end - static_cast<std::ptrdiff_t>(info.size() + 2), end) ==
        concat({Bytes{82, static_cast<std::uint8_t>(info.size())}, info}));
}

TEST_CASE("INFORM, RELEASE and DECLINE read as such", "[netboot][dhcp]") {
  const auto i = parse_ok(inform());
  CHECK(i.message_type() == MessageType::inform);
  CHECK(i.ciaddr == nb::Ipv4{10, 1, 3, 50});
  const auto r = parse_ok(release());
  CHECK(r.message_type() == MessageType::release);
  CHECK(r.server_id() == nb::Ipv4{10, 0, 0, 1});
  const auto d = parse_ok(decline());
  CHECK(d.message_type() == MessageType::decline);
  CHECK(d.requested_ip() == nb::Ipv4{10, 1, 3, 50});
}

TEST_CASE("a reply built with the setters serializes in the fixed order", "[netboot][dhcp]") {
  nb::Packet reply;
  reply.op = nb::Op::boot_reply;
  reply.xid = 0x2e5d1a4c;
  reply.flags = nb::Packet::kBroadcastFlag;
  reply.yiaddr = {10, 1, 3, 50};
  reply.siaddr = {10, 0, 0, 1};
  reply.chaddr = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  reply.file = "undionly.kpxe";
  reply.sname = "boot-1";
  const std::array<nb::Ipv4, 2> dns = {nb::Ipv4{10, 0, 0, 53}, nb::Ipv4{10, 0, 1, 53}};
  // Inserted out of order on purpose.
  reply.set_string_option(nb::opt::bootfile_name, "undionly.kpxe");
  reply.set_u32_option(nb::opt::rebinding_time, 3150);
  reply.set_ipv4_list_option(nb::opt::dns_servers, dns);
  reply.set_u32_option(nb::opt::lease_time, 3600);
  reply.set_ipv4_option(nb::opt::server_id, {10, 0, 0, 1});
  reply.set_string_option(nb::opt::domain_name, "dc1.example");
  reply.set_ipv4_list_option(nb::opt::router, std::array<nb::Ipv4, 1>{nb::Ipv4{10, 1, 3, 1}});
  reply.set_u32_option(nb::opt::renewal_time, 1800);
  reply.set_ipv4_option(nb::opt::subnet_mask, {255, 255, 255, 0});
  reply.set_string_option(nb::opt::tftp_server_name, "10.0.0.1");
  reply.set_message_type(MessageType::offer);

  Header h;
  h.op = 2;
  h.xid = 0x2e5d1a4c;
  h.flags = 0x8000;
  h.yiaddr = {10, 1, 3, 50};
  h.siaddr = {10, 0, 0, 1};
  h.mac = kMac;
  Bytes expected = header(h);
  const std::string sname = "boot-1", file = "undionly.kpxe";
  std::copy(sname.begin(), sname.end(), expected.begin() + 44);
  std::copy(file.begin(), file.end(), expected.begin() + 108);
  expected =
      concat({expected, option(53, {2}), option(1, {255, 255, 255, 0}), option(3, {10, 1, 3, 1}),
              option(6, {10, 0, 0, 53, 10, 0, 1, 53}), text_option(15, "dc1.example"),
              option(51, {0, 0, 0x0e, 0x10}), option(54, {10, 0, 0, 1}),
              option(58, {0, 0, 0x07, 0x08}), option(59, {0, 0, 0x0c, 0x4e}),
              text_option(66, "10.0.0.1"), text_option(67, "undionly.kpxe"), Bytes{255}});
  REQUIRE(expected.size() > 300);  // no padding then
  const auto out = nb::serialize(reply);
  CHECK(out == expected);

  const auto p = parse_ok(out);
  CHECK(p == reply);
  CHECK(p.subnet_mask() == nb::Ipv4{255, 255, 255, 0});
  CHECK(p.routers() == std::vector<nb::Ipv4>{nb::Ipv4{10, 1, 3, 1}});
  CHECK(p.dns_servers() == std::vector<nb::Ipv4>(dns.begin(), dns.end()));
  CHECK(p.domain_name() == "dc1.example");
  CHECK(p.lease_time() == 3600u);
  CHECK(p.renewal_time() == 1800u);
  CHECK(p.rebinding_time() == 3150u);
  CHECK(p.tftp_server_name() == "10.0.0.1");
  CHECK(p.bootfile_name() == "undionly.kpxe");
  CHECK(p.file == "undionly.kpxe");
  CHECK(p.sname == "boot-1");
  CHECK(nb::to_string(*p.server_id()) == "10.0.0.1");
}

TEST_CASE("the same options in any insertion order give the same bytes", "[netboot][dhcp]") {
  nb::Packet a, b;
  a.set_message_type(MessageType::ack);
  a.options.set(nb::opt::relay_agent_info, relay_info_value());
  a.set_u32_option(nb::opt::lease_time, 60);
  a.set_string_option(nb::opt::hostname, "h");
  b.set_string_option(nb::opt::hostname, "h");
  b.set_u32_option(nb::opt::lease_time, 60);
  b.options.set(nb::opt::relay_agent_info, relay_info_value());
  b.set_message_type(MessageType::ack);
  const auto out = nb::serialize(a);
  CHECK(out == nb::serialize(b));
  CHECK(out[240] == 53);  // message type first
  CHECK(out[243] == 12);  // then by code
  CHECK(out[246] == 51);
  CHECK(out[252] == 82);  // relay agent information last
}

TEST_CASE("serialize pads to the BOOTP minimum and grows past it", "[netboot][dhcp]") {
  nb::Packet p;
  p.set_message_type(MessageType::discover);
  auto out = nb::serialize(p);
  REQUIRE(out.size() == 300);
  CHECK(out[240] == 53);
  CHECK(out[243] == 255);
  CHECK(std::all_of(out.begin() + 244, out.end(), [](auto c) { return c == 0; }));

  p.set_string_option(nb::opt::domain_name, std::string(100, 'd'));
  out = nb::serialize(p);
  CHECK(out.size() == 240 + 3 + 102 + 1);
  CHECK(out.back() == 255);
}

TEST_CASE("PAD is skipped, what follows END is ignored, a missing END is tolerated",
          "[netboot][dhcp]") {
  Header h;
  h.mac = kMac;
  const auto padded = packet(h,
                             {Bytes{0, 0}, option(53, {1}), Bytes{0}, text_option(12, "x"),
                              Bytes{255}, option(53, {2}), Bytes{0x41, 0x42}},
                             false);
  const auto p = parse_ok(padded);
  CHECK(p.message_type() == MessageType::discover);
  CHECK(p.hostname() == "x");
  CHECK(p.options.size() == 2);

  const auto no_end = packet(h, {option(53, {1}), text_option(12, "x")}, false);
  CHECK(parse_ok(no_end) == p);
  // Both serialize to the canonical form.
  CHECK(nb::serialize(parse_ok(no_end)) == packet(h, {option(53, {1}), text_option(12, "x")}));
}

TEST_CASE("options in a real ROM's order parse like the canonical ones", "[netboot][dhcp]") {
  Header h;
  h.xid = 0x2e5d1a4c;
  h.secs = 4;
  h.flags = 0x8000;
  h.mac = kMac;
  // Intel PXE ROMs send 53, 57, 55, 97, 94, 93, 60, END, then pad to 548 bytes.
  auto rom = packet(h, {option(53, {1}), option(57, {0x04, 0xec}), pxe_prl(), machine_id(),
                        option(94, {0x01, 0x02, 0x01}), option(93, {0x00, 0x00}),
                        text_option(60, "PXEClient:Arch:00000:UNDI:002001")});
  rom.resize(548, 0);
  const auto p = parse_ok(rom);
  CHECK(p == parse_ok(bios_pxe_discover()));
  CHECK(nb::serialize(p) == bios_pxe_discover());
}

TEST_CASE("malformed packets are dropped with their reason", "[netboot][dhcp]") {
  const Bytes good = minimal_discover();
  REQUIRE(nb::parse(good).has_value());

  SECTION("truncated header") {
    CHECK(parse_err(Bytes(good.begin(), good.begin() + 239)).reason == ParseErrc::truncated_header);
    CHECK(parse_err(Bytes{}).reason == ParseErrc::truncated_header);
    CHECK(parse_err(Bytes(100, 0)).message.find("100 bytes") != std::string::npos);
  }
  SECTION("too long") {
    Bytes big = good;
    big.resize(1473, 0);
    const auto e = parse_err(big);
    CHECK(e.reason == ParseErrc::too_long);
    CHECK(e.message.find("1473") != std::string::npos);
    big.resize(1472);
    CHECK(nb::parse(big).has_value());
    // The limit is configurable.
    CHECK(parse_err(good, nb::ParseLimits{.max_size = 299}).reason == ParseErrc::too_long);
    CHECK(nb::parse(big, nb::ParseLimits{.max_size = 9000}).has_value());
  }
  SECTION("bad op") {
    Bytes b = good;
    b[0] = 3;
    CHECK(parse_err(b).reason == ParseErrc::bad_op);
    b[0] = 0;
    CHECK(parse_err(b).reason == ParseErrc::bad_op);
  }
  SECTION("hlen above 16") {
    Bytes b = good;
    b[2] = 17;
    const auto e = parse_err(b);
    CHECK(e.reason == ParseErrc::bad_hlen);
    CHECK(e.message.find("17") != std::string::npos);
    b[2] = 16;
    CHECK(nb::parse(b)->hardware_address().size() == 16);
  }
  SECTION("wrong magic cookie") {
    Bytes b = good;
    b[239] = 0x62;
    const auto e = parse_err(b);
    CHECK(e.reason == ParseErrc::bad_magic);
    CHECK(e.message.find("99.130.83.98") != std::string::npos);
    std::fill(b.begin() + 236, b.begin() + 240, 0);  // plain BOOTP
    CHECK(parse_err(b).reason == ParseErrc::bad_magic);
  }
  SECTION("an option runs past the end") {
    Header h;
    auto b = packet(h, {option(53, {1}), Bytes{12, 10, 'a', 'b'}}, false);
    auto e = parse_err(b);
    CHECK(e.reason == ParseErrc::option_overrun);
    CHECK(e.message.find("option 12 at offset 243") != std::string::npos);
    // A code with no length byte at the very end.
    b = packet(h, {option(53, {1}), Bytes{12}}, false);
    e = parse_err(b);
    CHECK(e.reason == ParseErrc::option_overrun);
    CHECK(e.message.find("no length byte") != std::string::npos);
    // The length byte of the last option is the last byte.
    b = packet(h, {option(53, {1}), Bytes{12, 1}}, false);
    CHECK(parse_err(b).reason == ParseErrc::option_overrun);
  }
  SECTION("missing message type") {
    Header h;
    const auto e = parse_err(packet(h, {text_option(12, "x")}));
    CHECK(e.reason == ParseErrc::missing_message_type);
    CHECK(parse_err(packet(h, {})).reason == ParseErrc::missing_message_type);
  }
  SECTION("duplicate message type") {
    Header h;
    const auto e = parse_err(packet(h, {option(53, {1}), option(53, {3})}));
    CHECK(e.reason == ParseErrc::duplicate_message_type);
    CHECK(e.message.find("2 times") != std::string::npos);
  }
  SECTION("invalid message type") {
    Header h;
    for (const std::uint8_t v : {0, 9, 13, 255}) {
      const auto e = parse_err(packet(h, {option(53, {v})}));
      CHECK(e.reason == ParseErrc::bad_message_type);
      CHECK(e.message.find(std::to_string(v)) != std::string::npos);
    }
    CHECK(parse_err(packet(h, {option(53, {1, 1})})).reason == ParseErrc::bad_message_type);
    CHECK(parse_err(packet(h, {Bytes{53, 0}})).reason == ParseErrc::bad_message_type);
  }
  SECTION("typed options with impossible lengths") {
    Header h;
    const std::pair<Bytes, const char*> cases[] = {
        {option(50, {10, 1, 3}), "option 50 (requested IP) has length 3, expected 4"},
        {option(54, {10, 0, 0, 1, 0}), "option 54"},
        {option(1, {255, 255, 255}), "option 1"},
        {option(3, {10, 1, 3, 1, 1}), "option 3 (router) has length 5, expected a multiple of 4"},
        {Bytes{6, 0}, "option 6"},
        {option(51, {0, 0}), "option 51"},
        {option(58, {0}), "option 58"},
        {option(59, {0, 0, 0, 0, 0}), "option 59"},
        {option(57, {2, 64, 0}), "option 57"},
        {option(61, {1}), "option 61 (client identifier) has length 1, expected at least 2"},
        {option(93, {0, 7, 0}), "option 93"},
        {Bytes{97, 0}, "option 97"},
    };
    for (const auto& [opt, text] : cases) {
      INFO(text);
      const auto e = parse_err(packet(h, {option(53, {1}), opt}));
      CHECK(e.reason == ParseErrc::bad_option);
      CHECK(e.message.find(text) != std::string::npos);
    }
  }
  SECTION("every reason has a stable name") {
    CHECK(nb::to_string(ParseErrc::option_overrun) == "option_overrun");
    const auto err = nb::to_error(parse_err(Bytes{}));
    CHECK(err.code == neco::Errc::invalid_argument);
    CHECK(err.message.find("truncated_header") != std::string::npos);
  }
}

TEST_CASE("option overload folds sname and file into the options", "[netboot][dhcp]") {
  Header h;
  h.xid = 7;
  h.mac = kMac;
  // 52 = 3: options field, then file, then sname. Option 60 starts in the options field and
  // continues in file (RFC 3396), option 12 sits in sname, option 67 in file.
  Bytes b = packet(h, {option(53, {1}), option(52, {3}), text_option(60, "PXEClient:")}, false);
  b.push_back(255);
  const auto in_file = concat({text_option(60, "Arch:00000"), text_option(67, "f"), Bytes{255}});
  const auto in_sname = concat({Bytes{0, 0}, text_option(12, "host"), Bytes{255}});
  std::copy(in_file.begin(), in_file.end(), b.begin() + 108);
  std::copy(in_sname.begin(), in_sname.end(), b.begin() + 44);

  const auto p = parse_ok(b);
  CHECK(p.vendor_class() == "PXEClient:Arch:00000");
  CHECK(p.hostname() == "host");
  CHECK(p.bootfile_name() == "f");
  CHECK(p.sname.empty());
  CHECK(p.file.empty());
  CHECK_FALSE(p.options.has(nb::opt::overload));  // consumed

  // Serialized without overload, everything in the options field; parses back equal.
  const auto out = nb::serialize(p);
  CHECK(std::all_of(out.begin() + 44, out.begin() + 236, [](auto c) { return c == 0; }));
  CHECK(parse_ok(out) == p);

  SECTION("file only: sname stays a server name") {
    Bytes c = b;
    c[245] = 1;  // 52 = 1
    std::fill(c.begin() + 44, c.begin() + 108, 0);
    const std::string name = "tftp-1";
    std::copy(name.begin(), name.end(), c.begin() + 44);
    const auto q = parse_ok(c);
    CHECK(q.sname == "tftp-1");
    CHECK(q.file.empty());
    CHECK(q.vendor_class() == "PXEClient:Arch:00000");
    CHECK_FALSE(q.hostname());
  }
  SECTION("sname only: file stays a file name") {
    Bytes c = b;
    c[245] = 2;  // 52 = 2
    std::fill(c.begin() + 108, c.begin() + 236, 0);
    const std::string file = "pxelinux.0";
    std::copy(file.begin(), file.end(), c.begin() + 108);
    const auto q = parse_ok(c);
    CHECK(q.file == "pxelinux.0");
    CHECK(q.hostname() == "host");
    CHECK(q.vendor_class() == "PXEClient:");
  }
  SECTION("the message type may sit in file") {
    Bytes c = packet(h, {option(52, {1})});
    const auto t = concat({option(53, {3}), Bytes{255}});
    std::copy(t.begin(), t.end(), c.begin() + 108);
    CHECK(parse_ok(c).message_type() == MessageType::request);
  }
  SECTION("malformed overload") {
    for (const auto& bad : {option(52, {0}), option(52, {4}), option(52, {1, 1}), Bytes{52, 0}}) {
      const auto e = parse_err(packet(h, {option(53, {1}), bad}));
      CHECK(e.reason == ParseErrc::bad_overload);
    }
    CHECK(parse_err(packet(h, {option(53, {1}), option(52, {1}), option(52, {1})})).reason ==
          ParseErrc::bad_overload);
    // Option 52 inside the overloaded file field.
    Bytes c = packet(h, {option(53, {1}), option(52, {1})});
    const auto inner = concat({option(52, {2}), Bytes{255}});
    std::copy(inner.begin(), inner.end(), c.begin() + 108);
    CHECK(parse_err(c).reason == ParseErrc::bad_overload);
  }
  SECTION("an option overrunning the file field") {
    Bytes c = packet(h, {option(53, {1}), option(52, {1})});
    c[108 + 126] = 12;
    c[108 + 127] = 5;  // 5 bytes announced, none left in file
    const auto e = parse_err(c);
    CHECK(e.reason == ParseErrc::option_overrun);
    CHECK(e.message.find("file area") != std::string::npos);
  }
}

TEST_CASE("RFC 3396: repeated options concatenate, long ones are split", "[netboot][dhcp]") {
  Header h;
  h.mac = kMac;
  SECTION("instances are joined in order, even when not adjacent") {
    const auto p = parse_ok(packet(h, {option(53, {1}), text_option(60, "PXE"),
                                       text_option(12, "n"), text_option(60, "Client")}));
    CHECK(p.vendor_class() == "PXEClient");
    CHECK(nb::serialize(p) ==
          packet(h, {option(53, {1}), text_option(12, "n"), text_option(60, "PXEClient")}));
  }
  SECTION("a fixed-size option split in two is checked after joining") {
    const auto p = parse_ok(packet(h, {option(53, {1}), option(50, {10, 1}), option(50, {3, 50})}));
    CHECK(p.requested_ip() == nb::Ipv4{10, 1, 3, 50});
  }
  SECTION("values over 255 bytes become consecutive instances") {
    nb::Packet p;
    p.set_message_type(MessageType::ack);
    Bytes big(600);
    for (std::size_t i = 0; i < big.size(); ++i)
      big[i] = static_cast<std::uint8_t>(i);
    p.options.set(nb::opt::vendor_specific, big);
    p.options.set(nb::opt::relay_agent_info, Bytes(256, 0x5a));
    const auto out = nb::serialize(p);
    // 53, then 43 as 255 + 255 + 90, then 82 as 255 + 1.
    std::size_t at = 243;
    for (const std::size_t n : {255u, 255u, 90u}) {
      CHECK(out[at] == 43);
      CHECK(out[at + 1] == n);
      at += 2 + n;
    }
    CHECK(out[at] == 82);
    CHECK(out[at + 1] == 255);
    at += 2 + 255;
    CHECK(out[at] == 82);
    CHECK(out[at + 1] == 1);
    CHECK(out[at + 3] == 255);
    CHECK(out.size() == at + 4);
    const auto q = nb::parse(out, nb::ParseLimits{.max_size = 4096});
    REQUIRE(q);
    CHECK(bytes_of(*q->options.get(nb::opt::vendor_specific)) == big);
    CHECK(*q == p);
    CHECK(nb::serialize(*q) == out);
  }
  SECTION("an empty option is kept as an empty value") {
    const auto bytes = packet(h, {option(53, {1}), Bytes{80, 0}});  // rapid commit
    const auto p = parse_ok(bytes);
    REQUIRE(p.options.get(80));
    CHECK(p.options.get(80)->empty());
    CHECK(nb::serialize(p) == bytes);
  }
}

TEST_CASE("option accessors", "[netboot][dhcp]") {
  nb::Packet p;
  SECTION("user class in RFC 3004 form and iPXE's plain form") {
    p.options.set(nb::opt::user_class, Bytes{4, 'i', 'P', 'X', 'E', 3, 'f', 'o', 'o'});
    CHECK(p.user_classes() == std::vector<std::string_view>{"iPXE", "foo"});
    CHECK(p.has_user_class("iPXE"));
    p.set_string_option(nb::opt::user_class, "iPXE");
    CHECK(p.user_classes() == std::vector<std::string_view>{"iPXE"});
    p.set_string_option(nb::opt::user_class, "iPXE-custom");
    CHECK_FALSE(p.has_user_class("iPXE"));
    p.options.set(nb::opt::user_class, Bytes{0, 'x'});  // zero-length entry: not RFC 3004
    CHECK(p.user_classes().size() == 1);
    p.options.set(nb::opt::user_class, Bytes{});
    CHECK(p.user_classes().empty());
  }
  SECTION("client key prefers option 61") {
    p.htype = 1;
    p.hlen = 6;
    std::copy(kMac.begin(), kMac.end(), p.chaddr.begin());
    CHECK(p.client_key() == Bytes{1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56});
    p.options.set(nb::opt::client_id, Bytes{0xff, 1, 2, 3, 4});
    CHECK(p.client_key() == Bytes{0xff, 1, 2, 3, 4});
  }
  SECTION("client arch lists every entry") {
    p.options.set(nb::opt::client_arch, Bytes{0, 7, 0, 0x10});
    CHECK(p.client_arch() == std::vector<std::uint16_t>{7, 0x10});
  }
  SECTION("strings drop trailing NULs some clients send") {
    p.options.set(nb::opt::hostname, Bytes{'h', 'o', 's', 't', 0});
    CHECK(p.hostname() == "host");
  }
  SECTION("link selection needs well-formed sub-options") {
    CHECK_FALSE(p.link_selection());
    p.options.set(nb::opt::relay_agent_info, concat({option(1, {1}), option(5, {10, 9, 8, 0})}));
    CHECK(p.link_selection() == nb::Ipv4{10, 9, 8, 0});
    p.options.set(nb::opt::relay_agent_info, Bytes{1, 5, 0});  // runs past the end
    CHECK_FALSE(p.link_selection());
    p.options.set(nb::opt::relay_agent_info, option(5, {10, 9, 8}));
    CHECK_FALSE(p.link_selection());
  }
  SECTION("broadcast flag and message type names") {
    p.flags = 0x0001;
    p.set_broadcast(true);
    CHECK(p.flags == 0x8001);
    p.set_broadcast(false);
    CHECK(p.flags == 0x0001);
    CHECK(nb::to_string(MessageType::inform) == "INFORM");
    CHECK_FALSE(p.message_type());
  }
  SECTION("sname and file without a NUL use the whole field") {
    Bytes b = minimal_discover();
    std::fill(b.begin() + 44, b.begin() + 108, 'S');
    std::fill(b.begin() + 108, b.begin() + 236, 'F');
    const auto q = parse_ok(b);
    CHECK(q.sname == std::string(64, 'S'));
    CHECK(q.file == std::string(128, 'F'));
    CHECK(nb::serialize(q) == b);
    // Longer strings are cut to the field when serialized.
    auto r = q;
    r.file = std::string(200, 'G');
    CHECK(parse_ok(nb::serialize(r)).file == std::string(128, 'G'));
  }
}

TEST_CASE("packets captured from busybox udhcpc parse and re-serialize", "[netboot][dhcp]") {
  const auto dir = kData / "fixtures";
  std::size_t seen = 0;
  if (std::filesystem::is_directory(dir)) {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() != ".bin") continue;
      ++seen;
      INFO(e.path().filename().string());
      const auto bytes = read_file(e.path());
      const auto p = parse_ok(bytes);
      CHECK(p.op == nb::Op::boot_request);
      CHECK(p.message_type().has_value());
      CHECK(p.hardware_address_string() == "02:00:00:0d:c0:01");
      const auto out = nb::serialize(p);
      CHECK(parse_ok(out) == p);
      CHECK(nb::serialize(parse_ok(out)) == out);
    }
  }
  SUCCEED("replayed " << seen << " captured packets");

  // What the capture asked udhcpc for: -V PXEClient -x 0x4d:69505845 -x hostname:capture.
  const auto discover = dir / "udhcpc-0-discover.bin";
  if (std::filesystem::exists(discover)) {
    const auto p = parse_ok(read_file(discover));
    CHECK(p.message_type() == MessageType::discover);
    CHECK(p.vendor_class() == "PXEClient");
    CHECK(p.has_user_class("iPXE"));
    CHECK(p.hostname() == "capture");
    CHECK(p.client_key() == Bytes{0x01, 0x02, 0x00, 0x00, 0x0d, 0xc0, 0x01});
    CHECK(p.max_message_size() == 576);
  }
  const auto request = dir / "udhcpc-1-request.bin";
  if (std::filesystem::exists(request)) {
    const auto p = parse_ok(read_file(request));
    CHECK(p.message_type() == MessageType::request);
    CHECK(p.requested_ip() == nb::Ipv4{192, 0, 2, 50});
    CHECK(p.server_id() == nb::Ipv4{192, 0, 2, 1});
  }
}

TEST_CASE("the fuzz seed corpus: valid seeds parse, bad_* seeds are dropped", "[netboot][dhcp]") {
  const auto dir = kData / "../../../fuzz/corpus/dhcp";
  std::size_t seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    ++seen;
    const auto name = e.path().filename().string();
    INFO(name);
    const auto p = nb::parse(read_file(e.path()));
    CHECK(p.has_value() == (name.rfind("bad_", 0) != 0));
  }
  CHECK(seen >= 10);
}
