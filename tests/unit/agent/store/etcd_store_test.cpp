// EtcdStore against real etcd clusters started by the test (see etcd_cluster.hpp): the Store
// conformance suite, failover, watch resumption, deadlines and TLS. Without an etcd binary
// these tests warn and pass (Catch2 v2 has no skip); CI installs etcd, so they run there.
#include "agent/store/etcd_store.hpp"

#include <fmt/format.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <thread>

#include "agent/store/etcd_codec.hpp"
#include "tests/unit/agent/store/etcd_cluster.hpp"
#include "tests/unit/agent/store/store_conformance.hpp"
#include "tests/unit/agent/store/test_util.hpp"

using namespace neco;
using namespace neco::store;
using namespace neco::store::testing;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// The 3-member cluster every test shares: started on first use, once per test binary.
EtcdCluster* shared_cluster() {
  static const std::unique_ptr<EtcdCluster> cluster = []() -> std::unique_ptr<EtcdCluster> {
    if (EtcdCluster::binary().empty()) return nullptr;
    return std::make_unique<EtcdCluster>();
  }();
  if (!cluster) WARN("etcd is not installed: this test did not run");
  return cluster.get();
}

EtcdOptions options_for(std::vector<std::string> endpoints) {
  EtcdOptions o;
  o.endpoints = std::move(endpoints);
  o.request_timeout = 3s;
  o.dial_timeout = 1s;
  o.watch_idle_timeout = 2s;
  return o;
}

std::unique_ptr<EtcdStore> open_or_fail(EtcdOptions options) {
  auto s = EtcdStore::open(std::move(options));
  if (!s) FAIL("open failed: " << s.error().message);
  return std::move(*s);
}

int64_t revision_of(Store& s) {
  auto r = s.range(RangeRequest{KeyRange::exact("/__rev__"), 0});
  REQUIRE(r);
  return r->revision;
}

// Runs `fn` when the scope ends, so a failing REQUIRE still restores the shared cluster.
class Finally {
 public:
  explicit Finally(std::function<void()> fn) : fn_(std::move(fn)) {}
  ~Finally() { fn_(); }
  Finally(const Finally&) = delete;
  Finally& operator=(const Finally&) = delete;

 private:
  std::function<void()> fn_;
};

// Every event of `range` from `start` up to and including `last`, by a fresh replaying watch.
std::vector<Event> history(Store& s, const KeyRange& range, int64_t start, int64_t last) {
  Collector c;
  auto w = s.watch(WatchRequest{range, start, false}, c.callback());
  REQUIRE(w);
  REQUIRE(wait_until(
      [&] {
        auto ev = c.events();
        return !ev.empty() && ev.back().kv.mod_revision >= last;
      },
      10s));
  return c.events();
}

}  // namespace

// ---- the wire format, no server needed -------------------------------------------------------

TEST_CASE("etcd codec: base64 round-trips bytes and rejects garbage", "[store][etcd]") {
  using etcd::base64_decode;
  using etcd::base64_encode;
  CHECK(base64_encode("") == "");
  CHECK(base64_encode("a") == "YQ==");
  CHECK(base64_encode("ab") == "YWI=");
  CHECK(base64_encode("abc") == "YWJj");
  CHECK(base64_encode(std::string("\0", 1)) == "AA==");
  std::string all;
  for (int i = 0; i < 256; ++i)
    all += static_cast<char>(i);
  for (size_t n = 0; n <= all.size(); n += 37) {
    auto part = all.substr(0, n);
    CHECK(base64_decode(base64_encode(part)) == part);
  }
  CHECK_FALSE(base64_decode("YQ="));
  CHECK_FALSE(base64_decode("Y!=="));
  CHECK_FALSE(base64_decode("Y=Q="));
  CHECK_FALSE(base64_decode("YQ==YQ=="));
}

TEST_CASE("etcd codec: the splitter finds objects across any chunking", "[store][etcd]") {
  const std::string stream = R"({"result":{"a":"x}y{\"z"}})"
                             "\n"
                             R"({"result":{"events":[{"kv":{}},{"type":"DELETE"}]}})"
                             "\n\n"
                             R"({"error":{"message":"b\\"}})";
  for (size_t chunk : {size_t{1}, size_t{2}, size_t{7}, stream.size()}) {
    etcd::JsonObjectSplitter splitter;
    std::vector<std::string> objects;
    for (size_t i = 0; i < stream.size(); i += chunk) {
      for (auto& o : splitter.feed(std::string_view(stream).substr(i, chunk)))
        objects.push_back(std::move(o));
    }
    REQUIRE(objects.size() == 3);
    CHECK(etcd::Json::parse(objects[0])["result"]["a"] == "x}y{\"z");
    CHECK(etcd::Json::parse(objects[1])["result"]["events"].size() == 2);
    CHECK(etcd::Json::parse(objects[2])["error"]["message"] == "b\\");
    CHECK(splitter.pending() == 0);
  }
}

TEST_CASE("etcd codec: omitted zero fields, string int64s and grouped events", "[store][etcd]") {
  auto j = etcd::Json::parse(R"({"header":{"revision":"9"},"kvs":[{"key":"YQ==",
      "create_revision":"2","mod_revision":5,"version":"3"}],"count":"1"})");
  auto r = etcd::decode_range(j);
  REQUIRE(r.kvs.size() == 1);
  CHECK(r.kvs[0] == KeyValue{"a", "", 2, 5, 3, 0});
  CHECK(r.count == 1);
  CHECK_FALSE(r.more);
  CHECK(r.revision == 9);
  CHECK(etcd::decode_range(etcd::Json::parse("{}")).kvs.empty());
  CHECK_THROWS(etcd::decode_range(etcd::Json::parse(R"({"count":"x"})")));

  auto failed = etcd::decode_txn(etcd::Json::parse(R"({"header":{"revision":"4"}})"), 4);
  CHECK_FALSE(failed.succeeded);
  CHECK(failed.responses.empty());

  auto events = etcd::decode_watch_events(etcd::Json::parse(R"({"events":[
      {"kv":{"key":"YQ==","mod_revision":"3"}},
      {"type":"DELETE","kv":{"key":"Yg==","mod_revision":"3"},"prev_kv":{"key":"Yg==","value":"eA=="}},
      {"kv":{"key":"YQ==","mod_revision":"4"}}]})"),
                                          true);
  REQUIRE(events.size() == 2);
  CHECK(events[0].revision == 3);
  REQUIRE(events[0].events.size() == 2);
  CHECK(events[0].events[1].type == EventType::del);
  CHECK(events[0].events[1].prev_kv->value == "x");
  CHECK(events[1].revision == 4);
}

TEST_CASE("etcd codec: gRPC codes and etcd messages map to Errc", "[store][etcd]") {
  auto e = etcd::decode_error(
      "put", 404,
      R"({"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5})");
  CHECK(e.code == Errc::not_found);
  CHECK(e.message == "Failed to put: etcdserver: requested lease not found");
  CHECK(etcd::errc_from_grpc(11, "etcdserver: mvcc: required revision has been compacted") ==
        Errc::compacted);
  CHECK(etcd::errc_from_grpc(11, "etcdserver: mvcc: required revision is a future revision") ==
        Errc::invalid_argument);
  CHECK(etcd::errc_from_grpc(9, "etcdserver: lease already exists") == Errc::already_exists);
  CHECK(etcd::errc_from_grpc(9, "etcdserver: something") == Errc::failed_precondition);
  CHECK(etcd::errc_from_grpc(3, "x") == Errc::invalid_argument);
  CHECK(etcd::errc_from_grpc(14, "etcdserver: no leader") == Errc::unavailable);
  CHECK(etcd::errc_from_grpc(4, "x") == Errc::deadline_exceeded);
  CHECK(etcd::errc_from_grpc(13, "x") == Errc::internal);
  auto streamed =
      etcd::decode_error("watch", 200, R"({"error":{"grpc_code":14,"message":"closing"}})");
  CHECK(streamed.code == Errc::unavailable);
  CHECK(etcd::decode_error("range", 502, "Bad Gateway").message ==
        "Failed to range: HTTP status 502: Bad Gateway");
}

// ---- options ---------------------------------------------------------------------------------

TEST_CASE("EtcdStore refuses bad options with a clear message", "[store][etcd]") {
  auto refused = [](EtcdOptions o, std::string_view needle) {
    auto s = EtcdStore::open(std::move(o));
    REQUIRE_FALSE(s);
    CHECK(s.error().code == Errc::invalid_argument);
    INFO(s.error().message);
    CHECK(s.error().message.find(needle) != std::string::npos);
  };
  refused(EtcdOptions{}, "no endpoints");
  refused(options_for({"127.0.0.1:2379"}), "'127.0.0.1:2379' is not an http:// or https:// URL");
  refused(options_for({"http://127.0.0.1:99999"}), "'http://127.0.0.1:99999' is not a valid URL");
  refused(options_for({"http://127.0.0.1:2379/v3"}), "has a path");
  refused(options_for({"http://"}), "'http://'");
  auto o = options_for({"https://127.0.0.1:2379"});
  o.ca_file = "/nonexistent/ca.crt";
  refused(o, "ca_file '/nonexistent/ca.crt'");
  o = options_for({"http://127.0.0.1:2379"});
  o.request_timeout = 0ms;
  refused(o, "request_timeout must be positive");
}

TEST_CASE("EtcdStore open names every endpoint when none answers", "[store][etcd]") {
  // Ports that were free a moment ago: nothing listens, so connects are refused at once.
  auto a = fmt::format("http://127.0.0.1:{}", neco::testing::free_port());
  auto b = fmt::format("http://127.0.0.1:{}", neco::testing::free_port());
  const auto start = Clock::now();
  auto s = EtcdStore::open(options_for({a, b}));
  REQUIRE_FALSE(s);
  CHECK(Clock::now() - start < 2s);
  CHECK(s.error().code == Errc::unavailable);
  INFO(s.error().message);
  CHECK(s.error().message.find(a) != std::string::npos);
  CHECK(s.error().message.find(b) != std::string::npos);
}

// ---- against the shared 3-member cluster ------------------------------------------------------

TEST_CASE("EtcdStore passes the Store conformance suite on a 3-member cluster",
          "[store][etcd][conformance]") {
  auto* cluster = shared_cluster();
  if (!cluster) return;
  run_store_conformance([&]() -> std::unique_ptr<Store> {
    // Each section starts from no leases and nothing under /conf/ (earlier sections and test
    // cases share the cluster).
    cluster->revoke_all_leases();
    auto s = open_or_fail(options_for(cluster->client_endpoints()));
    REQUIRE(s->delete_range(DeleteRequest{KeyRange::prefix("/conf/"), false}));
    return s;
  });
}

TEST_CASE("EtcdStore calls the stats hook after each operation", "[store][etcd]") {
  auto* cluster = shared_cluster();
  if (!cluster) return;
  auto s = open_or_fail(options_for(cluster->client_endpoints()));
  std::mutex mu;
  std::vector<std::pair<std::string, bool>> calls;
  s->set_stats_hook([&](std::string_view op, double seconds, bool ok) {
    CHECK(seconds >= 0);
    std::lock_guard lock(mu);
    calls.emplace_back(std::string(op), ok);
  });
  REQUIRE(s->put_value("/stats/a", "1"));
  REQUIRE_FALSE(s->get("/stats/missing"));  // a range that succeeds with no keys
  REQUIRE_FALSE(s->put(PutRequest{"", "x", 0, false}));
  REQUIRE_FALSE(s->grant(0));
  s->set_stats_hook({});
  REQUIRE(s->put_value("/stats/b", "1"));
  std::lock_guard lock(mu);
  REQUIRE(calls.size() == 4);
  CHECK(calls[0] == std::pair<std::string, bool>{"put", true});
  CHECK(calls[1] == std::pair<std::string, bool>{"range", true});
  CHECK(calls[2] == std::pair<std::string, bool>{"put", false});
  CHECK(calls[3] == std::pair<std::string, bool>{"lease_grant", false});
}

TEST_CASE("EtcdStore fails over past a stopped first endpoint", "[store][etcd][failover]") {
  auto* cluster = shared_cluster();
  if (!cluster) return;
  const auto eps = cluster->client_endpoints();
  Finally restore([&] {
    cluster->start(0);
    CHECK(cluster->wait_all_healthy());
  });

  SECTION("stopped before open") {
    cluster->stop(0);
    auto s = open_or_fail(options_for(eps));
    CHECK(s->current_endpoint() != eps[0]);
    REQUIRE(s->put_value("/failover/a", "1"));
    CHECK(s->get("/failover/a")->value == "1");
  }
  SECTION("stopped while the store uses it") {
    auto s = open_or_fail(options_for(eps));
    REQUIRE(s->put_value("/failover/b", "1"));  // leaves a pooled connection to eps[0]
    REQUIRE(s->current_endpoint() == eps[0]);
    cluster->stop(0);
    const auto start = Clock::now();
    auto put = s->put_value("/failover/b", "2");
    INFO((put ? std::string("ok") : put.error().message));
    REQUIRE(put);
    CHECK(Clock::now() - start < 2s);
    CHECK(s->current_endpoint() != eps[0]);
    CHECK(s->get("/failover/b")->value == "2");
  }
}

TEST_CASE("EtcdStore watch survives a restart of its member without loss or duplicates",
          "[store][etcd][failover]") {
  auto* cluster = shared_cluster();
  if (!cluster) return;
  const auto eps = cluster->client_endpoints();
  Finally restore([&] {
    cluster->start(0);
    CHECK(cluster->wait_all_healthy());
  });
  auto watcher = open_or_fail(options_for(eps));  // prefers eps[0]: the watch streams from it
  REQUIRE(watcher->current_endpoint() == eps[0]);
  auto writer = open_or_fail(options_for({eps[1], eps[2]}));
  const auto range = KeyRange::prefix("/survive/");
  const int64_t start = revision_of(*writer) + 1;

  std::mutex mu;
  std::vector<std::pair<int64_t, std::string>> seen;  // (revision, key) per event
  auto w = watcher->watch(WatchRequest{range, start, false}, [&](const WatchResponse& r) {
    std::lock_guard lock(mu);
    for (const auto& e : r.events) {
      CHECK(e.kv.mod_revision == r.revision);
      seen.emplace_back(e.kv.mod_revision, e.kv.key);
    }
  });
  REQUIRE(w);

  std::atomic<bool> stop{false};
  std::atomic<int> written{0};
  std::atomic<int64_t> last{0};
  std::thread writes([&] {
    for (int i = 0; !stop.load(); ++i) {
      // Writes may fail while a leader is elected; the history below is the reference.
      if (auto rev = writer->put_value(fmt::format("/survive/k{}", i % 5), std::to_string(i))) {
        last.store(*rev);
        ++written;
      }
      std::this_thread::sleep_for(2ms);
    }
  });
  auto wait_written = [&](int n) { return wait_until([&] { return written.load() >= n; }, 20s); };
  CHECK(wait_written(30));
  cluster->stop(0);
  CHECK(wait_written(80));
  cluster->start(0);
  CHECK(cluster->wait_healthy(0));
  CHECK(wait_written(130));
  stop.store(true);
  writes.join();
  const int64_t final_rev = last.load();

  REQUIRE(wait_until(
      [&] {
        std::lock_guard lock(mu);
        return !seen.empty() && seen.back().first >= final_rev;
      },
      15s));
  std::vector<std::pair<int64_t, std::string>> expected;
  for (const auto& e : history(*writer, range, start, final_rev))
    expected.emplace_back(e.kv.mod_revision, e.kv.key);
  std::lock_guard lock(mu);
  CHECK(seen.size() == expected.size());
  CHECK(seen == expected);
  for (size_t i = 1; i < seen.size(); ++i)
    CHECK(seen[i - 1].first < seen[i].first);
}

TEST_CASE("EtcdStore watch from a compacted revision ends with Errc::compacted", "[store][etcd]") {
  auto* cluster = shared_cluster();
  if (!cluster) return;
  auto s = open_or_fail(options_for(cluster->client_endpoints()));
  const int64_t first = *s->put_value("/compacted/k", "0");
  for (int i = 1; i < 4; ++i)
    REQUIRE(s->put_value("/compacted/k", std::to_string(i)));
  REQUIRE(s->compact(first + 2));
  Collector c;
  auto w = s->watch(WatchRequest{KeyRange::exact("/compacted/k"), first, false}, c.callback());
  REQUIRE(w);
  REQUIRE(wait_until([&] { return !c.responses().empty(); }));
  auto r = c.responses().front();
  REQUIRE(r.error);
  CHECK(r.error->code == Errc::compacted);
  CHECK(r.compact_revision == first + 2);
  CHECK(r.events.empty());
}

TEST_CASE("EtcdStore requests end within request_timeout when the member hangs",
          "[store][etcd][deadline]") {
  auto* cluster = shared_cluster();
  if (!cluster) return;
  const auto eps = cluster->client_endpoints();
  Finally restore([&] {
    cluster->resume(2);
    CHECK(cluster->wait_all_healthy());
  });
  auto o = options_for({eps[2]});
  o.request_timeout = 1000ms;
  auto only = open_or_fail(o);
  auto o2 = options_for({eps[2], eps[0]});
  o2.request_timeout = 3000ms;
  auto with_spare = open_or_fail(o2);
  REQUIRE(only->put_value("/deadline/k", "1"));  // pooled connections to the member
  REQUIRE(with_spare->get("/deadline/k"));
  REQUIRE(with_spare->current_endpoint() == eps[2]);
  cluster->pause(2);

  auto start = Clock::now();
  auto r = only->range(RangeRequest{KeyRange::exact("/deadline/k"), 0});
  auto took = Clock::now() - start;
  REQUIRE_FALSE(r);
  INFO(r.error().message);
  CHECK((r.error().code == Errc::deadline_exceeded || r.error().code == Errc::unavailable));
  CHECK(took >= 900ms);
  CHECK(took < 2500ms);

  start = Clock::now();
  auto p = only->put_value("/deadline/k", "2");
  took = Clock::now() - start;
  REQUIRE_FALSE(p);
  INFO(p.error().message);
  CHECK(p.error().code == Errc::deadline_exceeded);
  CHECK(p.error().message.find("outcome is unknown") != std::string::npos);
  CHECK(took < 2500ms);

  // A read may go to the next endpoint once its share of the deadline is spent (half of it
  // here). That endpoint needs a leader, which takes an election if the paused member led.
  REQUIRE(cluster->wait_healthy(0));
  start = Clock::now();
  auto spare = with_spare->get("/deadline/k");
  took = Clock::now() - start;
  INFO((spare ? std::string("ok") : spare.error().message));
  REQUIRE(spare);
  CHECK(took >= 1400ms);
  CHECK(took < 3000ms);
  CHECK(with_spare->current_endpoint() == eps[0]);
}

TEST_CASE("EtcdStore watch leaves a paused member and loses nothing", "[store][etcd][deadline]") {
  auto* cluster = shared_cluster();
  if (!cluster) return;
  const auto eps = cluster->client_endpoints();
  Finally restore([&] {
    cluster->resume(1);
    CHECK(cluster->wait_all_healthy());
  });
  auto o = options_for({eps[1], eps[2], eps[0]});
  o.watch_idle_timeout = 1500ms;  // 3x the test cluster's progress notify interval
  o.dial_timeout = 500ms;
  auto watcher = open_or_fail(o);
  auto writer = open_or_fail(options_for({eps[2], eps[0]}));
  Collector c;
  auto w = watcher->watch(WatchRequest{KeyRange::prefix("/paused/"), 0, false}, c.callback());
  REQUIRE(w);
  const auto first = writer->put_value("/paused/a", "1");
  REQUIRE(first);
  REQUIRE(c.wait_events(1));
  cluster->pause(1);
  for (int i = 0; i < 5; ++i) {
    // The first writes may meet an election if the paused member led.
    REQUIRE(
        wait_until([&] { return static_cast<bool>(writer->put_value("/paused/b", "x")); }, 10s));
  }
  const int64_t last = revision_of(*writer);
  // Found dead after watch_idle_timeout plus a failed status probe, then resumed elsewhere.
  REQUIRE(wait_until(
      [&] {
        auto ev = c.events();
        return !ev.empty() && ev.back().kv.mod_revision >= last;
      },
      15s));
  auto revisions = [](const std::vector<Event>& events) {
    std::vector<int64_t> out;
    for (const auto& e : events)
      out.push_back(e.kv.mod_revision);
    return out;
  };
  CHECK(revisions(c.events()) ==
        revisions(history(*writer, KeyRange::prefix("/paused/"), *first, last)));
}

// ---- TLS --------------------------------------------------------------------------------------

TEST_CASE("EtcdStore speaks TLS with a client certificate", "[store][etcd][tls]") {
  if (EtcdCluster::binary().empty()) {
    WARN("etcd is not installed: this test did not run");
    return;
  }
  EtcdCluster cluster(EtcdClusterOptions{.members = 1, .tls = true});
  const auto ep = cluster.client_endpoint(0);
  REQUIRE(ep.starts_with("https://"));
  auto o = options_for({ep});
  o.ca_file = cluster.ca_file();
  o.cert_file = cluster.client_cert_file();
  o.key_file = cluster.client_key_file();
  {
    auto s = open_or_fail(o);
    Collector c;
    auto w = s->watch(WatchRequest{KeyRange::prefix("/tls/"), 0, false}, c.callback());
    REQUIRE(w);
    REQUIRE(s->put_value("/tls/a", "secret"));
    CHECK(s->get("/tls/a")->value == "secret");
    REQUIRE(c.wait_events(1));
  }

  auto no_client_cert = o;
  no_client_cert.cert_file.clear();
  no_client_cert.key_file.clear();
  auto refused = EtcdStore::open(no_client_cert);
  REQUIRE_FALSE(refused);
  INFO(refused.error().message);
  CHECK(refused.error().code == Errc::unavailable);
  CHECK(refused.error().message.find(ep) != std::string::npos);
  CHECK(refused.error().message.find("certificate") != std::string::npos);

  auto unknown_ca = o;
  unknown_ca.ca_file.clear();  // system CAs do not know the test CA
  auto untrusted = EtcdStore::open(unknown_ca);
  REQUIRE_FALSE(untrusted);
  INFO(untrusted.error().message);
  CHECK(untrusted.error().message.find("certificate") != std::string::npos);
}
