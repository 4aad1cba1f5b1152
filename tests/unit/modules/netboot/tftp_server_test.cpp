// The TFTP server in process on 127.0.0.1, driven by hand-built packets from a plain UDP socket:
// transfers with and without options, every refusal, traversal attempts, wrong TIDs,
// retransmission and giving up, duplicate ACKs, the concurrency bound, block sizes at the edges,
// block number rollover, and stop().
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "modules/netboot/tftp_server.hpp"
#include "tests/unit/modules/netboot/tftp_test_support.hpp"

namespace {

using namespace neco::netboot::tftp;
using namespace neco::netboot::tftp::testing;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

// A root directory with a few files, and a config serving it.
struct Root {
  TempDir dir;
  fs::path root = dir.path / "root";
  ServerConfig config;

  Root() {
    fs::create_directories(root);
    config.root_dir = root.string();
    config.timeout = 2s;
  }
  Bytes add(const std::string& name, std::size_t size, std::uint32_t seed = 7) {
    auto content = random_bytes(size, seed);
    write_file(root / name, content);
    return content;
  }
};

struct Result {
  Bytes content;
  std::optional<OptionAck> oack;
  std::uint16_t tid = 0;
  std::uint64_t blocks = 0;
};

// A whole lock-step download: RRQ, optional OACK → ACK 0, then DATA/ACK until a short block.
// Checks every block number, including the wrap from 65535 to 0.
Result download(const UdpClient& c, std::uint16_t port, const std::string& name,
                std::initializer_list<std::pair<std::string_view, std::string_view>> options = {},
                std::uint16_t blksize = 512) {
  Result r;
  c.send(port, request(name, "octet", options));
  auto [first, tid] = c.expect();
  r.tid = tid;
  REQUIRE(tid != port);
  if (const auto* o = std::get_if<OptionAck>(&first)) {
    r.oack = *o;
    c.send(tid, ack(0));
    first = c.expect().first;
  }
  Packet p = first;
  std::uint16_t expected = 1;
  for (;;) {
    const auto* d = std::get_if<Data>(&p);
    REQUIRE(d != nullptr);
    REQUIRE(d->block == expected);
    REQUIRE(d->payload.size() <= blksize);
    r.content.insert(r.content.end(), d->payload.begin(), d->payload.end());
    ++r.blocks;
    c.send(tid, ack(d->block));
    if (d->payload.size() < blksize) break;
    ++expected;  // wraps to 0 after 65535
    auto [next, from] = c.expect();
    REQUIRE(from == tid);
    p = std::move(next);
  }
  return r;
}

// The ERROR a request gets, from the server's port.
ErrorPacket refused(const UdpClient& c, std::uint16_t port, const Bytes& req) {
  c.send(port, req);
  const auto [p, from] = c.expect();
  CHECK(from == port);
  REQUIRE(std::holds_alternative<ErrorPacket>(p));
  return std::get<ErrorPacket>(p);
}

bool no_packet_within(const UdpClient& c, std::chrono::milliseconds t) {
  return !c.receive(t).has_value();
}

}  // namespace

TEST_CASE("RRQ without options: 512-byte blocks from a new port", "[netboot][tftp][server]") {
  Root r;
  const auto content = r.add("undionly.kpxe", 1000);
  ServerFixture s(r.config);
  UdpClient c;
  const auto got = download(c, s.port(), "undionly.kpxe");
  CHECK_FALSE(got.oack.has_value());
  CHECK(got.blocks == 2);
  CHECK(got.content == content);
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
  CHECK(s.stats().requests == 1);
  CHECK(s.stats().transfers_started == 1);
  CHECK(s.stats().bytes_sent == 1000);
  CHECK(s.stats().retransmissions == 0);
  // The outcome is counted just before the transfer is let go: wait for that too.
  CHECK(wait_for([&] { return s.stats().active_transfers == 0; }));
}

TEST_CASE("RRQ with blksize and tsize: OACK, ACK 0, then negotiated blocks",
          "[netboot][tftp][server]") {
  Root r;
  const auto content = r.add("ipxe.efi", 100000);
  ServerFixture s(r.config);
  UdpClient c;
  SECTION("blksize above the limit is granted the limit (1468)") {
    const auto got =
        download(c, s.port(), "ipxe.efi", {{"tsize", "0"}, {"blksize", "65464"}}, 1468);
    REQUIRE(got.oack.has_value());
    CHECK(got.oack->options == std::vector<Option>{{"tsize", "100000"}, {"blksize", "1468"}});
    CHECK(got.content == content);
    CHECK(got.blocks == 100000 / 1468 + 1);
  }
  SECTION("a smaller blksize is granted as asked") {
    const auto got = download(c, s.port(), "ipxe.efi", {{"blksize", "1024"}}, 1024);
    REQUIRE(got.oack.has_value());
    CHECK(got.oack->options == std::vector<Option>{{"blksize", "1024"}});
    CHECK(got.content == content);
  }
  SECTION("only unknown options: no OACK, DATA 1 straight away") {
    const auto got = download(c, s.port(), "ipxe.efi", {{"windowsize", "16"}});
    CHECK_FALSE(got.oack.has_value());
    CHECK(got.content == content);
  }
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
  CHECK(s.stats().bytes_sent == content.size());
}

TEST_CASE("a client that refuses the OACK ends the transfer", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 10);
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f", "octet", {{"blksize", "1024"}}));
  const auto [p, tid] = c.expect();
  REQUIRE(std::holds_alternative<OptionAck>(p));
  c.send(tid, serialize(ErrorPacket{8, "blksize refused"}));
  REQUIRE(wait_for([&] { return s.stats().failed(FailReason::client_error) == 1; }));
  // The outcome is counted just before the transfer is let go: wait for that too.
  CHECK(wait_for([&] { return s.stats().active_transfers == 0; }));
  CHECK(no_packet_within(c, 100ms));
}

TEST_CASE("the timeout option is echoed and used for retransmission", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 10);
  r.config.timeout = 60s;
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f", "octet", {{"timeout", "1"}}));
  const auto [p, tid] = c.expect();
  REQUIRE(std::holds_alternative<OptionAck>(p));
  CHECK(std::get<OptionAck>(p).options == std::vector<Option>{{"timeout", "1"}});
  // No ACK 0: the OACK comes again after about a second, not after the configured minute.
  const auto [again, tid2] = c.expect(3s);
  CHECK(again == p);
  CHECK(tid2 == tid);
}

TEST_CASE("a timeout above max_client_timeout is not acknowledged", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 10);
  ServerFixture s(r.config);  // max_client_timeout 10 s
  UdpClient c;
  const auto got = download(c, s.port(), "f", {{"timeout", "255"}});
  CHECK_FALSE(got.oack.has_value());  // nothing else was asked: DATA 1 straight away
  CHECK(got.content.size() == 10);
}

TEST_CASE("empty file: one empty DATA block", "[netboot][tftp][server]") {
  Root r;
  r.add("empty", 0);
  ServerFixture s(r.config);
  UdpClient c;
  const auto got = download(c, s.port(), "empty");
  CHECK(got.blocks == 1);
  CHECK(got.content.empty());
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
}

TEST_CASE("a file of an exact multiple of blksize ends with an empty DATA block",
          "[netboot][tftp][server]") {
  Root r;
  const auto content = r.add("f", 1024);
  ServerFixture s(r.config);
  UdpClient c;
  auto got = download(c, s.port(), "f");
  CHECK(got.blocks == 3);
  CHECK(got.content == content);
  got = download(c, s.port(), "f", {{"blksize", "256"}}, 256);
  CHECK(got.blocks == 5);
  CHECK(got.content == content);
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 2; }));
}

TEST_CASE("files in subdirectories and from the files map", "[netboot][tftp][server]") {
  Root r;
  const auto nested = r.add("efi/x64/ipxe.efi", 3000, 1);
  const auto outside = random_bytes(2000, 2);
  write_file(r.dir.path / "elsewhere" / "real.efi", outside);
  // The operator's own names may be symlinks (Debian's ipxe.efi is one).
  fs::create_symlink(r.dir.path / "elsewhere" / "real.efi", r.dir.path / "link.efi");
  r.config.files["snp.efi"] = (r.dir.path / "link.efi").string();
  r.config.files["gone.efi"] = (r.dir.path / "missing.efi").string();
  ServerFixture s(r.config);
  UdpClient c;
  CHECK(download(c, s.port(), "efi/x64/ipxe.efi").content == nested);
  CHECK(download(c, s.port(), "./efi//x64/ipxe.efi").content == nested);
  CHECK(download(c, s.port(), "snp.efi").content == outside);
  CHECK(refused(c, s.port(), request("gone.efi")).code == 1);
  CHECK(refused(c, s.port(), request("efi/x64/other.efi")).code == 1);
  CHECK(refused(c, s.port(), request("efi/x64/ipxe.efi/x")).code == 1);
}

TEST_CASE("a missing file gets ERROR 1", "[netboot][tftp][server]") {
  Root r;
  ServerFixture s(r.config);
  UdpClient c;
  const auto e = refused(c, s.port(), request("pxelinux.0"));
  CHECK(e.code == static_cast<std::uint16_t>(ErrorCode::file_not_found));
  CHECK(e.message == "file not found");
  CHECK(s.stats().refused(RefuseReason::not_found) == 1);
  CHECK(s.stats().requests == 1);
  CHECK(s.stats().transfers_started == 0);
}

TEST_CASE("path traversal is impossible", "[netboot][tftp][server]") {
  Root r;
  r.add("ok", 10);
  r.add("sub/inner", 10);
  write_file(r.dir.path / "secret", raw("secret"));
  fs::create_symlink(r.dir.path / "secret", r.root / "abs-link");
  fs::create_symlink("../secret", r.root / "rel-link");
  fs::create_symlink("ok", r.root / "inside-link");  // stays inside, still refused
  fs::create_directories(r.dir.path / "outdir");
  write_file(r.dir.path / "outdir" / "f", raw("secret"));
  fs::create_directory_symlink(r.dir.path / "outdir", r.root / "dirlink");
  REQUIRE(::mkfifo((r.root / "fifo").c_str(), 0600) == 0);
  ServerFixture s(r.config);
  UdpClient c;
  const char* names[] = {
      "../secret",   "../../../../etc/passwd",
      "/etc/passwd", "a/../../x",
      "sub/../ok",   "sub/..",
      "..",          "abs-link",
      "rel-link",    "inside-link",
      "dirlink/f",   "sub",
      "fifo",        "/ok",
      ".",           "sub/../../secret",
  };
  for (const char* name : names) {
    INFO(name);
    const auto e = refused(c, s.port(), request(name));
    CHECK(e.code == static_cast<std::uint16_t>(ErrorCode::access_violation));
  }
  CHECK(s.stats().refused(RefuseReason::access_violation) == std::size(names));
  CHECK(s.stats().transfers_started == 0);
  CHECK(download(c, s.port(), "ok").content.size() == 10);
}

TEST_CASE("WRQ is refused with ERROR 2", "[netboot][tftp][server]") {
  Root r;
  const auto content = r.add("f", 10);
  ServerFixture s(r.config);
  UdpClient c;
  const auto e = refused(c, s.port(), request("f", "octet", {}, 2));
  CHECK(e.code == static_cast<std::uint16_t>(ErrorCode::access_violation));
  CHECK(e.message == "this server is read-only");
  CHECK(s.stats().refused(RefuseReason::write_request) == 1);
  CHECK(read_file(r.root / "f") == content);
}

TEST_CASE("netascii and mail are refused with a clear ERROR", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 10);
  ServerFixture s(r.config);
  UdpClient c;
  auto e = refused(c, s.port(), request("f", "netascii"));
  CHECK(e.code == 0);
  CHECK(e.message == "netascii mode is not supported, use octet (binary)");
  e = refused(c, s.port(), request("f", "MAIL"));
  CHECK(e.message == "mail mode is not supported, use octet (binary)");
  CHECK(s.stats().refused(RefuseReason::bad_mode) == 2);
}

TEST_CASE("malformed requests get an ERROR, other garbage is dropped", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 10);
  ServerFixture s(r.config);
  UdpClient c;
  auto e = refused(c, s.port(), request("f", "octet", {{"blksize", "4"}}));
  CHECK(e.code == static_cast<std::uint16_t>(ErrorCode::option_refused));
  CHECK(e.message == "option blksize is '4', expected a number from 8");
  e = refused(c, s.port(), request("f", "octet", {{"tsize", "0"}, {"TSIZE", "0"}}));
  CHECK(e.code == static_cast<std::uint16_t>(ErrorCode::option_refused));
  e = refused(c, s.port(), cat({u16(1), z("f")}));
  CHECK(e.code == static_cast<std::uint16_t>(ErrorCode::illegal_operation));
  CHECK(s.stats().refused(RefuseReason::bad_request) == 3);

  c.send(s.port(), cat({u16(9), u16(1)}));  // bad opcode
  c.send(s.port(), Bytes{0});               // truncated
  c.send(s.port(), ack(1));                 // a stray ACK on the server port
  CHECK(no_packet_within(c, 200ms));
  CHECK(s.stats().malformed(ParseErrc::bad_option_value) == 1);
  CHECK(s.stats().malformed(ParseErrc::duplicate_option) == 1);
  CHECK(s.stats().malformed(ParseErrc::unterminated_string) == 1);
  CHECK(s.stats().malformed(ParseErrc::bad_opcode) == 1);
  CHECK(s.stats().malformed(ParseErrc::truncated) == 1);
  CHECK(s.stats().requests == 0);
  // Still serving.
  CHECK(download(c, s.port(), "f").content.size() == 10);
}

TEST_CASE("a packet from a wrong TID gets ERROR 5 and the transfer goes on",
          "[netboot][tftp][server]") {
  Root r;
  const auto content = r.add("f", 1500);
  ServerFixture s(r.config);
  UdpClient c;
  UdpClient intruder;
  c.send(s.port(), request("f"));
  const auto [p, tid] = c.expect();
  REQUIRE(std::get<Data>(p).block == 1);
  intruder.send(tid, ack(1));
  const auto [e, from] = intruder.expect();
  CHECK(from == tid);
  REQUIRE(std::holds_alternative<ErrorPacket>(e));
  CHECK(std::get<ErrorPacket>(e).code == static_cast<std::uint16_t>(ErrorCode::unknown_tid));
  // An ERROR from the intruder is not answered (no error ping-pong).
  intruder.send(tid, serialize(ErrorPacket{5, "x"}));
  CHECK(no_packet_within(intruder, 100ms));
  CHECK(no_packet_within(c, 1ms));  // the intruder's ACK did not advance the transfer
  Bytes got = std::get<Data>(p).payload;
  std::uint16_t block = 1;
  for (;;) {
    c.send(tid, ack(block));
    const auto [next, f2] = c.expect();
    const auto& d = std::get<Data>(next);
    REQUIRE(d.block == block + 1);
    got.insert(got.end(), d.payload.begin(), d.payload.end());
    ++block;
    if (d.payload.size() < 512) break;
  }
  c.send(tid, ack(block));
  CHECK(got == content);
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
  CHECK(s.stats().unknown_tid == 2);
}

TEST_CASE("a lost ACK: the DATA is sent again after the timeout", "[netboot][tftp][server]") {
  Root r;
  const auto content = r.add("f", 700);
  r.config.timeout = 100ms;
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f"));
  const auto [d1, tid] = c.expect();
  // Pretend our ACK was lost: the same DATA 1 comes again from the same port.
  const auto [d1again, tid2] = c.expect(2s);
  CHECK(d1again == d1);
  CHECK(tid2 == tid);
  c.send(tid, ack(1));
  const auto [d2, tid3] = c.expect();
  CHECK(std::get<Data>(d2).block == 2);
  c.send(tid, ack(2));
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
  CHECK(s.stats().retransmissions >= 1);
  CHECK(s.stats().bytes_sent == 700);  // retransmissions are not counted as bytes sent
}

TEST_CASE("the OACK is sent again when ACK 0 is lost", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 10);
  r.config.timeout = 100ms;
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f", "octet", {{"tsize", "0"}}));
  const auto [o1, tid] = c.expect();
  const auto [o2, tid2] = c.expect(2s);
  REQUIRE(std::holds_alternative<OptionAck>(o2));
  CHECK(o1 == o2);
  c.send(tid, ack(0));
  const auto [d, tid3] = c.expect();
  CHECK(std::get<Data>(d).payload.size() == 10);
  c.send(tid, ack(1));
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
}

TEST_CASE("a duplicate ACK is ignored: no Sorcerer's Apprentice", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 2000);
  r.config.timeout = 3s;
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f"));
  const auto [d1, tid] = c.expect();
  c.send(tid, ack(1));
  const auto [d2, t2] = c.expect();
  CHECK(std::get<Data>(d2).block == 2);
  c.send(tid, ack(1));  // a duplicate, e.g. crossed with a retransmission
  c.send(tid, ack(1));
  // No DATA 2 again (that would come only after the 3 s timeout), and no DATA 3.
  CHECK(no_packet_within(c, 300ms));
  REQUIRE(wait_for([&] { return s.stats().duplicate_acks == 2; }));
  c.send(tid, ack(2));
  CHECK(std::get<Data>(c.expect().first).block == 3);
  CHECK(s.stats().retransmissions == 0);
}

TEST_CASE("the transfer is given up after max_retries retransmissions", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 100);
  r.config.timeout = 30ms;
  r.config.max_retries = 3;
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f"));
  for (int i = 0; i < 4; ++i) {  // the first send and three retransmissions
    INFO(i);
    CHECK(std::get<Data>(c.expect(2s).first).block == 1);
  }
  REQUIRE(wait_for([&] { return s.stats().failed(FailReason::timeout) == 1; }));
  CHECK(s.stats().retransmissions == 3);
  // The outcome is counted just before the transfer is let go: wait for that too.
  CHECK(wait_for([&] { return s.stats().active_transfers == 0; }));
  CHECK(no_packet_within(c, 150ms));
}

TEST_CASE("concurrent transfers are bounded; beyond the bound: busy", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 100);
  r.config.max_transfers = 2;
  r.config.timeout = 5s;
  ServerFixture s(r.config);
  UdpClient a;
  UdpClient b;
  UdpClient late;
  a.send(s.port(), request("f"));
  b.send(s.port(), request("f"));
  const auto tid_a = a.expect().second;
  b.expect();
  REQUIRE(s.stats().active_transfers == 2);
  const auto e = refused(late, s.port(), request("f"));
  CHECK(e.code == 0);
  CHECK(e.message == "server busy (2 transfers running), try again later");
  CHECK(s.stats().busy() == 1);
  // One finishes; a new request is served.
  a.send(tid_a, ack(1));
  REQUIRE(wait_for([&] { return s.stats().active_transfers == 1; }));
  CHECK(download(late, s.port(), "f").content.size() == 100);
}

TEST_CASE("a repeated RRQ from the same client does not start a second transfer",
          "[netboot][tftp][server]") {
  Root r;
  r.add("f", 100);
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f"));
  c.send(s.port(), request("f"));
  const auto [d, tid] = c.expect();
  CHECK(std::get<Data>(d).block == 1);
  REQUIRE(wait_for([&] { return s.stats().duplicate_requests == 1; }));
  CHECK(no_packet_within(c, 100ms));
  c.send(tid, ack(1));
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
  CHECK(s.stats().transfers_started == 1);
}

TEST_CASE("block numbers wrap from 65535 to 0", "[netboot][tftp][server]") {
  Root r;
  // 65536 full blocks of 8 bytes and a short one: block numbers 1..65535, 0, 1.
  const std::size_t size = 8 * 65536 + 5;
  const auto content = r.add("big", size);
  ServerFixture s(r.config);
  UdpClient c;
  const auto got = download(c, s.port(), "big", {{"blksize", "8"}}, 8);
  CHECK(got.blocks == 65537);
  CHECK(got.content == content);
  REQUIRE(wait_for([&] { return s.stats().transfers_completed == 1; }));
  CHECK(s.stats().bytes_sent == size);
}

TEST_CASE("stop() ends running transfers and closes the port", "[netboot][tftp][server]") {
  Root r;
  r.add("f", 100);
  r.config.timeout = 10s;
  ServerFixture s(r.config);
  UdpClient c;
  c.send(s.port(), request("f"));
  c.expect();
  REQUIRE(s.stats().active_transfers == 1);
  s.server().stop();
  REQUIRE(wait_for([&] { return s.stats().active_transfers == 0; }));
  CHECK(s.stats().failed(FailReason::stopped) == 1);
  c.send(s.port(), request("f"));
  CHECK(no_packet_within(c, 100ms));
  s.server().stop();  // idempotent
}

TEST_CASE("start() checks the config", "[netboot][tftp][server]") {
  boost::asio::io_context io;
  TempDir dir;
  const auto error_of = [&](ServerConfig config) {
    config.port = 0;
    if (config.address == "0.0.0.0") config.address = "127.0.0.1";
    TftpServer server(io, std::move(config));
    auto started = server.start();
    REQUIRE_FALSE(started.has_value());
    return started.error().message;
  };
  ServerConfig base;
  base.root_dir = dir.path.string();
  CHECK(error_of(ServerConfig{}) == "nothing to serve: set files or root_dir");
  auto c = base;
  c.max_blksize = 7;
  CHECK(error_of(c) == "max_blksize 7 is outside 8..65464");
  c = base;
  c.max_transfers = 0;
  CHECK(error_of(c) == "max_transfers must be at least 1");
  c = base;
  c.timeout = 0ms;
  CHECK(error_of(c) == "timeout must be positive");
  c = base;
  c.address = "tftp.example";
  CHECK(error_of(c) == "address 'tftp.example' is not an IP address");
  c = base;
  c.root_dir = (dir.path / "missing").string();
  CHECK(error_of(c).find("Failed to open root_dir") == 0);
  c = base;
  c.files[""] = "/x";
  CHECK(error_of(c).find("needs a name and a path") != std::string::npos);

  TftpServer ok(io, [&] {
    auto x = base;
    x.address = "127.0.0.1";
    x.port = 0;
    return x;
  }());
  REQUIRE(ok.start().has_value());
  CHECK(ok.port() != 0);
  auto again = ok.start();
  REQUIRE_FALSE(again.has_value());
  CHECK(again.error().code == neco::Errc::failed_precondition);
  // The port is taken now.
  auto taken = base;
  taken.address = "127.0.0.1";
  taken.port = ok.port();
  TftpServer clash(io, taken);
  auto r = clash.start();
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == neco::Errc::unavailable);
}

TEST_CASE("debian_ipxe_files names the ipxe package's files", "[netboot][tftp]") {
  const auto files = debian_ipxe_files();
  CHECK(files.at("undionly.kpxe") == "/usr/lib/ipxe/undionly.kpxe");
  CHECK(files.at("ipxe.efi") == "/boot/ipxe.efi");
}
