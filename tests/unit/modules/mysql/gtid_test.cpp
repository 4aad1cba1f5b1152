// Unit tests of the GTID arithmetic: parsing (every error with its reason), canonical text,
// containment and its partial order across domains, errant transactions and the failover
// candidate choice.
#include <catch2/catch.hpp>

#include "modules/mysql/gtid.hpp"

using neco::Errc;
using neco::mysql::CandidateInfo;
using neco::mysql::ErrantGtid;
using neco::mysql::Gtid;
using neco::mysql::GtidPosition;

namespace {

GtidPosition pos(std::string_view text) {
  auto p = neco::mysql::parse_gtid_position(text);
  INFO(text);
  REQUIRE(p.has_value());
  return *p;
}

std::string parse_error(std::string_view text) {
  auto p = neco::mysql::parse_gtid_position(text);
  INFO(text);
  REQUIRE_FALSE(p.has_value());
  CHECK(p.error().code == Errc::invalid_argument);
  return p.error().message;
}

CandidateInfo replica(std::string name, std::string_view io, std::string_view current,
                      bool errant = false, bool reachable = true) {
  return CandidateInfo{std::move(name), pos(io), pos(current), errant, reachable};
}

}  // namespace

TEST_CASE("GTID positions parse and format canonically", "[gtid]") {
  CHECK(pos("").empty());
  CHECK(pos("  \n").empty());
  const GtidPosition one = pos("0-1-100");
  REQUIRE(one.gtids().size() == 1);
  CHECK(one.gtids()[0] == Gtid{0, 1, 100});
  CHECK(to_string(one) == "0-1-100");

  // Sorted by domain, whitespace and line breaks between items tolerated.
  const GtidPosition multi = pos("5-3-7, 1-2-5,\n0-1-100");
  CHECK(to_string(multi) == "0-1-100,1-2-5,5-3-7");
  CHECK(multi.seq_no(1) == 5);
  CHECK(multi.seq_no(2) == 0);
  REQUIRE(multi.find(5) != nullptr);
  CHECK(multi.find(5)->server_id == 3);
  CHECK(multi.find(4) == nullptr);
  CHECK(multi == pos("0-1-100,1-2-5,5-3-7"));

  // Extremes: 32-bit domain and server_id, 64-bit seq_no; leading zeros read as decimal.
  CHECK(to_string(pos("4294967295-4294967295-18446744073709551615")) ==
        "4294967295-4294967295-18446744073709551615");
  CHECK(to_string(pos("007-01-0010")) == "7-1-10");
}

TEST_CASE("GTID position parse errors name the item and the reason", "[gtid]") {
  CHECK_THAT(parse_error("0-1"), Catch::Contains("\"0-1\"") && Catch::Contains("three numbers"));
  CHECK_THAT(parse_error("0-1-2-3"), Catch::Contains("three numbers"));
  CHECK_THAT(parse_error("x-1-2"), Catch::Contains("domain_id \"x\" is not a decimal number"));
  CHECK_THAT(parse_error("0-1a-2"), Catch::Contains("server_id \"1a\" is not a decimal"));
  CHECK_THAT(parse_error("0-1-+2"), Catch::Contains("seq_no \"+2\""));
  CHECK_THAT(parse_error("0--2"), Catch::Contains("server_id is empty"));
  CHECK_THAT(parse_error("0-1-"), Catch::Contains("seq_no is empty"));
  CHECK_THAT(parse_error("0-1-2,"), Catch::Contains("item 2 is empty"));
  CHECK_THAT(parse_error(",0-1-2"), Catch::Contains("item 1 is empty"));
  CHECK_THAT(parse_error("0-1-2,,1-1-1"), Catch::Contains("item 2 is empty"));
  CHECK_THAT(parse_error("0-1-2 1-1-1"),
             Catch::Contains("\"0-1-2 1-1-1\": expected three numbers"));
  CHECK_THAT(parse_error("4294967296-1-1"),
             Catch::Contains("domain_id 4294967296 is out of range (at most 4294967295)"));
  CHECK_THAT(parse_error("0-4294967296-1"), Catch::Contains("server_id 4294967296 is out"));
  CHECK_THAT(parse_error("0-1-18446744073709551616"),
             Catch::Contains("seq_no 18446744073709551616 is out of range"));
  CHECK_THAT(parse_error("0-1-5,1-1-1,0-2-6"), Catch::Contains("domain 0 twice (0-1-5 and 0-2-6)"));
  CHECK_THAT(parse_error("0-1-5;1-1-1"), Catch::Contains("expected three numbers"));
  CHECK_THAT(parse_error("0-1-5;"), Catch::Contains("seq_no \"5;\" is not a decimal number"));

  auto dup = GtidPosition::from({{3, 1, 1}, {3, 1, 2}});
  REQUIRE_FALSE(dup.has_value());
  CHECK(dup.error().code == Errc::invalid_argument);
}

TEST_CASE("contains and the partial order across domains", "[gtid]") {
  const GtidPosition empty;
  CHECK(contains(empty, empty));
  CHECK(contains(pos("0-1-1"), empty));
  CHECK_FALSE(contains(empty, pos("0-1-1")));

  CHECK(contains(pos("0-1-10"), pos("0-1-9")));
  CHECK(contains(pos("0-1-10"), pos("0-1-10")));
  CHECK_FALSE(contains(pos("0-1-9"), pos("0-1-10")));
  // Server ids do not matter to containment.
  CHECK(contains(pos("0-2-10"), pos("0-1-10")));

  // Every domain of b must be present in a.
  CHECK(contains(pos("0-1-10,1-2-3"), pos("0-1-10")));
  CHECK_FALSE(contains(pos("0-1-10"), pos("0-1-10,1-2-3")));
  CHECK_FALSE(contains(pos("0-1-10,1-2-2"), pos("0-1-5,1-2-3")));

  using std::partial_ordering;
  CHECK(compare(pos("0-1-5"), pos("0-1-5")) == partial_ordering::equivalent);
  CHECK(compare(pos("0-1-6"), pos("0-1-5")) == partial_ordering::greater);
  CHECK(compare(pos("0-1-4"), pos("0-1-5")) == partial_ordering::less);
  CHECK(compare(pos("0-1-6,1-1-1"), pos("0-1-5,1-1-2")) == partial_ordering::unordered);
  CHECK(compare(pos("0-1-5"), pos("1-1-5")) == partial_ordering::unordered);
  CHECK(compare(pos("0-1-5,1-1-1"), pos("0-1-5")) == partial_ordering::greater);

  CHECK(ahead_of(pos("0-1-6"), pos("0-1-5")));
  CHECK_FALSE(ahead_of(pos("0-1-5"), pos("0-1-5")));
  CHECK_FALSE(ahead_of(pos("0-1-6,1-1-1"), pos("0-1-5,1-1-2")));
  CHECK_FALSE(ahead_of(pos("0-1-5,1-1-2"), pos("0-1-6,1-1-1")));

  CHECK(to_string(merge_max(pos("0-1-6,1-1-1"), pos("0-2-5,1-2-2,2-3-9"))) == "0-1-6,1-2-2,2-3-9");
  CHECK(to_string(merge_max(pos("0-1-5"), pos("0-2-5"))) == "0-1-5");
  CHECK(to_string(merge_max(empty, pos("3-1-1"))) == "3-1-1");
}

TEST_CASE("errant transactions of a replica against its primary", "[gtid]") {
  using R = ErrantGtid::Reason;
  CHECK(errant(pos(""), pos("0-1-100")).empty());
  CHECK(errant(pos("0-1-100"), pos("0-1-100")).empty());
  CHECK(errant(pos("0-1-99"), pos("0-1-100")).empty());  // behind is not errant
  // Behind in one domain, level in another: fine.
  CHECK(errant(pos("0-1-90,1-3-4"), pos("0-1-100,1-3-4,2-1-1")).empty());

  const auto ahead = errant(pos("0-2-101"), pos("0-1-100"));
  REQUIRE(ahead.size() == 1);
  CHECK(ahead[0] == ErrantGtid{R::ahead, Gtid{0, 2, 101}, Gtid{0, 1, 100}});

  const auto diverged = errant(pos("0-2-100"), pos("0-1-100"));
  REQUIRE(diverged.size() == 1);
  CHECK(diverged[0].reason == R::diverged);

  const auto unknown = errant(pos("0-1-100,9-2-1"), pos("0-1-100"));
  REQUIRE(unknown.size() == 1);
  CHECK(unknown[0] == ErrantGtid{R::unknown_domain, Gtid{9, 2, 1}, std::nullopt});
  // seq_no 0 is no transaction.
  CHECK(errant(pos("9-2-0"), pos("0-1-1")).empty());

  // Several at once, sorted by domain, with a readable description.
  const auto many = errant(pos("0-1-90,1-2-5,2-2-7,4-4-4"), pos("0-1-100,1-1-4,2-1-7"));
  REQUIRE(many.size() == 3);
  CHECK(many[0].reason == R::ahead);
  CHECK(many[1].reason == R::diverged);
  CHECK(many[2].reason == R::unknown_domain);
  CHECK(describe(many) ==
        "1-2-5 (ahead of the primary's 1-1-4), 2-2-7 (diverged from the primary's 2-1-7), "
        "4-4-4 (domain unknown to the primary)");
  CHECK(neco::mysql::describe({}).empty());
  CHECK(to_string(R::diverged) == "diverged");
}

TEST_CASE("the failover candidate is the most advanced eligible replica", "[gtid]") {
  using neco::mysql::choose_candidate;

  SECTION("most received wins over most applied") {
    auto c = choose_candidate({replica("a", "0-1-10", "0-1-10"), replica("b", "0-1-12", "0-1-8"),
                               replica("c", "0-1-11", "0-1-11")});
    REQUIRE(c.has_value());
    CHECK(*c == "b");
  }
  SECTION("equal received: most applied, then smallest name") {
    auto c = choose_candidate({replica("c", "0-1-12", "0-1-9"), replica("b", "0-1-12", "0-1-11"),
                               replica("a", "0-1-11", "0-1-11")});
    REQUIRE(c.has_value());
    CHECK(*c == "b");
    auto tie =
        choose_candidate({replica("z", "0-1-12", "0-1-12"), replica("m", "0-1-12", "0-1-12")});
    REQUIRE(tie.has_value());
    CHECK(*tie == "m");
  }
  SECTION("applied beyond the IO position counts as received") {
    // An IO thread that never ran since restart shows an empty Gtid_IO_Pos.
    auto c = choose_candidate({replica("a", "", "0-1-20"), replica("b", "0-1-19", "0-1-19")});
    REQUIRE(c.has_value());
    CHECK(*c == "a");
  }
  SECTION("errant and unreachable replicas are never chosen") {
    auto c = choose_candidate({replica("a", "0-1-30", "0-1-30", true),
                               replica("b", "0-1-40", "0-1-40", false, false),
                               replica("c", "0-1-10", "0-1-10")});
    REQUIRE(c.has_value());
    CHECK(*c == "c");
  }
  SECTION("nobody eligible") {
    auto c = choose_candidate(
        {replica("a", "0-1-30", "0-1-30", true), replica("b", "0-1-40", "0-1-40", false, false)});
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code == Errc::failed_precondition);
    CHECK_THAT(c.error().message, Catch::Contains("\"a\" has errant transactions") &&
                                      Catch::Contains("\"b\" is unreachable"));
    auto none = choose_candidate({});
    REQUIRE_FALSE(none.has_value());
    CHECK(none.error().code == Errc::failed_precondition);
  }
  SECTION("multi-domain: the one that has every domain's newest") {
    auto c = choose_candidate({replica("a", "0-1-10,1-2-5", "0-1-10,1-2-5"),
                               replica("b", "0-1-10,1-2-6", "0-1-9,1-2-6"),
                               replica("c", "0-1-10", "0-1-10")});
    REQUIRE(c.has_value());
    CHECK(*c == "b");
  }
  SECTION("multi-domain: each ahead in a different domain is refused") {
    auto c = choose_candidate({replica("a", "0-1-11,1-2-5", "0-1-11,1-2-5"),
                               replica("b", "0-1-10,1-2-6", "0-1-10,1-2-6")});
    REQUIRE_FALSE(c.has_value());
    CHECK(c.error().code == Errc::failed_precondition);
    CHECK_THAT(c.error().message, Catch::Contains("\"a\" lacks 1-2-6 that \"b\" received") &&
                                      Catch::Contains("\"b\" lacks 0-1-11 that \"a\" received"));
  }
  SECTION("equal received, applied unordered across domains: smallest name") {
    auto c = choose_candidate({replica("b", "0-1-10,1-2-6", "0-1-10,1-2-5"),
                               replica("a", "0-1-10,1-2-6", "0-1-9,1-2-6")});
    REQUIRE(c.has_value());
    CHECK(*c == "a");
  }
  SECTION("input order does not matter") {
    std::vector<CandidateInfo> rs = {replica("x", "0-1-5", "0-1-5"), replica("y", "0-1-5", "0-1-5"),
                                     replica("w", "0-1-4", "0-1-4")};
    auto first = choose_candidate(rs);
    std::reverse(rs.begin(), rs.end());
    auto second = choose_candidate(rs);
    REQUIRE(first.has_value());
    REQUIRE(second.has_value());
    CHECK(*first == "x");
    CHECK(*second == "x");
  }
}
