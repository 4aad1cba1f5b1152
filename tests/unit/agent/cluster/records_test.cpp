#include <catch2/catch.hpp>

#include "agent/cluster/records.hpp"

using namespace neco::cluster;

TEST_CASE("join tokens are random, well-formed and parse back", "[cluster]") {
  auto a = make_token();
  auto b = make_token();
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->text() != b->text());
  CHECK(a->text().size() == 41);
  auto p = parse_token(a->text());
  REQUIRE(p);
  CHECK(p->id == a->id);
  CHECK(p->secret == a->secret);
  for (const char* bad :
       {"", "abc", "0123456.0123456789abcdef0123456789abcdef",
        "01234567.0123456789ABCDEF0123456789abcdef", "01234567-0123456789abcdef0123456789abcdef",
        "01234567.0123456789abcdef0123456789abcdef0"}) {
    auto r = parse_token(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == neco::Errc::invalid_argument);
  }
}

TEST_CASE("sha256_hex matches the known digest", "[cluster]") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(constant_time_equal("abc", "abc"));
  CHECK_FALSE(constant_time_equal("abc", "abd"));
  CHECK_FALSE(constant_time_equal("abc", "ab"));
}

TEST_CASE("a node is unreachable only after the configured missed beats", "[cluster]") {
  using namespace std::chrono_literals;
  const auto t0 = std::chrono::steady_clock::now();
  BeatTrack t{5, t0};
  CHECK(decide_state(t, t0, 1s, 3) == kHealthy);
  CHECK(decide_state(t, t0 + 2999ms, 1s, 3) == kHealthy);
  CHECK(decide_state(t, t0 + 3001ms, 1s, 3) == kUnreachable);
  CHECK(decide_state(t, t0 + 9s, 10s, 3) == kHealthy);
}
