#include "modules/netboot/health_feed.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agent/cluster/records.hpp"
#include "agent/store/sqlite_store.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/netboot/ipam_example.hpp"

using namespace neco;
using namespace neco::netboot;
using S = MachineState;

TEST_CASE("fed_state follows membership within the lifecycle table", "[netboot][feed]") {
  CHECK(fed_state(S::healthy, "unreachable", "healthy") == S::unreachable);
  CHECK(fed_state(S::unhealthy, "unreachable", "") == S::unreachable);
  CHECK(fed_state(S::unreachable, "healthy", "healthy") == S::healthy);
  CHECK(fed_state(S::uninitialized, "healthy", "healthy") == S::healthy);
  CHECK(fed_state(S::healthy, "healthy", "degraded") == S::unhealthy);
  CHECK(fed_state(S::unreachable, "healthy", "failed") == S::unhealthy);
  CHECK(fed_state(S::unhealthy, "healthy", "healthy") == S::healthy);
  // Not allowed by the table, or nothing to do.
  CHECK_FALSE(fed_state(S::uninitialized, "unreachable", ""));
  CHECK_FALSE(fed_state(S::uninitialized, "healthy", "degraded"));
  CHECK_FALSE(fed_state(S::healthy, "healthy", "healthy"));
  CHECK_FALSE(fed_state(S::healthy, "healthy", "starting"));
  CHECK_FALSE(fed_state(S::healthy, "joining", "healthy"));
  // Operator-driven states are left alone whatever the cluster says.
  for (auto s : {S::updating, S::retiring, S::retired}) {
    CHECK_FALSE(fed_state(s, "unreachable", ""));
    CHECK_FALSE(fed_state(s, "healthy", "healthy"));
  }
}

TEST_CASE("feed_machine_states moves machines by their node's verdict", "[netboot][feed]") {
  neco::testing::TempDir dir;
  auto st = store::SqliteStore::open(dir.file("store.db"));
  REQUIRE(st);
  auto& store = **st;
  Inventory inv(store);
  REQUIRE(inv.put_ipam(neco::netboot::testing::ipam_example(), "admin"));
  for (const char* serial : {"AB1", "CD2", "EF3", "GH4"}) {
    MachineSpec s;
    s.serial = serial;
    s.rack = 0;
    s.role = "worker";
    s.bmc_type = "IPMI-2.0";
    REQUIRE(inv.register_machine(s, "admin"));
  }
  REQUIRE(inv.set_state("CD2", S::healthy, "admin"));
  REQUIRE(inv.set_state("EF3", S::retiring, "admin"));
  auto member = [&](const std::string& name, const char* verdict, const char* health) {
    REQUIRE(store.put_value(cluster::keys::at(cluster::keys::kState, name),
                            nlohmann::json{{"state", verdict}}.dump()));
    REQUIRE(store.put_value(cluster::keys::at(cluster::keys::kStatus, name),
                            nlohmann::json{{"health", health}}.dump()));
  };
  member("ab1", "healthy", "healthy");      // uninitialized -> healthy (name is lower case)
  member("cd2", "unreachable", "healthy");  // healthy -> unreachable
  member("ef3", "unreachable", "healthy");  // retiring: left alone
  member("other", "unreachable", "");       // no machine
  auto r = feed_machine_states(store, inv);
  REQUIRE(r);
  CHECK(r->matched == 3);
  CHECK(r->changed == 2);
  CHECK(r->failed == 0);
  CHECK(inv.get("AB1")->state == S::healthy);
  CHECK(inv.get("CD2")->state == S::unreachable);
  CHECK(inv.get("EF3")->state == S::retiring);
  CHECK(inv.get("GH4")->state == S::uninitialized);
  // A second pass changes nothing; the audit names the feed.
  auto again = feed_machine_states(store, inv);
  REQUIRE(again);
  CHECK(again->changed == 0);
  AuditQuery q;
  q.serial = "CD2";
  q.action = "set_state";
  auto audit = inv.audit(q);
  REQUIRE(audit);
  REQUIRE_FALSE(audit->empty());
  CHECK(audit->front().who == "netboot-health-feed");
}
