#include "tests/unit/agent/store/store_conformance.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <set>
#include <thread>

#include "tests/unit/agent/store/test_util.hpp"

namespace neco::store::testing {
namespace {

int64_t current_revision(Store& s) {
  auto r = s.range(RangeRequest{KeyRange::exact("/conf/__none__"), 0});
  REQUIRE(r);
  return r->revision;
}

std::vector<std::string> keys_of(const std::vector<KeyValue>& kvs) {
  std::vector<std::string> out;
  out.reserve(kvs.size());
  for (const auto& kv : kvs)
    out.push_back(kv.key);
  return out;
}

bool compare_holds(Store& s, Compare c) {
  Txn t;
  t.compares.push_back(std::move(c));
  auto r = s.txn(t);
  REQUIRE(r);
  return r->succeeded;
}

void check_kv_basics(Store& s) {
  int64_t r0 = current_revision(s);
  auto p1 = s.put(PutRequest{"/conf/a", "1", 0, true});
  REQUIRE(p1);
  CHECK(p1->revision == r0 + 1);
  CHECK_FALSE(p1->prev_kv.has_value());
  auto kv = s.get("/conf/a");
  REQUIRE(kv);
  CHECK(kv->value == "1");
  CHECK(kv->create_revision == r0 + 1);
  CHECK(kv->mod_revision == r0 + 1);
  CHECK(kv->version == 1);
  CHECK(kv->lease == 0);

  auto p2 = s.put(PutRequest{"/conf/a", "2", 0, true});
  REQUIRE(p2);
  CHECK(p2->revision == r0 + 2);
  REQUIRE(p2->prev_kv.has_value());
  CHECK(p2->prev_kv->value == "1");
  kv = s.get("/conf/a");
  REQUIRE(kv);
  CHECK(kv->create_revision == r0 + 1);
  CHECK(kv->mod_revision == r0 + 2);
  CHECK(kv->version == 2);

  // Binary-safe keys and values, and empty values.
  std::string bin("/conf/b\0in", 10);
  REQUIRE(s.put_value(bin, std::string("\0\xff", 2)));
  kv = s.get(bin);
  REQUIRE(kv);
  CHECK(kv->value == std::string("\0\xff", 2));
  REQUIRE(s.put_value("/conf/empty", ""));
  CHECK(s.get("/conf/empty")->value.empty());

  auto missing = s.get("/conf/missing");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Errc::not_found);

  int64_t before = current_revision(s);
  auto bad = s.put(PutRequest{"/conf/leased", "x", 424242, false});
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::not_found);
  auto empty_key = s.put(PutRequest{"", "x", 0, false});
  REQUIRE_FALSE(empty_key);
  CHECK(empty_key.error().code == Errc::invalid_argument);
  CHECK(current_revision(s) == before);
}

void check_ranges(Store& s) {
  for (auto k : {"/conf/p/c", "/conf/p/a", "/conf/q", "/conf/p/b", "/conf/p"}) {
    REQUIRE(s.put_value(k, k));
  }
  auto r = s.range(RangeRequest{KeyRange::prefix("/conf/p/"), 0});
  REQUIRE(r);
  CHECK(keys_of(r->kvs) == std::vector<std::string>{"/conf/p/a", "/conf/p/b", "/conf/p/c"});
  CHECK(r->count == 3);
  CHECK_FALSE(r->more);
  CHECK(r->revision == current_revision(s));

  r = s.range(RangeRequest{KeyRange::prefix("/conf/p/"), 2});
  REQUIRE(r);
  CHECK(keys_of(r->kvs) == std::vector<std::string>{"/conf/p/a", "/conf/p/b"});
  CHECK(r->count == 3);
  CHECK(r->more);

  r = s.range(RangeRequest{KeyRange{"/conf/p/a", "/conf/p/c"}, 0});
  REQUIRE(r);
  CHECK(keys_of(r->kvs) == std::vector<std::string>{"/conf/p/a", "/conf/p/b"});

  r = s.range(RangeRequest{KeyRange{"/conf/p/b", std::string(1, '\0')}, 0});
  REQUIRE(r);
  CHECK(keys_of(r->kvs) == std::vector<std::string>{"/conf/p/b", "/conf/p/c", "/conf/q"});

  r = s.range(RangeRequest{KeyRange::exact("/conf/p"), 0});
  REQUIRE(r);
  CHECK(keys_of(r->kvs) == std::vector<std::string>{"/conf/p"});

  r = s.range(RangeRequest{KeyRange::prefix("/conf/zz"), 0});
  REQUIRE(r);
  CHECK(r->kvs.empty());
  CHECK(r->count == 0);
}

void check_delete(Store& s) {
  for (auto k : {"/conf/d/1", "/conf/d/2", "/conf/d/3", "/conf/e"})
    REQUIRE(s.put_value(k, "v"));
  int64_t r0 = current_revision(s);
  auto d = s.delete_range(DeleteRequest{KeyRange::exact("/conf/e"), false});
  REQUIRE(d);
  CHECK(d->deleted == 1);
  CHECK(d->revision == r0 + 1);
  CHECK(s.get("/conf/e").error().code == Errc::not_found);

  // Deleting nothing is not a write.
  d = s.delete_range(DeleteRequest{KeyRange::exact("/conf/e"), false});
  REQUIRE(d);
  CHECK(d->deleted == 0);
  CHECK(d->revision == r0 + 1);

  d = s.delete_range(DeleteRequest{KeyRange::prefix("/conf/d/"), true});
  REQUIRE(d);
  CHECK(d->deleted == 3);
  CHECK(d->revision == r0 + 2);
  CHECK(keys_of(d->prev_kvs) == std::vector<std::string>{"/conf/d/1", "/conf/d/2", "/conf/d/3"});
  CHECK(s.range(RangeRequest{KeyRange::prefix("/conf/d/"), 0})->count == 0);

  // Recreating a deleted key starts a new generation.
  REQUIRE(s.put_value("/conf/e", "again"));
  auto kv = s.get("/conf/e");
  REQUIRE(kv);
  CHECK(kv->version == 1);
  CHECK(kv->create_revision == r0 + 3);
}

void check_txn_compares(Store& s) {
  auto lease = s.grant(60);
  REQUIRE(lease);
  auto c1 = s.put_value("/conf/k", "v1");
  REQUIRE(c1);
  auto m = s.put_value("/conf/k", "v2", lease->id);
  REQUIRE(m);
  const std::string k = "/conf/k";
  using O = CompareOp;

  // version is 2
  CHECK(compare_holds(s, Compare::version(k, O::equal, 2)));
  CHECK_FALSE(compare_holds(s, Compare::version(k, O::equal, 1)));
  CHECK(compare_holds(s, Compare::version(k, O::not_equal, 1)));
  CHECK(compare_holds(s, Compare::version(k, O::less, 3)));
  CHECK_FALSE(compare_holds(s, Compare::version(k, O::less, 2)));
  CHECK(compare_holds(s, Compare::version(k, O::greater, 1)));
  // create_revision is c1
  CHECK(compare_holds(s, Compare::create_revision(k, O::equal, *c1)));
  CHECK(compare_holds(s, Compare::create_revision(k, O::not_equal, *m)));
  CHECK(compare_holds(s, Compare::create_revision(k, O::less, *m)));
  CHECK_FALSE(compare_holds(s, Compare::create_revision(k, O::greater, *c1)));
  // mod_revision is m
  CHECK(compare_holds(s, Compare::mod_revision(k, O::equal, *m)));
  CHECK_FALSE(compare_holds(s, Compare::mod_revision(k, O::not_equal, *m)));
  CHECK(compare_holds(s, Compare::mod_revision(k, O::greater, *c1)));
  CHECK_FALSE(compare_holds(s, Compare::mod_revision(k, O::less, *m)));
  // value is "v2"
  CHECK(compare_holds(s, Compare::value_of(k, O::equal, "v2")));
  CHECK(compare_holds(s, Compare::value_of(k, O::not_equal, "v1")));
  CHECK(compare_holds(s, Compare::value_of(k, O::greater, "v1")));
  CHECK(compare_holds(s, Compare::value_of(k, O::less, "v3")));
  CHECK_FALSE(compare_holds(s, Compare::value_of(k, O::less, "v2")));
  // lease
  CHECK(compare_holds(s, Compare::lease(k, O::equal, lease->id)));
  CHECK(compare_holds(s, Compare::lease(k, O::not_equal, 0)));
  CHECK(compare_holds(s, Compare::lease(k, O::greater, 0)));
  CHECK_FALSE(compare_holds(s, Compare::lease(k, O::less, lease->id)));

  // A missing key: numbers are 0, and a value compare never holds.
  const std::string none = "/conf/none";
  CHECK(compare_holds(s, Compare::version(none, O::equal, 0)));
  CHECK(compare_holds(s, Compare::create_revision(none, O::equal, 0)));
  CHECK(compare_holds(s, Compare::mod_revision(none, O::equal, 0)));
  CHECK(compare_holds(s, Compare::lease(none, O::equal, 0)));
  CHECK_FALSE(compare_holds(s, Compare::value_of(none, O::equal, "")));
  CHECK_FALSE(compare_holds(s, Compare::value_of(none, O::not_equal, "")));

  // All compares must hold.
  Txn t;
  t.compares = {Compare::version(k, O::equal, 2), Compare::value_of(k, O::equal, "nope")};
  auto r = s.txn(t);
  REQUIRE(r);
  CHECK_FALSE(r->succeeded);
  REQUIRE(s.revoke(lease->id));
}

void check_txn_branches(Store& s) {
  REQUIRE(s.put_value("/conf/t/x", "old"));
  REQUIRE(s.put_value("/conf/t/gone", "bye"));
  int64_t r0 = current_revision(s);

  Txn t;
  t.compares = {Compare::value_of("/conf/t/x", CompareOp::equal, "old")};
  t.success = {Op::make_put("/conf/t/x", "new"), Op::make_put("/conf/t/y", "y"),
               Op::make_delete(KeyRange::exact("/conf/t/gone")),
               Op::make_range(RangeRequest{KeyRange::prefix("/conf/t/"), 0})};
  t.failure = {Op::make_put("/conf/t/failed", "1")};
  auto r = s.txn(t);
  REQUIRE(r);
  CHECK(r->succeeded);
  CHECK(r->revision == r0 + 1);  // several writes, one revision
  REQUIRE(r->responses.size() == 4);
  CHECK(r->responses[0].type == Op::Type::put);
  CHECK(r->responses[0].put.revision == r0 + 1);
  CHECK(r->responses[2].del.deleted == 1);
  // A range inside the txn sees the txn's own earlier writes.
  CHECK(keys_of(r->responses[3].range.kvs) == std::vector<std::string>{"/conf/t/x", "/conf/t/y"});
  CHECK(s.get("/conf/t/x")->mod_revision == r0 + 1);
  CHECK(s.get("/conf/t/y")->create_revision == r0 + 1);
  CHECK(s.get("/conf/t/failed").error().code == Errc::not_found);

  // Same txn again: the compare fails now, so the failure branch runs.
  r = s.txn(t);
  REQUIRE(r);
  CHECK_FALSE(r->succeeded);
  CHECK(r->revision == r0 + 2);
  REQUIRE(r->responses.size() == 1);
  CHECK(s.get("/conf/t/failed")->value == "1");
  CHECK(s.get("/conf/t/x")->value == "new");

  // A txn without writes does not bump the revision.
  Txn ro;
  ro.success = {Op::make_range(RangeRequest{KeyRange::exact("/conf/t/x"), 0})};
  r = s.txn(ro);
  REQUIRE(r);
  CHECK(r->succeeded);
  CHECK(r->revision == r0 + 2);
  CHECK(r->responses[0].range.kvs.size() == 1);
  Txn empty_failure;
  empty_failure.compares = {Compare::version("/conf/t/x", CompareOp::equal, 99)};
  empty_failure.success = {Op::make_put("/conf/t/z", "z")};
  r = s.txn(empty_failure);
  REQUIRE(r);
  CHECK_FALSE(r->succeeded);
  CHECK(current_revision(s) == r0 + 2);

  // Writing one key twice in a txn is refused, and nothing of it lands.
  Txn dup;
  dup.success = {Op::make_put("/conf/t/d", "1"), Op::make_put("/conf/t/d", "2")};
  auto bad = s.txn(dup);
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Errc::invalid_argument);
  CHECK(s.get("/conf/t/d").error().code == Errc::not_found);
  CHECK(current_revision(s) == r0 + 2);

  // A put with a missing lease fails the whole txn.
  Txn bad_lease;
  bad_lease.success = {Op::make_put("/conf/t/e", "1"), Op::make_put("/conf/t/f", "1", 777)};
  REQUIRE_FALSE(s.txn(bad_lease));
  CHECK(s.get("/conf/t/e").error().code == Errc::not_found);

  // Nested txns run their own compares within the same revision.
  Txn inner;
  inner.compares = {Compare::value_of("/conf/t/x", CompareOp::equal, "new")};
  inner.success = {Op::make_put("/conf/t/inner", "yes")};
  Txn outer;
  outer.success = {Op::make_put("/conf/t/outer", "yes"), Op::make_txn(inner)};
  r = s.txn(outer);
  REQUIRE(r);
  CHECK(r->revision == r0 + 3);
  REQUIRE(r->responses.size() == 2);
  REQUIRE(r->responses[1].txn);
  CHECK(r->responses[1].txn->succeeded);
  CHECK(r->responses[1].txn->revision == r0 + 3);
  CHECK(s.get("/conf/t/inner")->mod_revision == r0 + 3);
}

void check_watch_replay_live_cancel(Store& s) {
  int64_t r0 = current_revision(s);
  REQUIRE(s.put_value("/conf/w/a", "1"));                          // r0+1
  REQUIRE(s.put_value("/conf/other", "x"));                        // r0+2, outside the range
  REQUIRE(s.put_value("/conf/w/a", "2"));                          // r0+3
  REQUIRE(s.delete_range({KeyRange::exact("/conf/w/a"), false}));  // r0+4

  Collector c;
  auto w = s.watch(WatchRequest{KeyRange::prefix("/conf/w/"), r0 + 1, true}, c.callback());
  REQUIRE(w);
  REQUIRE(c.wait_events(3));
  REQUIRE(s.put_value("/conf/w/b", "3"));  // r0+5, live
  REQUIRE(c.wait_events(4));
  auto ev = c.events();
  REQUIRE(ev.size() == 4);
  CHECK(ev[0].type == EventType::put);
  CHECK(ev[0].kv.mod_revision == r0 + 1);
  CHECK_FALSE(ev[0].prev_kv.has_value());
  CHECK(ev[1].kv.value == "2");
  CHECK(ev[1].kv.version == 2);
  REQUIRE(ev[1].prev_kv.has_value());
  CHECK(ev[1].prev_kv->value == "1");
  CHECK(ev[2].type == EventType::del);
  CHECK(ev[2].kv.key == "/conf/w/a");
  CHECK(ev[2].kv.mod_revision == r0 + 4);
  REQUIRE(ev[2].prev_kv.has_value());
  CHECK(ev[2].prev_kv->value == "2");
  CHECK(ev[3].kv.key == "/conf/w/b");
  CHECK(ev[3].kv.mod_revision == r0 + 5);
  for (const auto& r : c.responses())
    CHECK_FALSE(r.error.has_value());

  // A txn's events arrive together, as one revision.
  Txn t;
  t.success = {Op::make_put("/conf/w/c", "c"), Op::make_put("/conf/w/d", "d")};
  REQUIRE(s.txn(t));
  REQUIRE(c.wait_events(6));
  auto last = c.responses().back();
  CHECK(last.events.size() == 2);
  CHECK(last.revision == r0 + 6);

  // After cancel returns, nothing more is delivered. A second watch proves the next write was
  // dispatched.
  (*w)->cancel();
  size_t seen = c.event_count();
  Collector probe;
  auto w2 = s.watch(WatchRequest{KeyRange::prefix("/conf/w/"), 0, false}, probe.callback());
  REQUIRE(w2);
  REQUIRE(s.put_value("/conf/w/e", "e"));
  REQUIRE(probe.wait_events(1));
  CHECK(probe.events().front().kv.key == "/conf/w/e");  // start_revision 0: only new writes
  CHECK(c.event_count() == seen);
  w->reset();  // destroying a cancelled watch is fine
}

void check_watch_cancel_from_callback(Store& s) {
  std::atomic<int> calls{0};
  std::unique_ptr<Watch> handle;
  std::mutex mu;
  auto w =
      s.watch(WatchRequest{KeyRange::prefix("/conf/self/"), 0, false}, [&](const WatchResponse&) {
        ++calls;
        std::lock_guard lock(mu);
        if (handle) handle->cancel();
      });
  REQUIRE(w);
  {
    std::lock_guard lock(mu);
    handle = std::move(*w);
  }
  REQUIRE(s.put_value("/conf/self/1", "1"));
  REQUIRE(wait_until([&] { return calls.load() >= 1; }));
  Collector probe;
  auto w2 = s.watch(WatchRequest{KeyRange::prefix("/conf/self/"), 0, false}, probe.callback());
  REQUIRE(w2);
  REQUIRE(s.put_value("/conf/self/2", "2"));
  REQUIRE(probe.wait_events(1));
  CHECK(calls.load() == 1);
  std::unique_ptr<Watch> done;
  {
    std::lock_guard lock(mu);
    done = std::move(handle);
  }
  done.reset();  // destroyed outside `mu`: cancel() may wait for a callback that takes it
}

// Writes keep landing while the watch is created: the replay/live boundary must neither lose
// nor repeat a revision.
void check_watch_boundary_under_writes(Store& s) {
  int64_t start = current_revision(s) + 1;
  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::thread writer([&] {
    for (int i = 0; i < 120 && !stop.load(); ++i) {
      if (!s.put_value("/conf/b/" + std::to_string(i % 7), std::to_string(i))) break;
      ++written;
    }
  });
  REQUIRE(wait_until([&] { return written.load() >= 20; }));
  Collector c;
  auto w = s.watch(WatchRequest{KeyRange::prefix("/conf/b/"), start, false}, c.callback());
  writer.join();
  REQUIRE(w);
  int total = written.load();
  REQUIRE(c.wait_events(static_cast<size_t>(total)));
  auto ev = c.events();
  REQUIRE(ev.size() == static_cast<size_t>(total));
  for (size_t i = 0; i < ev.size(); ++i) {
    CHECK(ev[i].kv.mod_revision == start + static_cast<int64_t>(i));
  }
}

void check_compaction(Store& s) {
  int64_t r0 = current_revision(s);
  for (int i = 0; i < 5; ++i)
    REQUIRE(s.put_value("/conf/c", std::to_string(i)));
  REQUIRE(s.compact(r0 + 3));

  Collector c;
  auto w = s.watch(WatchRequest{KeyRange::exact("/conf/c"), r0 + 1, false}, c.callback());
  REQUIRE(w);
  REQUIRE(wait_until([&] { return !c.responses().empty(); }));
  auto r = c.responses().front();
  REQUIRE(r.error.has_value());
  CHECK(r.error->code == Errc::compacted);
  CHECK(r.compact_revision == r0 + 3);
  CHECK(r.error->message.find(std::to_string(r0 + 3)) != std::string::npos);
  REQUIRE(s.put_value("/conf/c", "after"));
  // Nothing follows the error: the watch has ended.
  Collector probe;
  auto w2 = s.watch(WatchRequest{KeyRange::exact("/conf/c"), r0 + 3, false}, probe.callback());
  REQUIRE(w2);
  REQUIRE(probe.wait_events(4));  // r0+3, r0+4, r0+5 and the one after
  CHECK(probe.events().front().kv.mod_revision == r0 + 3);
  CHECK(c.responses().size() == 1);

  auto again = s.compact(r0 + 2);
  REQUIRE_FALSE(again);
  CHECK(again.error().code == Errc::compacted);
  auto future = s.compact(current_revision(s) + 10);
  REQUIRE_FALSE(future);
  CHECK(future.error().code == Errc::invalid_argument);
}

void check_leases(Store& s) {
  auto l = s.grant(60);
  REQUIRE(l);
  CHECK(l->ttl == 60);
  CHECK(l->id != 0);
  REQUIRE(s.put_value("/conf/l/a", "a", l->id));
  REQUIRE(s.put_value("/conf/l/b", "b", l->id));
  REQUIRE(s.put_value("/conf/l/c", "c"));
  auto ttl = s.time_to_live(l->id);
  REQUIRE(ttl);
  CHECK(ttl->granted_ttl == 60);
  CHECK(ttl->ttl > 50);
  CHECK(ttl->ttl <= 60);
  CHECK(ttl->keys == std::vector<std::string>{"/conf/l/a", "/conf/l/b"});
  auto ka = s.keep_alive(l->id);
  REQUIRE(ka);
  CHECK(*ka == 60);

  Collector c;
  auto w = s.watch(WatchRequest{KeyRange::prefix("/conf/l/"), 0, false}, c.callback());
  REQUIRE(w);
  int64_t r0 = current_revision(s);
  auto rv = s.revoke(l->id);
  REQUIRE(rv);
  CHECK(*rv == r0 + 1);  // both keys go in one revision
  CHECK(s.range({KeyRange::prefix("/conf/l/"), 0})->count == 1);
  REQUIRE(c.wait_events(2));
  for (const auto& e : c.events()) {
    CHECK(e.type == EventType::del);
    CHECK(e.kv.mod_revision == r0 + 1);
  }
  CHECK(s.keep_alive(l->id).error().code == Errc::not_found);
  CHECK(s.time_to_live(l->id).error().code == Errc::not_found);
  CHECK(s.revoke(l->id).error().code == Errc::not_found);
  CHECK(s.put(PutRequest{"/conf/l/d", "d", l->id, false}).error().code == Errc::not_found);

  // A chosen id, and a duplicate.
  auto chosen = s.grant(30, 1234567);
  REQUIRE(chosen);
  CHECK(chosen->id == 1234567);
  CHECK(s.grant(30, 1234567).error().code == Errc::already_exists);
  CHECK(s.grant(0).error().code == Errc::invalid_argument);
  REQUIRE(s.revoke(1234567));
}

void check_lease_expiry(Store& s) {
  auto l = s.grant(1);
  REQUIRE(l);
  REQUIRE(s.put_value("/conf/x/a", "a", l->id));
  Collector c;
  auto w = s.watch(WatchRequest{KeyRange::prefix("/conf/x/"), 0, true}, c.callback());
  REQUIRE(w);
  // Expiry deletes the key and watchers see it; allow for the backend's expiry granularity.
  REQUIRE(c.wait_events(1, std::chrono::seconds(4)));
  auto ev = c.events().front();
  CHECK(ev.type == EventType::del);
  CHECK(ev.kv.key == "/conf/x/a");
  REQUIRE(ev.prev_kv.has_value());
  CHECK(ev.prev_kv->lease == l->id);
  CHECK(s.get("/conf/x/a").error().code == Errc::not_found);
  CHECK(s.keep_alive(l->id).error().code == Errc::not_found);
}

}  // namespace

void run_store_conformance(const StoreFactory& make_store) {
  auto store = make_store();
  REQUIRE(store);
  Store& s = *store;
  SECTION("put, get, revisions and versions") {
    check_kv_basics(s);
  }
  SECTION("prefix and interval ranges with limits") {
    check_ranges(s);
  }
  SECTION("delete_range") {
    check_delete(s);
  }
  SECTION("txn compares on every target with every operator") {
    check_txn_compares(s);
  }
  SECTION("txn branches, one revision per txn, nested txn") {
    check_txn_branches(s);
  }
  SECTION("watch replays history, streams live events, stops on cancel") {
    check_watch_replay_live_cancel(s);
  }
  SECTION("a callback may cancel its own watch") {
    check_watch_cancel_from_callback(s);
  }
  SECTION("watch boundary under concurrent writes") {
    check_watch_boundary_under_writes(s);
  }
  SECTION("compaction ends old watches with Errc::compacted") {
    check_compaction(s);
  }
  SECTION("lease grant, keep_alive, revoke") {
    check_leases(s);
  }
  SECTION("lease expiry deletes keys and emits DELETE events") {
    check_lease_expiry(s);
  }
}

}  // namespace neco::store::testing
