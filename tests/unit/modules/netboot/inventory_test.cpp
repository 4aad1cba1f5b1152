#include "modules/netboot/inventory.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "agent/store/sqlite_store.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/netboot/ipam_example.hpp"

using namespace neco;
using namespace neco::netboot;
using nlohmann::json;
using S = MachineState;

namespace {

IpamConfig config() {
  return neco::netboot::testing::ipam_example();
}

MachineSpec spec(std::string serial, std::uint32_t rack, std::string role = "worker") {
  MachineSpec s;
  s.serial = std::move(serial);
  s.rack = rack;
  s.role = std::move(role);
  s.bmc_type = "IPMI-2.0";
  return s;
}

// A real SQLite store in a temp dir, and an inventory on it with a clock the test moves.
struct Fixture {
  neco::testing::TempDir dir;
  std::unique_ptr<store::SqliteStore> store;
  std::atomic<std::int64_t> clock{1'700'000'000};
  std::unique_ptr<Inventory> inv;

  Fixture() {
    auto s = store::SqliteStore::open(dir.file("store.db"));
    if (!s) FAIL("open: " << s.error().message);
    store = std::move(*s);
    InventoryOptions o;
    o.clock = [this] {
      return std::chrono::system_clock::time_point(std::chrono::seconds(clock.load()));
    };
    inv = std::make_unique<Inventory>(*store, std::move(o));
  }
  void with_ipam() {
    auto r = inv->put_ipam(config(), "admin");
    if (!r) FAIL("put_ipam: " << r.error().message);
  }
  Machine reg(std::string serial, std::uint32_t rack, std::string role = "worker") {
    auto m = inv->register_machine(spec(std::move(serial), rack, std::move(role)), "admin");
    if (!m) FAIL("register: " << m.error().message);
    return *m;
  }
  std::vector<AuditEntry> audit_all() {
    AuditQuery q;
    q.limit = 0;
    q.newest_first = false;
    auto r = inv->audit(q);
    if (!r) FAIL("audit: " << r.error().message);
    return *r;
  }
  std::vector<std::string> serials(const MachineFilter& f) {
    auto r = inv->query(f);
    if (!r) FAIL("query: " << r.error().message);
    std::vector<std::string> out;
    for (const auto& m : *r)
      out.push_back(m.serial);
    return out;
  }
};

}  // namespace

TEST_CASE("Inventory registers machines with indexes and addresses", "[netboot][inventory]") {
  Fixture f;
  auto none = f.inv->register_machine(spec("a", 0), "admin");
  REQUIRE_FALSE(none);
  CHECK(none.error().code == Errc::failed_precondition);
  CHECK(f.inv->get_ipam().error().code == Errc::not_found);

  f.with_ipam();
  CHECK(f.inv->get_ipam() == config());
  const auto a = f.reg("a", 0);
  CHECK(a.index_in_rack == 4);
  CHECK(a.state == S::uninitialized);
  CHECK(a.register_date == 1'700'000'000);
  CHECK(a.state_since == 1'700'000'000);
  REQUIRE(a.ipv4.size() == 3);
  CHECK(format_ipv4(a.ipv4[0].address) == "10.69.0.4");
  CHECK(format_ipv4(a.ipv4[2].address) == "10.69.0.132");
  CHECK(format_ipv4(a.bmc.address) == "10.72.17.4");
  CHECK(f.reg("b", 0).index_in_rack == 5);
  CHECK(f.reg("c", 1).index_in_rack == 4);
  const auto boot = f.reg("boot0", 0, "boot");
  CHECK(boot.index_in_rack == 3);
  CHECK(format_ipv4(boot.ipv4[0].address) == "10.69.0.3");
  CHECK(f.inv->get("a") == a);

  // The index claims and the count in the store.
  CHECK(f.store->get(f.inv->index_key(0, 4))->value == "a");
  CHECK(f.store->get(f.inv->index_key(0, 3))->value == "boot0");
  CHECK(f.store->get(f.inv->count_key())->value == "4");
  CHECK(f.inv->index_key(1, 4) == "/neco/netboot/index/0000000001/0000000004");
  CHECK(f.inv->machine_key("a") == "/neco/netboot/machines/a");

  SECTION("refusals change nothing") {
    const auto rev = f.store->revision();
    const auto check = [&](const MachineSpec& s, Errc code, const char* needle) {
      INFO(s.serial);
      auto r = f.inv->register_machine(s, "admin");
      REQUIRE_FALSE(r);
      CHECK(r.error().code == code);
      CHECK_THAT(r.error().message, Catch::Contains(needle));
    };
    check(spec("a", 1), Errc::already_exists, "'a' is already registered");
    check(spec("boot1", 0, "boot"), Errc::already_exists, "already has a boot server: 'boot0'");
    check(spec("far", 120), Errc::invalid_argument, "racks 0 to 119");
    check(spec("bad/serial", 0), Errc::invalid_argument, "serial");
    check(spec("x", 0, ""), Errc::invalid_argument, "role");
    auto bad_label = spec("y", 0);
    bad_label.labels["-x"] = "1";
    check(bad_label, Errc::invalid_argument, "labels");
    CHECK(f.store->revision() == rev);
    CHECK(f.audit_all().size() == 5);  // put_ipam + 4 registrations
  }

  SECTION("a full rack") {
    for (int i = 2; i < 27; ++i)
      f.reg("fill" + std::to_string(i), 0);
    auto full = f.inv->register_machine(spec("one-more", 0), "admin");
    REQUIRE_FALSE(full);
    CHECK(full.error().code == Errc::failed_precondition);
    CHECK_THAT(full.error().message, Catch::Contains("rack 0 is full"));
    CHECK(f.inv->query({.rack = 0})->size() == 28);  // 27 nodes + the boot server
  }
}

TEST_CASE("Inventory queries with filters", "[netboot][inventory]") {
  Fixture f;
  f.with_ipam();
  f.reg("n1", 0);
  f.reg("n2", 0);
  f.reg("n3", 1);
  f.reg("b1", 1, "boot");
  REQUIRE(f.inv->update("n2", MachineUpdate{{{"zone", "a"}}, {}}, "admin"));
  REQUIRE(f.inv->update("n3", MachineUpdate{{{"zone", "a"}, {"gpu", "yes"}}, {}}, "admin"));
  REQUIRE(f.inv->set_state("n3", S::healthy, "admin"));

  using V = std::vector<std::string>;
  CHECK(f.serials({}) == V{"b1", "n1", "n2", "n3"});
  CHECK(f.serials({.rack = 0}) == V{"n1", "n2"});
  CHECK(f.serials({.role = "boot"}) == V{"b1"});
  CHECK(f.serials({.state = S::healthy}) == V{"n3"});
  CHECK(f.serials({.state = S::uninitialized}) == V{"b1", "n1", "n2"});
  CHECK(f.serials({.labels = {{"zone", "a"}}}) == V{"n2", "n3"});
  CHECK(f.serials({.labels = {{"zone", "a"}, {"gpu", "yes"}}}) == V{"n3"});
  CHECK(f.serials({.serial = "n2"}) == V{"n2"});
  CHECK(f.serials({.serial = "n2", .rack = 1}).empty());
  CHECK(f.serials({.serial = "nope"}).empty());
  CHECK(f.serials({.address = parse_ipv4_u32("10.69.0.196")}) == V{"n3"});  // rack 1 index 4
  CHECK(f.serials({.address = parse_ipv4_u32("10.69.0.195")}) == V{"b1"});  // rack 1 boot: 192 + 3
  CHECK(f.serials({.address = parse_ipv4_u32("10.72.17.37")}) == V{});      // rack 1 index 5: free
  CHECK(f.serials({.address = parse_ipv4_u32("10.72.17.36")}) == V{"n3"});  // rack 1 index 4's BMC
  CHECK(f.serials({.address = parse_ipv4_u32("10.69.0.68")}) == V{"n1"});   // n1's second NIC
  auto by_params = machine_filter_from_params({{"rack", "0"}, {"labels", "zone=a"}});
  REQUIRE(by_params);
  CHECK(f.serials(*by_params) == V{"n2"});
  CHECK(f.inv->get("nope").error().code == Errc::not_found);
}

TEST_CASE("Inventory lifecycle, updates and removal", "[netboot][inventory]") {
  Fixture f;
  f.with_ipam();
  const auto m = f.reg("m", 2);

  f.clock = 1'700'000'100;
  auto healthy = f.inv->set_state("m", S::healthy, "leader");
  REQUIRE(healthy);
  CHECK(healthy->state == S::healthy);
  CHECK(healthy->state_since == 1'700'000'100);
  CHECK(f.inv->get("m")->state == S::healthy);

  // The same state again: nothing written, nothing audited.
  const auto rev = f.store->revision();
  CHECK(f.inv->set_state("m", S::healthy, "leader")->state_since == 1'700'000'100);
  CHECK(f.store->revision() == rev);

  // Refused: the error lists where it may go, and nothing changes.
  auto retired = f.inv->set_state("m", S::retired, "admin");
  REQUIRE_FALSE(retired);
  CHECK(retired.error().code == Errc::failed_precondition);
  CHECK_THAT(
      retired.error().message,
      Catch::Contains("'m'") && Catch::Contains("unhealthy, unreachable, updating, retiring"));
  CHECK(f.inv->set_state("ghost", S::healthy, "admin").error().code == Errc::not_found);

  // Only a retired machine can be removed.
  auto early = f.inv->remove("m", "admin");
  REQUIRE_FALSE(early);
  CHECK(early.error().code == Errc::failed_precondition);
  CHECK_THAT(early.error().message, Catch::Contains("is healthy"));
  CHECK(f.inv->remove("ghost", "admin").error().code == Errc::not_found);
  CHECK(f.store->revision() == rev);

  // Labels and retire date.
  MachineUpdate u;
  u.labels = {{"zone", "b"}};
  u.retire_date = 1'900'000'000;
  auto updated = f.inv->update("m", u, "admin");
  REQUIRE(updated);
  CHECK(updated->labels.at("zone") == "b");
  CHECK(updated->retire_date == 1'900'000'000);
  CHECK(f.inv->get("m") == *updated);
  const auto rev2 = f.store->revision();
  CHECK(f.inv->update("m", u, "admin") == *updated);  // no change, no write
  MachineUpdate bad;
  bad.labels = {{"ok", "-bad"}};
  CHECK(f.inv->update("m", bad, "admin").error().code == Errc::invalid_argument);
  CHECK(f.inv->update("ghost", u, "admin").error().code == Errc::not_found);
  CHECK(f.store->revision() == rev2);

  REQUIRE(f.inv->set_state("m", S::retiring, "admin"));
  REQUIRE(f.inv->set_state("m", S::retired, "admin"));
  REQUIRE(f.inv->remove("m", "admin"));
  CHECK(f.inv->get("m").error().code == Errc::not_found);
  CHECK(f.store->get(f.inv->index_key(2, m.index_in_rack)).error().code == Errc::not_found);
  CHECK(f.store->get(f.inv->count_key())->value == "0");
  // The index is free again.
  CHECK(f.reg("m2", 2).index_in_rack == m.index_in_rack);

  // updating → uninitialized; retired → uninitialized (reuse after repair).
  REQUIRE(f.inv->set_state("m2", S::healthy, "a"));
  REQUIRE(f.inv->set_state("m2", S::updating, "a"));
  CHECK(f.inv->set_state("m2", S::healthy, "a").error().code == Errc::failed_precondition);
  REQUIRE(f.inv->set_state("m2", S::uninitialized, "a"));
}

TEST_CASE("IPAM cannot change while machines exist", "[netboot][inventory]") {
  Fixture f;
  auto bad = config();
  bad.node_gateway_offset = 0;
  const auto rev0 = f.store->revision();
  auto refused = f.inv->put_ipam(bad, "admin");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Errc::invalid_argument);
  CHECK_THAT(refused.error().message, Catch::StartsWith("node_gateway_offset"));
  CHECK(f.store->revision() == rev0);

  f.with_ipam();
  auto changed = config();
  changed.max_nodes_in_rack = 20;
  REQUIRE(f.inv->put_ipam(changed, "admin"));  // no machines yet: fine
  CHECK(f.inv->get_ipam()->max_nodes_in_rack == 20);
  f.reg("m", 0);
  const auto rev = f.store->revision();
  auto blocked = f.inv->put_ipam(config(), "admin");
  REQUIRE_FALSE(blocked);
  CHECK(blocked.error().code == Errc::failed_precondition);
  CHECK_THAT(blocked.error().message, Catch::Contains("machines are registered (1 now)"));
  CHECK(f.inv->put_ipam(changed, "admin"));  // the same config again is not a change
  CHECK(f.store->revision() == rev);

  REQUIRE(f.inv->set_state("m", S::retiring, "admin"));
  REQUIRE(f.inv->set_state("m", S::retired, "admin"));
  REQUIRE(f.inv->remove("m", "admin"));
  CHECK(f.inv->put_ipam(config(), "admin"));
  CHECK(f.inv->get_ipam() == config());
}

TEST_CASE("Concurrent registrations in one rack get distinct indexes", "[netboot][inventory]") {
  Fixture f;
  f.with_ipam();
  constexpr std::size_t kPerThread = 12;
  std::atomic<int> failures{0};
  const auto worker = [&](const std::string& name) {
    for (std::size_t i = 0; i < kPerThread; ++i) {
      if (!f.inv->register_machine(spec(name + std::to_string(i), 3), name)) ++failures;
    }
  };
  std::thread t1(worker, "x");
  std::thread t2(worker, "y");
  t1.join();
  t2.join();
  CHECK(failures == 0);
  auto all = f.inv->query({.rack = 3});
  REQUIRE(all);
  REQUIRE(all->size() == 2 * kPerThread);
  std::set<std::uint32_t> indexes;
  for (const auto& m : *all)
    indexes.insert(m.index_in_rack);
  CHECK(indexes.size() == 2 * kPerThread);
  CHECK(*indexes.begin() == 4);
  CHECK(*indexes.rbegin() == 4 + 2 * kPerThread - 1);
  CHECK(f.store->get(f.inv->count_key())->value == std::to_string(2 * kPerThread));
  AuditQuery q;
  q.action = "register";
  q.limit = 0;
  CHECK(f.inv->audit(q)->size() == 2 * kPerThread);
}

TEST_CASE("Every mutation is audited in its txn", "[netboot][inventory]") {
  Fixture f;
  f.with_ipam();
  f.clock = 1'700'000'010;
  f.reg("m", 0);
  f.clock = 1'700'000'020;
  REQUIRE(f.inv->update("m", MachineUpdate{{{"zone", "a"}}, {}}, "bob"));
  f.clock = 1'700'000'030;
  REQUIRE(f.inv->set_state("m", S::retiring, "carol"));
  f.clock = 1'700'000'040;
  REQUIRE(f.inv->set_state("m", S::retired, "carol"));
  f.clock = 1'700'000'050;
  REQUIRE(f.inv->remove("m", "dave"));

  const auto log = f.audit_all();
  REQUIRE(log.size() == 6);
  CHECK(log[0].action == "put_ipam");
  CHECK(log[0].who == "admin");
  CHECK(log[0].serial.empty());
  CHECK(log[0].before.is_null());
  CHECK(log[0].after == to_json(config()));
  CHECK(log[1].action == "register");
  CHECK(log[1].time == 1'700'000'010);
  CHECK(log[1].before.is_null());
  CHECK(log[1].after["index_in_rack"] == 4);
  CHECK(log[2].action == "update");
  CHECK(log[2].who == "bob");
  CHECK(log[2].before["labels"].empty());
  CHECK(log[2].after["labels"] == json{{"zone", "a"}});
  CHECK(log[3].action == "set_state");
  CHECK(log[3].before["state"] == "uninitialized");
  CHECK(log[3].after["state"] == "retiring");
  CHECK(log[4].after["state"] == "retired");
  CHECK(log[5].action == "remove");
  CHECK(log[5].who == "dave");
  CHECK(log[5].before["serial"] == "m");
  CHECK(log[5].after.is_null());
  // The entry is written by the mutation's own txn: same revision as the machine's last write.
  for (std::size_t i = 1; i < log.size(); ++i) {
    CHECK(log[i].revision > log[i - 1].revision);
    CHECK(log[i].serial == "m");
  }
  CHECK(to_json(log[5])["action"] == "remove");

  SECTION("queries") {
    AuditQuery q;
    CHECK(f.inv->audit(q)->front().action == "remove");  // newest first by default
    q.limit = 2;
    auto newest = f.inv->audit(q);
    REQUIRE(newest->size() == 2);
    CHECK((*newest)[0].action == "remove");
    CHECK((*newest)[1].after["state"] == "retired");
    q.newest_first = false;
    CHECK(f.inv->audit(q)->front().action == "put_ipam");
    AuditQuery window;
    window.since = 1'700'000'020;
    window.until = 1'700'000'040;  // exclusive
    window.newest_first = false;
    auto w = f.inv->audit(window);
    REQUIRE(w->size() == 2);
    CHECK((*w)[0].action == "update");
    CHECK((*w)[1].action == "set_state");
    AuditQuery by_action;
    by_action.action = "set_state";
    CHECK(f.inv->audit(by_action)->size() == 2);
    AuditQuery by_serial;
    by_serial.serial = "m";
    by_serial.limit = 0;
    CHECK(f.inv->audit(by_serial)->size() == 5);
    AuditQuery empty;
    empty.since = 1'800'000'000;
    CHECK(f.inv->audit(empty)->empty());
    empty.since = 5;
    empty.until = 4;
    CHECK(f.inv->audit(empty)->empty());

    auto p = audit_query_from_params(
        {{"since", "1700000020"}, {"until", "1700000040"}, {"order", "oldest"}, {"limit", "1"}});
    REQUIRE(p);
    CHECK(f.inv->audit(*p)->front().action == "update");
    CHECK_FALSE(audit_query_from_params({{"since", "-1"}}));
    CHECK_FALSE(audit_query_from_params({{"order", "up"}}));
    CHECK_FALSE(audit_query_from_params({{"who", "x"}}));
  }

  SECTION("pruning") {
    f.clock = 1'700'000'060;
    auto pruned = f.inv->prune_audit(1'700'000'030, "admin");
    REQUIRE(pruned);
    CHECK(*pruned == 3);  // put_ipam (at 1'700'000'000), register, update
    const auto left = f.audit_all();
    REQUIRE(left.size() == 4);
    CHECK(left.front().action == "set_state");
    CHECK(left.back().action == "prune_audit");
    CHECK(left.back().after["before"] == 1'700'000'030);
    // A cutoff in the future keeps the prune's own entry.
    f.clock = 1'700'000'070;
    CHECK(f.inv->prune_audit(1'900'000'000, "admin") == 4);
    CHECK(f.audit_all().size() == 1);
  }
}

TEST_CASE("Inventory writes go through the given txn runner", "[netboot][inventory]") {
  Fixture f;
  f.with_ipam();
  // A deposed leader: its fenced txn refuses every write.
  InventoryOptions o;
  o.txn = [](const store::Txn&) -> Expected<store::TxnResponse> {
    return fail(Errc::failed_precondition, "leadership of term 7 is lost; write refused");
  };
  Inventory fenced(*f.store, std::move(o));
  const auto rev = f.store->revision();
  auto r = fenced.register_machine(spec("m", 0), "old-leader");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::failed_precondition);
  CHECK_THAT(r.error().message, Catch::Contains("term 7"));
  CHECK(f.store->revision() == rev);
  CHECK(fenced.get_ipam() == config());  // reads still work

  // A runner that passes through (as a leader's fenced_txn nests the txn) works end to end.
  InventoryOptions pass;
  pass.prefix = "/other/";
  auto* store = f.store.get();
  pass.txn = [store](const store::Txn& t) { return store->txn(t); };
  Inventory other(*f.store, std::move(pass));
  REQUIRE(other.put_ipam(config(), "admin"));
  REQUIRE(other.register_machine(spec("m", 0), "admin"));
  CHECK(f.store->get("/other/machines/m"));
  CHECK(f.inv->get("m").error().code == Errc::not_found);  // prefixes keep them apart
}

TEST_CASE("Corrupt records are reported, not trusted", "[netboot][inventory]") {
  Fixture f;
  f.with_ipam();
  f.reg("m", 0);
  REQUIRE(f.store->put_value(f.inv->machine_key("m"), "{not json"));
  auto r = f.inv->get("m");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Errc::internal);
  CHECK_THAT(r.error().message, Catch::Contains("/neco/netboot/machines/m"));
  CHECK(f.inv->query({}).error().code == Errc::internal);
  REQUIRE(f.store->put_value(f.inv->count_key(), "many"));
  CHECK(f.inv->register_machine(spec("n", 0), "admin").error().code == Errc::internal);
}
