// File responses: the Range parser byte for byte, then file_response() behind a real server on
// 127.0.0.1 driven by raw sockets: whole files, HEAD, 206 and 416, validators and 304,
// keep-alive after a file, deadlines on slow readers, fd semantics and memory use.
#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <limits>
#include <optional>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/http/file_response.hpp"
#include "tests/unit/agent/http/file_test_support.hpp"
#include "tests/unit/agent/http/raw_client.hpp"

namespace http = neco::http;
using namespace std::chrono_literals;
using Kind = http::ByteRange::Kind;
using neco::testing::Client;
using neco::testing::FileServer;
using neco::testing::wait_for;

namespace {

http::ByteRange partial(std::uint64_t first, std::uint64_t last) {
  return {Kind::partial, first, last};
}
const http::ByteRange whole{Kind::whole};
const http::ByteRange unsatisfiable{Kind::unsatisfiable};
const http::ByteRange invalid{Kind::invalid};

http::ServerLimits fast_limits() {
  http::ServerLimits l;
  l.header_timeout = 300ms;
  l.body_timeout = 300ms;
  l.idle_timeout = 2s;
  l.write_timeout = 300ms;
  l.linger_timeout = 200ms;
  return l;
}

// Peak resident memory of this process in KiB (VmHWM), and a reset of it (Linux >= 4.0).
std::optional<std::uint64_t> peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6));
  }
  return std::nullopt;
}
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// Reads one response's header from `fd`, then counts (and drops) `Content-Length` body bytes, so
// a huge body never sits in the test's memory. Returns the header text and the body byte count.
struct Streamed {
  std::string head;
  std::uint64_t body_bytes = 0;
  bool complete = false;
};
Streamed stream_discard(int fd, std::uint64_t expected_length) {
  Streamed s;
  std::string buf;
  std::array<char, 65536> chunk{};
  std::size_t end = 0;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    const auto n = ::recv(fd, chunk.data(), chunk.size(), 0);
    if (n <= 0) return s;
    buf.append(chunk.data(), static_cast<std::size_t>(n));
  }
  s.head = buf.substr(0, end);
  s.body_bytes = buf.size() - end - 4;
  while (s.body_bytes < expected_length) {
    const auto n = ::recv(fd, chunk.data(), chunk.size(), 0);
    if (n <= 0) return s;
    s.body_bytes += static_cast<std::uint64_t>(n);
  }
  s.complete = s.body_bytes == expected_length;
  return s;
}

}  // namespace

TEST_CASE("parse_byte_range: single ranges", "[http][range]") {
  CHECK(http::parse_byte_range("bytes=0-499", 1000) == partial(0, 499));
  CHECK(http::parse_byte_range("bytes=500-999", 1000) == partial(500, 999));
  CHECK(http::parse_byte_range("bytes=0-0", 1000) == partial(0, 0));
  CHECK(http::parse_byte_range("bytes=999-999", 1000) == partial(999, 999));
  CHECK(http::parse_byte_range("bytes=0-", 1000) == partial(0, 999));
  CHECK(http::parse_byte_range("bytes=9500-", 10000) == partial(9500, 9999));
  CHECK(http::parse_byte_range("bytes=5-5", 6) == partial(5, 5));
  // Suffix ranges: the last N bytes, all of them when N exceeds the size.
  CHECK(http::parse_byte_range("bytes=-500", 1000) == partial(500, 999));
  CHECK(http::parse_byte_range("bytes=-1", 1000) == partial(999, 999));
  CHECK(http::parse_byte_range("bytes=-1000", 1000) == partial(0, 999));
  CHECK(http::parse_byte_range("bytes=-5000", 1000) == partial(0, 999));
  // A last-pos beyond the end is clamped.
  CHECK(http::parse_byte_range("bytes=500-5000", 1000) == partial(500, 999));
  CHECK(http::parse_byte_range("bytes=0-1", 1) == partial(0, 0));
  // The unit is case-insensitive; leading zeros are just digits.
  CHECK(http::parse_byte_range("Bytes=1-2", 1000) == partial(1, 2));
  CHECK(http::parse_byte_range("BYTES=1-2", 1000) == partial(1, 2));
  CHECK(http::parse_byte_range("bytes=0005-00010", 1000) == partial(5, 10));
}

TEST_CASE("parse_byte_range: unsatisfiable ranges", "[http][range]") {
  CHECK(http::parse_byte_range("bytes=1000-", 1000) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=1000-1000", 1000) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=1500-2000", 1000) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=-0", 1000) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=2000-3000,4000-", 1000) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=-0,1000-", 1000) == unsatisfiable);
}

TEST_CASE("parse_byte_range: zero-size representation", "[http][range]") {
  CHECK(http::parse_byte_range("bytes=0-", 0) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=0-0", 0) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=-0", 0) == unsatisfiable);
  // Satisfiable by RFC 9110, yet zero bytes: a 206 cannot say so, the whole (empty) file can.
  CHECK(http::parse_byte_range("bytes=-1", 0) == whole);
  CHECK(http::parse_byte_range("bytes=garbage", 0) == invalid);
}

TEST_CASE("parse_byte_range: several ranges get the whole file", "[http][range]") {
  CHECK(http::parse_byte_range("bytes=0-1,5-6", 1000) == whole);
  CHECK(http::parse_byte_range("bytes=0-1, 5-6", 1000) == whole);
  CHECK(http::parse_byte_range("bytes=0-1,2000-3000", 1000) == whole);
  CHECK(http::parse_byte_range("bytes=-1,0-", 1000) == whole);
  CHECK(http::parse_byte_range("bytes=0-1,0-1", 1000) == whole);
  // Empty list elements are ignored: what remains may be a single range.
  CHECK(http::parse_byte_range("bytes=0-1,,", 1000) == partial(0, 1));
  CHECK(http::parse_byte_range("bytes=, 0-1", 1000) == partial(0, 1));
  // One invalid element spoils the whole field.
  CHECK(http::parse_byte_range("bytes=0-1,5-4", 1000) == invalid);
  CHECK(http::parse_byte_range("bytes=0-1,a", 1000) == invalid);
}

TEST_CASE("parse_byte_range: whitespace", "[http][range]") {
  CHECK(http::parse_byte_range("  bytes=1-2 \t", 1000) == partial(1, 2));
  CHECK(http::parse_byte_range("bytes= 1-2", 1000) == partial(1, 2));
  CHECK(http::parse_byte_range("bytes=1-2 ,3-4", 1000) == whole);
  CHECK(http::parse_byte_range("bytes =1-2", 1000) == invalid);
  CHECK(http::parse_byte_range("bytes=1 -2", 1000) == invalid);
  CHECK(http::parse_byte_range("bytes=1- 2", 1000) == invalid);
  CHECK(http::parse_byte_range("bytes=- 2", 1000) == invalid);
}

TEST_CASE("parse_byte_range: garbage is ignored", "[http][range]") {
  for (const char* header :
       {"",          "bytes",      "bytes=",      "bytes=-",     "bytes=,",     "bytes=abc",
        "bytes=1",   "bytes=1-a",  "bytes=a-1",   "bytes=5-4",   "bytes=+1-2",  "bytes=1-+2",
        "bytes=-+2", "bytes=--2",  "bytes=1-2-3", "bytes=0x1-2", "bytes=1.5-2", "items=0-1",
        "=0-1",      "bytes==0-1", "bytes:0-1",   "0-1"}) {
    INFO("Range: " << header);
    CHECK(http::parse_byte_range(header, 1000) == invalid);
  }
}

TEST_CASE("parse_byte_range: numbers beyond 64 bits", "[http][range]") {
  const std::string huge = "99999999999999999999999";  // > 2^64
  CHECK(http::parse_byte_range("bytes=0-" + huge, 1000) == partial(0, 999));
  CHECK(http::parse_byte_range("bytes=-" + huge, 1000) == partial(0, 999));
  CHECK(http::parse_byte_range("bytes=" + huge + "-", 1000) == unsatisfiable);
  CHECK(http::parse_byte_range("bytes=" + huge + "-" + huge, 1000) == unsatisfiable);
  // Both saturate to the same value, but the digits say last < first: invalid.
  CHECK(http::parse_byte_range("bytes=" + huge + "-99999999999999999999998", 1000) == invalid);
  CHECK(http::parse_byte_range("bytes=18446744073709551615-18446744073709551615", 1000) ==
        unsatisfiable);
  CHECK(http::parse_byte_range("bytes=18446744073709551616-", 1000) == unsatisfiable);
  constexpr auto max = std::numeric_limits<std::uint64_t>::max();
  CHECK(http::parse_byte_range("bytes=18446744073709551613-", max) == partial(max - 2, max - 1));
  CHECK(http::parse_byte_range("bytes=-2", max) == partial(max - 2, max - 1));
}

TEST_CASE("File responses: whole file, HEAD, ranges and 416 on one connection", "[http][file]") {
  FileServer f;
  const auto size = f.content.size();
  Client c(f.port());
  REQUIRE(c.connected());

  auto r = c.request("GET", "/files/data.bin");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-length") == std::to_string(size));
  CHECK(r->header("content-type") == "application/octet-stream");
  CHECK(r->header("accept-ranges") == "bytes");
  CHECK_FALSE(r->header("etag").empty());
  CHECK(r->header("last-modified").size() == 29);  // IMF-fixdate
  CHECK(r->header("last-modified").ends_with(" GMT"));
  CHECK(r->body == f.content);
  const auto etag = r->header("etag");

  // HEAD: the same length, no payload: the next reply on the connection parses cleanly.
  r = c.request("HEAD", "/files/data.bin");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-length") == std::to_string(size));
  CHECK(r->header("etag") == etag);
  CHECK(r->body.empty());

  r = c.request("GET", "/files/data.bin", "Range: bytes=1000-1999\r\n");
  REQUIRE(r);
  CHECK(r->status == 206);
  CHECK(r->header("content-range") == "bytes 1000-1999/" + std::to_string(size));
  CHECK(r->header("content-length") == "1000");
  CHECK(r->body == f.content.substr(1000, 1000));

  r = c.request("GET", "/files/data.bin", "Range: bytes=-70000\r\n");
  REQUIRE(r);
  CHECK(r->status == 206);
  CHECK(r->header("content-range") == "bytes " + std::to_string(size - 70000) + "-" +
                                          std::to_string(size - 1) + "/" + std::to_string(size));
  CHECK(r->body == f.content.substr(size - 70000));

  // Open-ended from the middle, crossing several 64 KiB chunks at odd offsets.
  r = c.request("GET", "/files/data.bin", "Range: bytes=123457-\r\n");
  REQUIRE(r);
  CHECK(r->status == 206);
  CHECK(r->body == f.content.substr(123457));

  r = c.request("GET", "/files/data.bin", "Range: bytes=0-0\r\n");
  REQUIRE(r);
  CHECK(r->status == 206);
  CHECK(r->body == f.content.substr(0, 1));

  r = c.request("GET", "/files/data.bin", "Range: bytes=" + std::to_string(size) + "-\r\n");
  REQUIRE(r);
  CHECK(r->status == 416);
  CHECK(r->header("content-range") == "bytes */" + std::to_string(size));
  CHECK(nlohmann::json::parse(r->body)["error"] == "range_not_satisfiable");

  // Several ranges and malformed ones: the whole file.
  r = c.request("GET", "/files/data.bin", "Range: bytes=0-1,5-6\r\n");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == f.content);
  r = c.request("GET", "/files/data.bin", "Range: bytes=9-3\r\n");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.size() == size);

  // HEAD ignores Range (it is defined for GET only).
  r = c.request("HEAD", "/files/data.bin", "Range: bytes=0-9\r\n");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-length") == std::to_string(size));

  // Still the same connection, still answering.
  r = c.request("GET", "/files/data.bin", "Range: bytes=10-19\r\n");
  REQUIRE(r);
  CHECK(r->body == f.content.substr(10, 10));
  CHECK(f.stats().active_connections == 1);
  CHECK(f.stats().timeouts == 0);
}

TEST_CASE("File responses: validators and conditional requests", "[http][file]") {
  FileServer f;
  const auto size = f.content.size();
  Client c(f.port());
  auto first = c.request("GET", "/tagged");
  REQUIRE(first);
  CHECK(first->header("etag") == "\"v1-abc\"");
  const auto last_modified = first->header("last-modified");

  SECTION("If-None-Match") {
    for (const char* inm :
         {"\"v1-abc\"", "W/\"v1-abc\"", "*", "\"x\", \"v1-abc\"", " \"x\",W/\"v1-abc\" "}) {
      INFO("If-None-Match: " << inm);
      auto r = c.request("GET", "/tagged", std::string("If-None-Match: ") + inm + "\r\n");
      REQUIRE(r);
      CHECK(r->status == 304);
      CHECK(r->header("etag") == "\"v1-abc\"");
      CHECK(r->header("content-length").empty());
      CHECK(r->header("content-type").empty());
      CHECK(r->body.empty());
    }
    for (const char* inm : {"\"other\"", "\"v1-ab\"", "v1-abc", "\"v1-abc"}) {
      INFO("If-None-Match: " << inm);
      auto r = c.request("GET", "/tagged", std::string("If-None-Match: ") + inm + "\r\n");
      REQUIRE(r);
      CHECK(r->status == 200);
      CHECK(r->body.size() == size);
    }
    // 304 wins over a Range, and HEAD gets it too.
    auto r = c.request("GET", "/tagged", "If-None-Match: \"v1-abc\"\r\nRange: bytes=0-9\r\n");
    REQUIRE(r);
    CHECK(r->status == 304);
    r = c.request("HEAD", "/tagged", "If-None-Match: \"v1-abc\"\r\n");
    REQUIRE(r);
    CHECK(r->status == 304);
  }

  SECTION("If-Range") {
    auto r = c.request("GET", "/tagged", "Range: bytes=5-9\r\nIf-Range: \"v1-abc\"\r\n");
    REQUIRE(r);
    CHECK(r->status == 206);
    CHECK(r->body == f.content.substr(5, 5));
    r = c.request("GET", "/tagged", "Range: bytes=5-9\r\nIf-Range: " + last_modified + "\r\n");
    REQUIRE(r);
    CHECK(r->status == 206);
    CHECK(r->body == f.content.substr(5, 5));
    // A changed validator, a weak one, or another date: the whole (new) representation.
    for (const char* ir : {"\"v0\"", "W/\"v1-abc\"", "Thu, 01 Jan 1970 00:00:00 GMT"}) {
      INFO("If-Range: " << ir);
      r = c.request("GET", "/tagged", std::string("Range: bytes=5-9\r\nIf-Range: ") + ir + "\r\n");
      REQUIRE(r);
      CHECK(r->status == 200);
      CHECK(r->body == f.content);
    }
  }

  SECTION("the computed ETag follows the file") {
    auto a = c.request("HEAD", "/files/data.bin");
    REQUIRE(a);
    const auto etag = a->header("etag");
    CHECK(etag.size() > 2);
    auto r = c.request("GET", "/files/data.bin", "If-None-Match: " + etag + "\r\n");
    REQUIRE(r);
    CHECK(r->status == 304);
    // Replaced by another file (another inode): the old validator no longer matches.
    neco::testing::write_file(f.dir / "new.bin", f.content);
    std::filesystem::rename(f.dir / "new.bin", f.dir / "data.bin");
    r = c.request("GET", "/files/data.bin", "If-None-Match: " + etag + "\r\n");
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->header("etag") != etag);
  }
}

TEST_CASE("File responses: missing, not regular and unreadable files", "[http][file]") {
  FileServer f;
  Client c(f.port());
  auto r = c.request("GET", "/files/nothing.bin");
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(nlohmann::json::parse(r->body)["error"] == "not_found");
  r = c.request("GET", "/files/subdir");
  REQUIRE(r);
  CHECK(r->status == 404);
  CHECK(nlohmann::json::parse(r->body)["message"] == "\"/files/subdir\" is not a regular file");
  // A symlink as the last component is not followed, even to a file beside it.
  r = c.request("GET", "/files/link.bin");
  REQUIRE(r);
  CHECK(r->status == 404);
  // Unreadable: only testable without CAP_DAC_OVERRIDE (root reads mode 000 files).
  neco::testing::write_file(f.dir / "secret.bin", "secret");
  std::filesystem::permissions(f.dir / "secret.bin", std::filesystem::perms::none);
  r = c.request("GET", "/files/secret.bin");
  REQUIRE(r);
  if (::geteuid() != 0) {
    CHECK(r->status == 403);
    CHECK(nlohmann::json::parse(r->body)["error"] == "forbidden");
  } else {
    CHECK(r->status == 200);
  }
  // The connection survived every error.
  r = c.request("GET", "/files/data.bin", "Range: bytes=0-3\r\n");
  REQUIRE(r);
  CHECK(r->body == f.content.substr(0, 4));
}

TEST_CASE("File responses: the opened file is what gets sent", "[http][file]") {
  FileServer f;
  Client c(f.port());
  // Deleted after open: the descriptor still reads the old inode.
  auto r = c.request("GET", "/vanishing");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == f.content);
  CHECK_FALSE(std::filesystem::exists(f.dir / "vanishing.bin"));
  // Replaced by rename after open: the old content, not the 'R's.
  r = c.request("GET", "/replaced");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == f.content);
  r = c.request("GET", "/files/replaced.bin", "Range: bytes=0-3\r\n");
  REQUIRE(r);
  CHECK(r->body == "RRRR");
  // Truncated in place after open: the promised length cannot be met, so the server closes
  // the connection instead of sending a wrong body.
  Client d(f.port());
  REQUIRE(d.send("GET /shrinking HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK_FALSE(d.read_reply());
  CHECK(d.unread().size() < f.content.size());
  CHECK(wait_for([&] { return f.stats().active_connections == 1; }, 5s));
}

TEST_CASE("File responses: a reader that stops is cut off by the write deadline", "[http][file]") {
  FileServer f(fast_limits());
  Client c(f.port());
  const int small = 4096;
  ::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(c.send("GET /files/sparse.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
  CHECK(wait_for([&] { return f.stats().timeouts == 1; }, 5s));
  CHECK(wait_for([&] { return f.stats().active_connections == 0; }, 5s));
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("File responses: a reader slower than a chunk per deadline is cut off", "[http][file]") {
  FileServer f(fast_limits());
  Client c(f.port());
  const int small = 4096;
  ::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  REQUIRE(c.send("GET /files/sparse.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
  // About 40 KiB/s, well under 64 KiB per 300 ms.
  std::atomic<bool> done{false};
  std::uint64_t received = 0;
  std::thread reader([&] {
    std::array<char, 2048> buf{};
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (!done && std::chrono::steady_clock::now() < until) {
      const auto n = ::recv(c.fd(), buf.data(), buf.size(), 0);
      if (n <= 0) break;
      received += static_cast<std::uint64_t>(n);
      std::this_thread::sleep_for(50ms);
    }
  });
  CHECK(wait_for([&] { return f.stats().timeouts == 1; }, 5s));
  done = true;
  reader.join();
  CHECK(received > 0);
  CHECK(received < neco::testing::sparse_size);
  CHECK(wait_for([&] { return f.stats().active_connections == 0; }, 5s));
}

TEST_CASE("File responses: a 1 GiB file costs no more than a chunk of memory", "[http][file]") {
  FileServer f;
  Client c(f.port());
  const auto size = neco::testing::sparse_size;
  auto r = c.request("HEAD", "/files/sparse.bin");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->header("content-length") == std::to_string(size));

  const bool can_reset = reset_peak_rss();
  const auto before = peak_rss_kib();
  r = c.request("GET", "/files/sparse.bin", "Range: bytes=-1048576\r\n");
  REQUIRE(r);
  CHECK(r->status == 206);
  CHECK(r->header("content-range") == "bytes " + std::to_string(size - 1048576) + "-" +
                                          std::to_string(size - 1) + "/" + std::to_string(size));
  CHECK(r->body == std::string(1048576, '\0'));

  // The whole GiB through the server, counted and dropped by the client as it arrives.
  REQUIRE(c.send("GET /files/sparse.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
  const auto streamed = stream_discard(c.fd(), size);
  CHECK(streamed.head.starts_with("HTTP/1.1 200"));
  CHECK(streamed.complete);
  const auto after = peak_rss_kib();
  REQUIRE(before);
  REQUIRE(after);
  INFO("peak RSS before " << *before << " KiB, after " << *after << " KiB, reset " << can_reset);
  // The range reply itself holds 1 MiB (twice while parsing); 1 GiB would blow far past this.
  // Under ASan freed memory sits in its quarantine (256 MiB by default), so peak RSS says
  // nothing about what the server holds; the bound is checked in the ordinary build.
#if defined(__SANITIZE_ADDRESS__)
  CHECK(*after - *before < 256UL * 1024);
#else
  CHECK(*after - *before < 32UL * 1024);
#endif
}
