#include "agent/store/sqlite_store.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <random>

#include "tests/unit/agent/store/store_conformance.hpp"
#include "tests/unit/agent/store/test_util.hpp"

using namespace neco;
using namespace neco::store;
using namespace neco::store::testing;

namespace {

std::unique_ptr<SqliteStore> open_or_fail(const std::string& path, SqliteOptions o = {}) {
  auto s = SqliteStore::open(path, o);
  if (!s) FAIL("open failed: " << s.error().message);
  return std::move(*s);
}

}  // namespace

TEST_CASE("SqliteStore passes the Store conformance suite", "[store][sqlite]") {
  TempDir dir;
  int n = 0;
  run_store_conformance([&]() -> std::unique_ptr<Store> {
    return open_or_fail(dir.file("conf" + std::to_string(n++) + ".db"));
  });
}

TEST_CASE("SqliteStore reopens with data, revision, history and leases", "[store][sqlite]") {
  TempDir dir;
  auto path = dir.file("s.db");
  int64_t rev = 0;
  int64_t lease = 0;
  {
    auto s = open_or_fail(path);
    CHECK(s->revision() == 1);  // like etcd, a fresh store is at revision 1
    auto l = s->grant(60);
    REQUIRE(l);
    lease = l->id;
    REQUIRE(s->put_value("/a", "1"));
    REQUIRE(s->put_value("/b", "2", lease));
    rev = *s->put_value("/a", "3");
  }
  auto s = open_or_fail(path);
  CHECK(s->revision() == rev);
  auto a = s->get("/a");
  REQUIRE(a);
  CHECK(a->value == "3");
  CHECK(a->version == 2);
  auto ttl = s->time_to_live(lease);
  REQUIRE(ttl);
  CHECK(ttl->keys == std::vector<std::string>{"/b"});
  CHECK(ttl->ttl >= 59);  // deadlines restart at a full TTL on open
  CHECK(*s->put_value("/c", "x") == rev + 1);

  Collector c;
  auto w = s->watch(WatchRequest{KeyRange::all(), 2, false}, c.callback());
  REQUIRE(w);
  REQUIRE(c.wait_events(4));
  CHECK(c.events().front().kv.key == "/a");
  CHECK(c.events().front().kv.mod_revision == 2);
}

TEST_CASE("SqliteStore compacts history automatically to its window", "[store][sqlite]") {
  TempDir dir;
  SqliteOptions o;
  o.history_revisions = 10;
  auto s = open_or_fail(dir.file("s.db"), o);
  for (int i = 0; i < 30; ++i)
    REQUIRE(s->put_value("/k", std::to_string(i)));
  int64_t rev = s->revision();
  CHECK(s->compact_revision() > rev - 12);
  CHECK(s->compact_revision() <= rev - 9);

  Collector old_watch;
  auto w = s->watch(WatchRequest{KeyRange::exact("/k"), 1, false}, old_watch.callback());
  REQUIRE(w);
  REQUIRE(wait_until([&] { return !old_watch.responses().empty(); }));
  CHECK(old_watch.responses().front().error->code == Errc::compacted);

  Collector recent;
  auto w2 = s->watch(WatchRequest{KeyRange::exact("/k"), rev - 5, false}, recent.callback());
  REQUIRE(w2);
  REQUIRE(recent.wait_events(6));
}

TEST_CASE("SqliteStore reports bad paths and corrupt files with the path", "[store][sqlite]") {
  TempDir dir;
  SECTION("missing directory") {
    auto path = dir.file("no/such/dir/s.db");
    auto s = SqliteStore::open(path);
    REQUIRE_FALSE(s);
    CHECK(s.error().message.find(path) != std::string::npos);
  }
  SECTION("not a database") {
    auto path = dir.file("garbage.db");
    {
      std::ofstream f(path);
      for (int i = 0; i < 200; ++i)
        f << "this is not an sqlite database\n";
    }
    auto s = SqliteStore::open(path);
    REQUIRE_FALSE(s);
    CHECK(s.error().message.find(path) != std::string::npos);
    CHECK(s.error().message.find("not a database") != std::string::npos);
  }
  SECTION("a directory") {
    auto s = SqliteStore::open(dir.path().string());
    REQUIRE_FALSE(s);
    CHECK(s.error().message.find(dir.path().string()) != std::string::npos);
  }
}

TEST_CASE("SqliteStore calls the stats hook after each operation", "[store][sqlite]") {
  TempDir dir;
  auto s = open_or_fail(dir.file("s.db"));
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> calls;
  s->set_stats_hook([&](std::string_view op, double seconds, bool ok) {
    CHECK(seconds >= 0);
    std::lock_guard lock(mu);
    calls.emplace_back(std::string(op), ok);
  });
  REQUIRE(s->put_value("/a", "1"));
  REQUIRE_FALSE(s->get("/missing"));  // a range that succeeds with no keys
  REQUIRE_FALSE(s->put(PutRequest{"", "x", 0, false}));
  s->set_stats_hook({});
  REQUIRE(s->put_value("/b", "1"));
  std::lock_guard lock(mu);
  REQUIRE(calls.size() == 3);
  CHECK(calls[0] == std::pair<std::string, bool>{"put", true});
  CHECK(calls[1] == std::pair<std::string, bool>{"range", true});
  CHECK(calls[2] == std::pair<std::string, bool>{"put", false});
}

// A child writes txns of several puts in a loop and is SIGKILLed at a random moment; every txn
// must be all-or-nothing afterwards and the file intact.
TEST_CASE("SqliteStore survives SIGKILL mid-write without torn txns", "[store][sqlite]") {
  TempDir dir;
  auto path = dir.file("crash.db");
  std::mt19937 rng(std::random_device{}());
  constexpr int kKeys = 5;
  for (int iteration = 0; iteration < 4; ++iteration) {
    int ready[2];
    REQUIRE(pipe(ready) == 0);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(ready[0]);
      auto s = SqliteStore::open(path);
      if (!s) _exit(2);
      for (int64_t i = 0;; ++i) {
        Txn t;
        for (int k = 0; k < kKeys; ++k) {
          t.success.push_back(
              Op::make_put("/crash/" + std::to_string(k), fmt::format("{}-{}", iteration, i)));
        }
        if (!(*s)->txn(t)) _exit(3);
        if (i == 0 && write(ready[1], "x", 1) != 1) _exit(4);
      }
    }
    close(ready[1]);
    char byte = 0;
    REQUIRE(read(ready[0], &byte, 1) == 1);
    close(ready[0]);
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 150)(rng)));
    REQUIRE(kill(pid, SIGKILL) == 0);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFSIGNALED(status));

    auto s = open_or_fail(path);
    auto check = s->integrity_check();
    REQUIRE(check);
    CHECK(*check == "ok");
    auto r = s->range(RangeRequest{KeyRange::prefix("/crash/"), 0});
    REQUIRE(r);
    REQUIRE(r->kvs.size() == kKeys);
    for (const auto& kv : r->kvs) {
      CHECK(kv.value == r->kvs.front().value);
      CHECK(kv.mod_revision == r->kvs.front().mod_revision);
    }
    CHECK(r->kvs.front().mod_revision == s->revision());
    CHECK(r->kvs.front().value.starts_with(fmt::format("{}-", iteration)));
  }
}
