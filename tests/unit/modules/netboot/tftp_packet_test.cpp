// The TFTP codec: every packet type parsed from hand-written bytes and serialized back byte for
// byte, every reason a packet is dropped, and the server side of option negotiation.
#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "modules/netboot/tftp_packet.hpp"
#include "tests/unit/modules/netboot/tftp_test_support.hpp"

namespace {

using namespace neco::netboot::tftp;
using namespace neco::netboot::tftp::testing;

Packet parse_ok(const Bytes& bytes) {
  auto p = parse(bytes);
  INFO((p ? std::string() : p.error().message));
  REQUIRE(p.has_value());
  return *p;
}

ParseError parse_err(const Bytes& bytes) {
  auto p = parse(bytes);
  REQUIRE_FALSE(p.has_value());
  CHECK_FALSE(p.error().message.empty());
  return p.error();
}

// Parses, checks the type, and checks serialize gives the same bytes back.
template <class T>
T round_trip(const Bytes& bytes) {
  const Packet p = parse_ok(bytes);
  REQUIRE(std::holds_alternative<T>(p));
  CHECK(serialize(p) == bytes);
  return std::get<T>(p);
}

}  // namespace

TEST_CASE("RRQ without options round-trips", "[netboot][tftp]") {
  const Bytes bytes = cat({u16(1), z("undionly.kpxe"), z("octet")});
  const auto r = round_trip<Request>(bytes);
  CHECK(r.opcode == Opcode::rrq);
  CHECK(r.filename == "undionly.kpxe");
  CHECK(r.mode == Mode::octet);
  CHECK(r.options.empty());
  CHECK(opcode_of(Packet(r)) == Opcode::rrq);
}

TEST_CASE("RRQ with options keeps their order and spelling", "[netboot][tftp]") {
  const Bytes bytes = cat({u16(1), z("ipxe.efi"), z("octet"), z("BLKSIZE"), z("1468"), z("tsize"),
                           z("0"), z("Timeout"), z("5"), z("windowsize"), z("8")});
  const auto r = round_trip<Request>(bytes);
  REQUIRE(r.options.size() == 4);
  CHECK(r.options[0] == Option{"BLKSIZE", "1468"});
  CHECK(r.options[1] == Option{"tsize", "0"});
  CHECK(r.options[2] == Option{"Timeout", "5"});
  CHECK(r.options[3] == Option{"windowsize", "8"});  // unknown: kept, ignored by negotiate()
  CHECK(r.option("blksize") == "1468");
  CHECK(r.option("TIMEOUT") == "5");
  CHECK_FALSE(r.option("multicast").has_value());
}

TEST_CASE("modes are matched case-insensitively and written in lower case", "[netboot][tftp]") {
  CHECK(std::get<Request>(parse_ok(request("f", "OCTET"))).mode == Mode::octet);
  CHECK(std::get<Request>(parse_ok(request("f", "NetAscii"))).mode == Mode::netascii);
  CHECK(std::get<Request>(parse_ok(request("f", "mail"))).mode == Mode::mail);
  CHECK(serialize(parse_ok(request("f", "OCTET"))) == request("f", "octet"));
}

TEST_CASE("WRQ round-trips", "[netboot][tftp]") {
  const auto r = round_trip<Request>(cat({u16(2), z("upload.bin"), z("octet")}));
  CHECK(r.opcode == Opcode::wrq);
  CHECK(r.filename == "upload.bin");
}

TEST_CASE("NUL padding after a request's last string is ignored", "[netboot][tftp]") {
  const auto p = parse_ok(cat({request("f", "octet", {{"blksize", "512"}}), Bytes(6, 0)}));
  const auto& r = std::get<Request>(p);
  CHECK(r.options.size() == 1);
  CHECK(serialize(p) == request("f", "octet", {{"blksize", "512"}}));
}

TEST_CASE("DATA round-trips, full, short and empty", "[netboot][tftp]") {
  const Bytes payload = random_bytes(512, 1);
  auto d = round_trip<Data>(cat({u16(3), u16(1), payload}));
  CHECK(d.block == 1);
  CHECK(d.payload == payload);
  d = round_trip<Data>(cat({u16(3), u16(0xffff), raw("abc")}));
  CHECK(d.block == 0xffff);
  CHECK(d.payload == raw("abc"));
  d = round_trip<Data>(cat({u16(3), u16(0)}));
  CHECK(d.block == 0);
  CHECK(d.payload.empty());
  CHECK(serialize(Data{7, raw("xy")}) == Bytes{0, 3, 0, 7, 'x', 'y'});
}

TEST_CASE("write_data_header writes opcode 3 and the block number", "[netboot][tftp]") {
  std::array<std::uint8_t, kDataHeaderSize> h{};
  write_data_header(h, 0x1234);
  CHECK(h == std::array<std::uint8_t, 4>{0, 3, 0x12, 0x34});
}

TEST_CASE("ACK round-trips; bytes after the block number are ignored", "[netboot][tftp]") {
  CHECK(round_trip<Ack>(cat({u16(4), u16(0)})).block == 0);
  CHECK(round_trip<Ack>(cat({u16(4), u16(513)})).block == 513);
  const auto p = parse_ok(cat({u16(4), u16(9), Bytes{0, 0}}));
  CHECK(std::get<Ack>(p).block == 9);
  CHECK(serialize(p) == ack(9));
}

TEST_CASE("ERROR round-trips; a message without NUL is still an ERROR", "[netboot][tftp]") {
  auto e = round_trip<ErrorPacket>(cat({u16(5), u16(1), z("File not found")}));
  CHECK(e.code == 1);
  CHECK(e.message == "File not found");
  e = round_trip<ErrorPacket>(cat({u16(5), u16(8), z("")}));
  CHECK(e.code == 8);
  CHECK(e.message.empty());
  // Unknown codes are kept as received.
  CHECK(round_trip<ErrorPacket>(cat({u16(5), u16(99), z("x")})).code == 99);
  // No NUL: the rest of the packet is the message.
  const auto p = parse_ok(cat({u16(5), u16(0), raw("cancelled")}));
  CHECK(std::get<ErrorPacket>(p).message == "cancelled");
  CHECK(serialize(p) == cat({u16(5), u16(0), z("cancelled")}));
  // No message at all.
  CHECK(std::get<ErrorPacket>(parse_ok(cat({u16(5), u16(4)}))).message.empty());
  CHECK(serialize(ErrorPacket{2, "no"}) == Bytes{0, 5, 0, 2, 'n', 'o', 0});
}

TEST_CASE("OACK round-trips", "[netboot][tftp]") {
  const auto o =
      round_trip<OptionAck>(cat({u16(6), z("blksize"), z("1468"), z("tsize"), z("850528")}));
  REQUIRE(o.options.size() == 2);
  CHECK(o.options[0] == Option{"blksize", "1468"});
  CHECK(o.options[1] == Option{"tsize", "850528"});
  CHECK(serialize(OptionAck{{{"timeout", "3"}}}) == cat({u16(6), z("timeout"), z("3")}));
}

TEST_CASE("serialize stops strings at a NUL", "[netboot][tftp]") {
  CHECK(serialize(Request{Opcode::rrq, std::string("a\0b", 3), Mode::octet, {}}) ==
        cat({u16(1), z("a"), z("octet")}));
}

TEST_CASE("every malformed packet is dropped with its reason", "[netboot][tftp]") {
  struct Case {
    const char* name;
    Bytes bytes;
    ParseErrc reason;
  };
  const Case cases[] = {
      {"empty", {}, ParseErrc::truncated},
      {"one byte", {0}, ParseErrc::truncated},
      {"DATA without block", cat({u16(3), Bytes{0}}), ParseErrc::truncated},
      {"ACK without block", u16(4), ParseErrc::truncated},
      {"ERROR without code", cat({u16(5), Bytes{0}}), ParseErrc::truncated},
      {"RRQ of 513 bytes", request(std::string(513 - 2 - 1 - 6, 'a')), ParseErrc::too_long},
      {"DATA over the largest blksize", cat({u16(3), u16(1), Bytes(65465, 0)}),
       ParseErrc::too_long},
      {"opcode 0", cat({u16(0), z("f"), z("octet")}), ParseErrc::bad_opcode},
      {"opcode 7", cat({u16(7), u16(1)}), ParseErrc::bad_opcode},
      {"opcode 0xffff", u16(0xffff), ParseErrc::bad_opcode},
      {"RRQ with nothing", u16(1), ParseErrc::unterminated_string},
      {"filename without NUL", cat({u16(1), raw("file")}), ParseErrc::unterminated_string},
      {"mode missing", cat({u16(1), z("file")}), ParseErrc::unterminated_string},
      {"mode without NUL", cat({u16(1), z("file"), raw("octet")}), ParseErrc::unterminated_string},
      {"option name without NUL", cat({request("f"), raw("blksize")}),
       ParseErrc::unterminated_string},
      {"option value without NUL", cat({request("f"), z("blksize"), raw("1024")}),
       ParseErrc::unterminated_string},
      {"OACK value without NUL", cat({u16(6), z("blksize"), raw("1024")}),
       ParseErrc::unterminated_string},
      {"empty filename", request(""), ParseErrc::empty_filename},
      {"empty filename in WRQ", request("", "octet", {}, 2), ParseErrc::empty_filename},
      {"mode binary", request("f", "binary"), ParseErrc::bad_mode},
      {"empty mode", request("f", ""), ParseErrc::bad_mode},
      {"empty option name", cat({request("f"), z(""), z("1")}), ParseErrc::bad_option},
      {"option without value", cat({request("f"), z("blksize")}), ParseErrc::bad_option},
      {"OACK option without value", cat({u16(6), z("tsize")}), ParseErrc::bad_option},
      {"duplicate option",
       request("f", "octet", {{"blksize", "512"}, {"tsize", "0"}, {"BlkSize", "1024"}}),
       ParseErrc::duplicate_option},
      {"duplicate unknown option", request("f", "octet", {{"x", "1"}, {"X", "2"}}),
       ParseErrc::duplicate_option},
      {"blksize 7", request("f", "octet", {{"blksize", "7"}}), ParseErrc::bad_option_value},
      {"blksize 0", request("f", "octet", {{"blksize", "0"}}), ParseErrc::bad_option_value},
      {"blksize not a number", request("f", "octet", {{"blksize", "1k"}}),
       ParseErrc::bad_option_value},
      {"blksize empty", request("f", "octet", {{"blksize", ""}}), ParseErrc::bad_option_value},
      {"blksize negative", request("f", "octet", {{"blksize", "-512"}}),
       ParseErrc::bad_option_value},
      {"timeout 0", request("f", "octet", {{"timeout", "0"}}), ParseErrc::bad_option_value},
      {"timeout 256", request("f", "octet", {{"timeout", "256"}}), ParseErrc::bad_option_value},
      {"tsize negative", request("f", "octet", {{"tsize", "-1"}}), ParseErrc::bad_option_value},
      {"tsize with space", request("f", "octet", {{"tsize", " 0"}}), ParseErrc::bad_option_value},
      {"OACK blksize 4", cat({u16(6), z("blksize"), z("4")}), ParseErrc::bad_option_value},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    const auto e = parse_err(c.bytes);
    CHECK(to_string(e.reason) == to_string(c.reason));
    const auto err = to_error(e);
    CHECK(err.code == neco::Errc::invalid_argument);
    CHECK(err.message.find(to_string(c.reason)) != std::string::npos);
  }
}

TEST_CASE("a request of exactly 512 bytes is accepted", "[netboot][tftp]") {
  const Bytes r = request(std::string(512 - 2 - 1 - 6, 'a'));
  REQUIRE(r.size() == 512);
  CHECK(std::holds_alternative<Request>(parse_ok(r)));
}

TEST_CASE("parse errors name what they found", "[netboot][tftp]") {
  CHECK(parse_err(request("f", "octet", {{"blksize", "1k"}})).message ==
        "option blksize is '1k', expected a number from 8");
  CHECK(parse_err(request("f", "bin\x01")).message ==
        "mode 'bin\\x01', expected netascii, octet or mail");
  CHECK(parse_err(cat({u16(9), u16(1)})).message == "opcode 9, expected 1 (RRQ) to 6 (OACK)");
}

TEST_CASE("reason names are stable and distinct", "[netboot][tftp]") {
  std::set<std::string_view> names;
  for (int i = 0; i <= static_cast<int>(ParseErrc::bad_option_value); ++i) {
    names.insert(to_string(static_cast<ParseErrc>(i)));
  }
  CHECK(names.size() == static_cast<std::size_t>(ParseErrc::bad_option_value) + 1);
  CHECK(to_string(ParseErrc::unterminated_string) == "unterminated_string");
  CHECK(to_string(ParseErrc::bad_option_value) == "bad_option_value");
  CHECK(to_string(Opcode::oack) == "OACK");
  CHECK(to_string(Mode::netascii) == "netascii");
}

TEST_CASE("negotiation: no options means no OACK and 512-byte blocks", "[netboot][tftp]") {
  const auto n = negotiate(std::get<Request>(parse_ok(request("f"))), {}, 100);
  REQUIRE(n.has_value());
  CHECK(n->blksize == 512);
  CHECK_FALSE(n->timeout_seconds.has_value());
  CHECK(n->reply.empty());
}

TEST_CASE("negotiation: blksize is granted up to the limit", "[netboot][tftp]") {
  const auto granted = [](std::string_view asked, std::uint16_t max) {
    const auto r = std::get<Request>(parse_ok(request("f", "octet", {{"blksize", asked}})));
    auto n = negotiate(r, NegotiationLimits{max}, 0);
    REQUIRE(n.has_value());
    REQUIRE(n->reply.size() == 1);
    CHECK(n->reply[0].value == std::to_string(n->blksize));
    return n->blksize;
  };
  CHECK(granted("1468", 1468) == 1468);
  CHECK(granted("1432", 1468) == 1432);
  CHECK(granted("8", 1468) == 8);
  CHECK(granted("65464", 1468) == 1468);
  CHECK(granted("65464", 65464) == 65464);
  CHECK(granted("70000", 65464) == 65464);
  CHECK(granted("99999999999999999999999999", 1468) == 1468);  // saturates, no overflow
}

TEST_CASE("negotiation: tsize, timeout, unknown options, order and spelling", "[netboot][tftp]") {
  const auto r = std::get<Request>(parse_ok(request(
      "f", "octet", {{"TSIZE", "0"}, {"windowsize", "4"}, {"timeout", "3"}, {"BlkSize", "1024"}})));
  auto n = negotiate(r, {}, 850528);
  REQUIRE(n.has_value());
  CHECK(n->blksize == 1024);
  CHECK(n->timeout_seconds == 3U);
  CHECK(n->reply ==
        std::vector<Option>{{"TSIZE", "850528"}, {"timeout", "3"}, {"BlkSize", "1024"}});
  // Size unknown: tsize is left out of the OACK.
  n = negotiate(r, {}, std::nullopt);
  REQUIRE(n.has_value());
  CHECK(n->reply == std::vector<Option>{{"timeout", "3"}, {"BlkSize", "1024"}});
  // Only unknown options: no OACK at all (RFC 2347).
  n = negotiate(std::get<Request>(parse_ok(request("f", "octet", {{"multicast", ""}}))), {}, 1);
  REQUIRE(n.has_value());
  CHECK(n->reply.empty());
}

TEST_CASE("negotiation leaves out a timeout above the limit", "[netboot][tftp]") {
  const auto r =
      std::get<Request>(parse_ok(request("f", "octet", {{"timeout", "30"}, {"blksize", "1024"}})));
  NegotiationLimits limits;
  limits.max_timeout = 10;
  auto n = negotiate(r, limits, 1);
  REQUIRE(n.has_value());
  CHECK_FALSE(n->timeout_seconds.has_value());
  CHECK(n->reply == std::vector<Option>{{"blksize", "1024"}});
  limits.max_timeout = 30;
  n = negotiate(r, limits, 1);
  REQUIRE(n.has_value());
  CHECK(n->timeout_seconds == 30U);
}

TEST_CASE("negotiation refuses an invalid value in a hand-made request", "[netboot][tftp]") {
  const Request r{Opcode::rrq, "f", Mode::octet, {{"timeout", "300"}}};
  const auto n = negotiate(r, {}, 1);
  REQUIRE_FALSE(n.has_value());
  CHECK(n.error().reason == ParseErrc::bad_option_value);
}
