#include "agent/store/store_election.hpp"

#include <atomic>
#include <catch2/catch.hpp>

#include "agent/store/sqlite_store.hpp"
#include "tests/unit/agent/store/test_util.hpp"

using namespace neco;
using namespace neco::store;
using namespace neco::store::testing;
using namespace std::chrono_literals;

namespace {

// Counts callbacks so tests can wait for them.
struct Observer {
  std::atomic<int> elected{0};
  std::atomic<int> deposed{0};
  std::atomic<int64_t> last_term{0};

  LeaderLoopOptions options(std::string name) {
    LeaderLoopOptions o;
    o.prefix = "/test/election";
    o.candidate = std::move(name);
    o.ttl_seconds = 1;
    return o;
  }
  std::function<void(int64_t)> elected_cb() {
    return [this](int64_t term) {
      last_term = term;
      ++elected;
    };
  }
  std::function<void()> deposed_cb() {
    return [this] { ++deposed; };
  }
};

std::unique_ptr<SqliteStore> open_store(const TempDir& dir) {
  auto s = SqliteStore::open(dir.file("election.db"));
  if (!s) FAIL("open failed: " << s.error().message);
  return std::move(*s);
}

std::unique_ptr<LeaderLoop> start(Store& store, Observer& obs, const std::string& name) {
  auto loop =
      std::make_unique<LeaderLoop>(store, obs.options(name), obs.elected_cb(), obs.deposed_cb());
  auto ok = loop->start();
  if (!ok) FAIL("start failed: " << ok.error().message);
  return loop;
}

Txn put_txn(std::string key, std::string value) {
  Txn t;
  t.success.push_back(Op::make_put(std::move(key), std::move(value)));
  return t;
}

}  // namespace

TEST_CASE("A single candidate elects itself quickly", "[store][election]") {
  TempDir dir;
  auto store = open_store(dir);
  Observer obs;
  auto t0 = std::chrono::steady_clock::now();
  auto e = start(*store, obs, "alpha");
  REQUIRE(wait_until([&] { return e->current().is_leader; }, 2s));
  CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
  auto info = e->current();
  CHECK(info.leader == "alpha");
  CHECK(info.transitions == 1);
  REQUIRE(wait_until([&] { return obs.elected.load() == 1; }));
  auto key = store->get(e->leader_key());
  REQUIRE(key);
  CHECK(key->value == "alpha");
  CHECK(key->create_revision == info.term);
  CHECK(obs.last_term.load() == info.term);

  auto r = e->fenced_txn(put_txn("/data/x", "1"));
  REQUIRE(r);
  CHECK(r->succeeded);
  CHECK(store->get("/data/x")->value == "1");

  SECTION("stop() resigns") {
    e->stop();
    CHECK_FALSE(e->current().is_leader);
    CHECK(obs.deposed.load() == 1);
    CHECK(store->get(e->leader_key()).error().code == Errc::not_found);
    CHECK(e->fenced_txn(put_txn("/data/y", "1")).error().code == Errc::failed_precondition);
    CHECK(store->get("/data/y").error().code == Errc::not_found);
  }
  SECTION("a restarted candidate reclaims its own stale key at once") {
    // Simulate a crash: the key stays behind, held by a lease nobody keeps alive.
    auto stale = store->grant(60);
    REQUIRE(stale);
    e.reset();
    Txn t;
    t.compares.push_back(Compare::create_revision("/test/election/leader", CompareOp::equal, 0));
    t.success.push_back(Op::make_put("/test/election/leader", "alpha", stale->id));
    REQUIRE(store->txn(t)->succeeded);
    Observer obs2;
    auto e2 = start(*store, obs2, "alpha");
    REQUIRE(wait_until([&] { return e2->current().is_leader; }, 2s));
    CHECK(store->keep_alive(stale->id).error().code == Errc::not_found);
  }
}

TEST_CASE("Two candidates on one store elect exactly one leader", "[store][election]") {
  TempDir dir;
  auto store = open_store(dir);
  Observer oa, ob;
  auto a = start(*store, oa, "a");
  auto b = start(*store, ob, "b");
  auto one_leader = [&] { return a->current().is_leader != b->current().is_leader; };
  REQUIRE(wait_until(one_leader, 3s));
  LeaderLoop* leader = a->current().is_leader ? a.get() : b.get();
  LeaderLoop* follower = leader == a.get() ? b.get() : a.get();
  Observer& leader_obs = leader == a.get() ? oa : ob;
  Observer& follower_obs = leader == a.get() ? ob : oa;
  auto leader_info = leader->current();
  REQUIRE(wait_until([&] { return follower->current().leader == leader_info.leader; }, 3s));
  CHECK(follower->current().term == leader_info.term);
  CHECK(follower->fenced_txn(put_txn("/data/f", "1")).error().code == Errc::failed_precondition);

  SECTION("revoking the leader's lease deposes it and the other takes over") {
    auto key = store->get(leader->leader_key());
    REQUIRE(key);
    REQUIRE(store->revoke(key->lease));
    // Before or after the old leader notices, its fenced write must not land.
    auto stale = leader->fenced_txn(put_txn("/data/stale", "1"));
    REQUIRE_FALSE(stale);
    CHECK(stale.error().code == Errc::failed_precondition);
    CHECK(store->get("/data/stale").error().code == Errc::not_found);

    REQUIRE(wait_until([&] { return leader_obs.deposed.load() == 1; }, 1s));
    CHECK_FALSE(leader->current().is_leader);
    REQUIRE(wait_until([&] { return follower->current().is_leader; }, 2s));
    CHECK(follower->current().term > leader_info.term);
    // current() turns true just before on_elected runs on the election thread.
    CHECK(
        wait_until([&] { return follower_obs.last_term.load() == follower->current().term; }, 1s));
    auto ok = follower->fenced_txn(put_txn("/data/new", "1"));
    REQUIRE(ok);
    CHECK(ok->succeeded);
    // The old leader campaigns again but stays a follower.
    REQUIRE(wait_until([&] { return leader->current().leader == follower->current().leader; }, 2s));
    CHECK_FALSE(leader->current().is_leader);
  }
  SECTION("stopping the leader hands over promptly") {
    auto t0 = std::chrono::steady_clock::now();
    leader->stop();
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    CHECK(leader_obs.deposed.load() == 1);
    REQUIRE(wait_until([&] { return follower->current().is_leader; }, 1s));
    CHECK(follower->current().term > leader_info.term);
  }
}

TEST_CASE("LeaderLoop rejects bad options", "[store][election]") {
  TempDir dir;
  auto store = open_store(dir);
  LeaderLoopOptions o;
  CHECK(LeaderLoop(*store, o).start().error().code == Errc::invalid_argument);
  o.candidate = "x";
  o.ttl_seconds = 0;
  CHECK(LeaderLoop(*store, o).start().error().code == Errc::invalid_argument);
}
