// Benchmark of the Store backends, not a test: latency of put, txn (compare mod_revision + put,
// the CAS every leader-fenced write does) and range (one key) on SqliteStore (temp file) and
// EtcdStore against real 1-member and 3-member etcd clusters on loopback, in one run.
//
// Usage: build/tests/bench/store_bench [--ops N]   (N ops of each kind per backend, default 2000)
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "agent/store/etcd_store.hpp"
#include "agent/store/sqlite_store.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/agent/store/etcd_cluster.hpp"

using namespace neco;
using namespace neco::store;
using neco::store::testing::EtcdCluster;
using neco::store::testing::EtcdClusterOptions;
using Clock = std::chrono::steady_clock;

namespace {

struct Stats {
  double p50_ms = 0;
  double p99_ms = 0;
};

Stats summarize(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  auto at = [&](double q) {
    return ms[static_cast<size_t>(q * static_cast<double>(ms.size() - 1))];
  };
  return {at(0.50), at(0.99)};
}

template <class T>
void check(const Expected<T>& r, std::string_view what) {
  if (!r) {
    fmt::print(stderr, "{} failed: {}\n", what, r.error().message);
    std::exit(1);
  }
}

// Times `ops` calls of op(i) after a short warm-up (connections, caches, prepared statements).
Stats measure(int ops, const std::function<void(int)>& op) {
  for (int i = 0; i < 50; ++i)
    op(i);
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(ops));
  for (int i = 0; i < ops; ++i) {
    const auto start = Clock::now();
    op(i);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  }
  return summarize(std::move(ms));
}

std::map<std::string, Stats> run(Store& s, int ops) {
  const std::string value(100, 'v');
  constexpr int kKeys = 100;
  auto key = [](int i) { return fmt::format("/bench/k{}", i % kKeys); };
  std::map<std::string, Stats> out;
  out["put"] = measure(ops, [&](int i) { check(s.put_value(key(i), value), "put"); });
  std::vector<int64_t> mod(kKeys, 0);
  for (int k = 0; k < kKeys; ++k) {
    auto kv = s.get(key(k));
    check(kv, "get");
    mod[static_cast<size_t>(k)] = kv->mod_revision;
  }
  out["txn"] = measure(ops, [&](int i) {
    auto& last = mod[static_cast<size_t>(i % kKeys)];
    Txn t;
    t.compares = {Compare::mod_revision(key(i), CompareOp::equal, last)};
    t.success = {Op::make_put(key(i), value)};
    auto r = s.txn(t);
    check(r, "txn");
    if (!r->succeeded) {
      fmt::print(stderr, "txn compare failed unexpectedly\n");
      std::exit(1);
    }
    last = r->revision;
  });
  out["range"] = measure(ops, [&](int i) {
    check(s.range(RangeRequest{KeyRange::exact(key(i)), 0}), "range");
  });
  return out;
}

std::unique_ptr<EtcdStore> open_etcd(const EtcdCluster& cluster) {
  EtcdOptions o;
  o.endpoints = cluster.client_endpoints();
  auto s = EtcdStore::open(o);
  check(s, "open etcd");
  return std::move(*s);
}

}  // namespace

int main(int argc, char** argv) {
  int ops = 2000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--ops") == 0 && i + 1 < argc) {
      ops = std::atoi(argv[++i]);
    } else {
      fmt::print(stderr, "usage: {} [--ops N]\n", argv[0]);
      return 2;
    }
  }
  if (ops < 100) ops = 100;
  if (EtcdCluster::binary().empty()) {
    fmt::print(stderr, "etcd is not installed (PATH or $NECO_ETCD)\n");
    return 1;
  }

  std::vector<std::pair<std::string, std::map<std::string, Stats>>> results;
  {
    neco::testing::TempDir dir;
    auto s = SqliteStore::open(dir.file("bench.db"));
    check(s, "open sqlite");
    results.emplace_back("sqlite", run(**s, ops));
  }
  for (size_t members : {size_t{1}, size_t{3}}) {
    EtcdCluster cluster(EtcdClusterOptions{.members = members});
    auto s = open_etcd(cluster);
    results.emplace_back(fmt::format("etcd x{}", members), run(*s, ops));
  }

  fmt::print("{} ops of each kind per backend; latency in ms (ratio to sqlite)\n\n", ops);
  fmt::print("{:<6}", "op");
  for (const auto& [name, _] : results)
    fmt::print(" | {:^37}", name + ": p50 / p99");
  fmt::print("\n");
  const auto& base = results.front().second;
  for (const std::string op : {"put", "txn", "range"}) {
    fmt::print("{:<6}", op);
    for (const auto& [name, stats] : results) {
      const auto& s = stats.at(op);
      fmt::print(" | {:>7.3f} ({:>6.2f}x) / {:>7.3f} ({:>6.2f}x)", s.p50_ms,
                 s.p50_ms / base.at(op).p50_ms, s.p99_ms, s.p99_ms / base.at(op).p99_ms);
    }
    fmt::print("\n");
  }
  return 0;
}
