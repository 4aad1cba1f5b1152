#include <catch2/catch.hpp>

#include <zlib.h>

#include <string>

#include "agent/metrics/gzip.hpp"

using namespace neco::metrics;

namespace {

// Independent inflate with zlib's automatic header detection turned to gzip-only.
std::string gunzip(const std::string& compressed) {
  z_stream stream{};
  REQUIRE(inflateInit2(&stream, 15 + 16) == Z_OK);
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(compressed.data()));
  stream.avail_in = static_cast<uInt>(compressed.size());
  std::string out;
  char buf[16384];
  int rc = Z_OK;
  while (rc == Z_OK) {
    stream.next_out = reinterpret_cast<Bytef*>(buf);
    stream.avail_out = sizeof buf;
    rc = inflate(&stream, Z_NO_FLUSH);
    out.append(buf, sizeof buf - stream.avail_out);
  }
  inflateEnd(&stream);
  CHECK(rc == Z_STREAM_END);
  return out;
}

}  // namespace

TEST_CASE("gzip round-trips through zlib's inflate") {
  std::string text;
  for (int i = 0; i < 20000; ++i) {
    text += "node_cpu_seconds_total{cpu=\"" + std::to_string(i % 64) + "\",mode=\"idle\"} " +
            std::to_string(i * 7919 % 100003) + "\n";
  }
  for (int level : {1, 6, 9}) {
    std::string compressed = gzip_compress(text, level);
    REQUIRE(compressed.size() > 10);
    CHECK(static_cast<unsigned char>(compressed[0]) == 0x1f);  // gzip magic
    CHECK(static_cast<unsigned char>(compressed[1]) == 0x8b);
    CHECK(compressed.size() < text.size() / 4);
    CHECK(gunzip(compressed) == text);
  }
}

TEST_CASE("gzip of empty and incompressible input") {
  CHECK(gunzip(gzip_compress("")).empty());
  std::string noise;
  std::uint32_t x = 2463534242;
  for (int i = 0; i < 100000; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    noise += static_cast<char>(x);
  }
  CHECK(gunzip(gzip_compress(noise)) == noise);
}

TEST_CASE("accepts_gzip") {
  struct Row {
    std::string_view header;
    bool want;
  };
  const Row rows[] = {
      {"gzip", true},
      {"gzip, deflate, br", true},  // browsers, curl --compressed
      {"GZIP", true},
      {"deflate, x-gzip;q=0.1", true},
      {"br;q=1.0, gzip; q=0.001", true},
      {"*", true},
      {"*;q=0.5", true},
      {"", false},
      {"identity", false},
      {"deflate, br", false},
      {"gzip;q=0", false},
      {"gzip;q=0.0, *", false},  // explicit refusal beats the wildcard
      {"*, gzip;q=0", false},
      {"*;q=0", false},
      {"gzip;q=oops", false},
      {"gzip-like", false},
  };
  for (const auto& row : rows) {
    INFO("Accept-Encoding: " << row.header);
    CHECK(accepts_gzip(row.header) == row.want);
  }
}
