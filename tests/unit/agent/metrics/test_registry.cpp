#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#include "agent/metrics/registry.hpp"

using namespace neco::metrics;

namespace {

// The pattern modules follow: every metric of the module declared in one place, as references
// initialised from one constructor, then used through cached children.
struct HttpMetrics {
  explicit HttpMetrics(Registry& registry)
      : requests(registry.counter({.name = "neco_http_requests_total",
                                   .help = "HTTP requests handled, by method and status code.",
                                   .labels = {"method", "code"}})),
        in_flight(registry.gauge(
            {.name = "neco_http_requests_in_flight", .help = "HTTP requests being handled now."})),
        latency(registry.histogram({.name = "neco_http_request_duration_seconds",
                                    .help = "Time to handle an HTTP request.",
                                    .labels = {"method"},
                                    .unit = "seconds"})) {}

  CounterFamily& requests;
  GaugeFamily& in_flight;
  HistogramFamily& latency;
};

}  // namespace

TEST_CASE("a module declares its metrics once in one struct") {
  Registry registry;
  HttpMetrics metrics(registry);
  Counter& get_ok = metrics.requests.with({"GET", "200"});
  get_ok.inc();
  get_ok.inc(2);
  metrics.in_flight.with().inc();
  metrics.latency.with({"GET"}).observe(0.2);

  // The same struct built twice (e.g. two instances of a module) shares the families.
  HttpMetrics again(registry);
  CHECK(&again.requests == &metrics.requests);
  CHECK(&again.requests.with({"GET", "200"}) == &get_ok);
  CHECK(get_ok.value() == 3);

  auto families = registry.collect();
  CHECK(families.size() == 3);
  const MetricFamily* requests = find_family(families, "neco_http_requests_total");
  REQUIRE(requests != nullptr);
  CHECK(requests->type == MetricType::counter);
  REQUIRE(requests->samples.size() == 1);
  CHECK(requests->samples[0].value == 3);
  auto labels = requests->labels_of(requests->samples[0]);
  REQUIRE(labels.size() == 2);
  CHECK(labels[0].name == "method");
  CHECK(labels[0].value == "GET");
  CHECK(labels[1].name == "code");
  CHECK(labels[1].value == "200");
}

TEST_CASE("children are stable and ordered by label values") {
  Registry registry;
  auto& family = registry.gauge({.name = "neco_test_gauge", .help = "h", .labels = {"k"}});
  Gauge& b = family.with({"b"});
  Gauge& a = family.with({"a"});
  for (int i = 0; i < 100; ++i)
    family.with({std::to_string(i)});  // map growth
  CHECK(&family.with({"b"}) == &b);
  b.set(5);
  b.dec(2);
  a.inc(0.5);
  a.add(-1.5);
  CHECK(b.value() == 3);
  CHECK(a.value() == -1);
  auto families = registry.collect();
  REQUIRE(families.size() == 1);
  CHECK(families[0].samples.size() == 102);
  // std::map order: "0" < "1" < … < "a" < "b".
  CHECK(families[0].labels_of(families[0].samples[100])[0].value == "a");
  CHECK(families[0].labels_of(families[0].samples[101])[0].value == "b");
}

TEST_CASE("counters only go up") {
  Registry registry;
  Counter& c = registry.counter({.name = "neco_test_total", .help = "h"}).with();
  c.inc();
  c.inc(2);
  c.add(-5);
  c.add(std::numeric_limits<double>::quiet_NaN());
  CHECK(c.value() == 3);
  c.add(0.25);
  CHECK(c.value() == 3.25);
}

TEST_CASE("declaration validation") {
  Registry registry;
  auto code = [](const auto& declared) {
    REQUIRE_FALSE(declared.has_value());
    return declared.error().code;
  };
  CHECK(code(registry.try_gauge({.name = "", .help = "h"})) == neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "1abc", .help = "h"})) == neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "a-b", .help = "h"})) == neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "__reserved", .help = "h"})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "rule:colon", .help = "h"})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "g", .help = "h", .labels = {"__name"}})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "g", .help = "h", .labels = {"bad-label"}})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "g", .help = "h", .labels = {"a", "a"}})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_counter({.name = "no_suffix", .help = "h"})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_histogram({.name = "h_seconds", .help = "h", .labels = {"le"}})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_histogram({.name = "h_count", .help = "h"})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_histogram({.name = "h", .help = "h", .buckets = {1, 1}})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_histogram({.name = "h", .help = "h", .buckets = {2, 1}})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "g", .help = "h", .buckets = {1}})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "g_bytes", .help = "h", .unit = "seconds"})) ==
        neco::Errc::invalid_argument);
  CHECK(code(registry.try_gauge({.name = "seconds", .help = "h", .unit = "seconds"})) ==
        neco::Errc::invalid_argument);
  CHECK(registry.try_counter({.name = "c_seconds_total", .help = "h", .unit = "seconds"}));
  CHECK(registry.try_gauge({.name = "_ok_Name9", .help = "h", .labels = {"_x", "Y9"}}));
  CHECK(registry.collect().size() == 2);  // failed declarations left nothing behind
}

TEST_CASE("redeclaration: identical is shared, different is an error") {
  Registry registry;
  auto first = registry.try_counter({.name = "x_total", .help = "h", .labels = {"a"}});
  REQUIRE(first);
  auto same = registry.try_counter({.name = "x_total", .help = "h", .labels = {"a"}});
  REQUIRE(same);
  CHECK(*same == *first);
  auto other_type = registry.try_gauge({.name = "x_total", .help = "h", .labels = {"a"}});
  REQUIRE_FALSE(other_type);
  CHECK(other_type.error().code == neco::Errc::already_exists);
  CHECK(other_type.error().message.find("x_total") != std::string::npos);
  CHECK_FALSE(registry.try_counter({.name = "x_total", .help = "h", .labels = {"b"}}));
  CHECK_FALSE(registry.try_counter({.name = "x_total", .help = "other", .labels = {"a"}}));

  REQUIRE(registry.try_histogram({.name = "hist", .help = "h", .buckets = {1, 2}}));
  CHECK(registry.try_histogram({.name = "hist", .help = "h", .buckets = {1, 2}}));
  CHECK_FALSE(registry.try_histogram({.name = "hist", .help = "h", .buckets = {1, 3}}));
}

TEST_CASE("histogram buckets are inclusive upper bounds, cumulative at scrape") {
  Registry registry;
  auto& family = registry.histogram({.name = "h_seconds", .help = "h", .buckets = {0.1, 1, 10}});
  Histogram& h = family.with();
  for (double v : {0.05, 0.1, 0.5, 1.0, 5.0, 100.0})
    h.observe(v);
  CHECK(h.count() == 6);
  CHECK(h.sum() == Approx(106.65));
  CHECK(h.cumulative_count(0) == 2);  // 0.05 and 0.1 (le is inclusive)
  CHECK(h.cumulative_count(1) == 4);
  CHECK(h.cumulative_count(2) == 5);

  auto families = registry.collect();
  REQUIRE(families.size() == 1);
  const auto& samples = families[0].samples;
  REQUIRE(samples.size() == 6);  // 3 bounds + +Inf, sum, count
  std::vector<std::string> le;
  std::vector<double> values;
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(samples[i].suffix == Suffix::bucket);
    auto labels = families[0].labels_of(samples[i]);
    REQUIRE(labels.size() == 1);
    CHECK(labels[0].name == "le");
    le.push_back(labels[0].value);
    values.push_back(samples[i].value);
  }
  CHECK(le == std::vector<std::string>{"0.1", "1", "10", "+Inf"});
  CHECK(values == std::vector<double>{2, 4, 5, 6});
  CHECK(samples[4].suffix == Suffix::sum);
  CHECK(samples[5].suffix == Suffix::count);
  CHECK(samples[5].value == 6);
}

TEST_CASE("histogram bucket helpers and defaults") {
  CHECK(default_buckets().size() == 11);
  CHECK(default_buckets().front() == 0.005);
  CHECK(default_buckets().back() == 10);
  CHECK(exponential_buckets(1, 2, 4) == std::vector<double>{1, 2, 4, 8});
  CHECK(linear_buckets(0.5, 0.5, 3) == std::vector<double>{0.5, 1, 1.5});
  Registry registry;
  auto& defaulted = registry.histogram({.name = "d", .help = "h"});
  CHECK(defaulted.desc().buckets.size() == 11);
  // A spelled-out trailing +Inf is accepted and made implicit.
  auto& explicit_inf = registry.histogram(
      {.name = "e", .help = "h", .buckets = {1, std::numeric_limits<double>::infinity()}});
  CHECK(explicit_inf.desc().buckets == std::vector<double>{1});
}

TEST_CASE("concurrent increments on one child are exact") {
  Registry registry;
  auto& counters = registry.counter({.name = "c_total", .help = "h", .labels = {"k"}});
  auto& histograms = registry.histogram({.name = "h", .help = "h", .buckets = {1}});
  constexpr int kThreads = 4;
  constexpr int kPerThread = 100000;
  std::vector<Counter*> seen(kThreads);
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread looks the child up itself: creation races must yield one child.
      Counter& c = counters.with({"shared"});
      seen[t] = &c;
      Histogram& h = histograms.with();
      for (int i = 0; i < kPerThread; ++i) {
        c.inc();
        h.observe(i % 2 == 0 ? 0.5 : 2);
      }
    });
  }
  // Scrapes running alongside must not disturb anything.
  for (int i = 0; i < 20; ++i)
    (void)registry.collect();
  for (auto& thread : threads)
    thread.join();
  for (Counter* c : seen)
    CHECK(c == seen[0]);
  constexpr auto kTotal = std::uint64_t{kThreads} * kPerThread;
  constexpr auto kHalf = kTotal / 2;  // observations of 0.5; the other half observed 2
  CHECK(seen[0]->value() == kTotal);
  Histogram& h = histograms.with();
  CHECK(h.count() == kTotal);
  CHECK(h.cumulative_count(0) == kHalf);
  CHECK(h.sum() == kHalf * 2.5);
}

TEST_CASE("collectors run at collect time and unregister with their handle") {
  Registry registry;
  int runs = 0;
  {
    CollectorHandle handle = registry.add_collector([&](std::vector<MetricFamily>& out) {
      ++runs;
      auto& family = out.emplace_back();
      family.name = "neco_collected";
      family.help = "From a collector.";
      family.type = MetricType::gauge;
      family.add(1, {{"device", "sda"}}).add(2, {{"device", "sdb"}});
    });
    CHECK(registry.collector_count() == 1);
    auto families = registry.collect();
    REQUIRE(families.size() == 1);
    CHECK(families[0].samples.size() == 2);
    CHECK(families[0].labels_of(families[0].samples[1])[0].value == "sdb");
    CHECK(runs == 1);

    // Moving the handle keeps the registration; the moved-from handle owns nothing.
    CollectorHandle moved = std::move(handle);
    CHECK_FALSE(handle);  // NOLINT(bugprone-use-after-move): the moved-from state is under test
    CHECK(moved);
    CHECK(registry.collector_count() == 1);
  }
  CHECK(registry.collector_count() == 0);
  CHECK(registry.collect().empty());
  CHECK(runs == 1);

  CollectorHandle explicit_reset = registry.add_collector([](std::vector<MetricFamily>&) {});
  explicit_reset.reset();
  explicit_reset.reset();
  CHECK(registry.collector_count() == 0);
}

TEST_CASE("a throwing collector loses only its own output") {
  Registry registry;
  registry.gauge({.name = "native", .help = "h"}).with().set(1);
  auto bad = registry.add_collector([](std::vector<MetricFamily>& out) {
    out.emplace_back().name = "half_done";
    throw std::runtime_error("boom");
  });
  auto good = registry.add_collector(
      [](std::vector<MetricFamily>& out) { out.emplace_back().name = "fine"; });
  auto families = registry.collect();
  REQUIRE(families.size() == 2);
  CHECK(find_family(families, "native") != nullptr);
  CHECK(find_family(families, "fine") != nullptr);
  CHECK(find_family(families, "half_done") == nullptr);
}

TEST_CASE("a request collector sees the scrape query and may refuse the scrape") {
  Registry registry;
  registry.gauge({.name = "native", .help = "h"}).with().set(1);
  std::vector<std::string> seen;
  auto reader = registry.add_collector(RequestCollector(
      [&](const ScrapeRequest& request, std::vector<MetricFamily>& out) -> neco::Expected<void> {
        for (auto v : request.values("pick"))
          seen.emplace_back(v);
        if (!request.values("refuse").empty()) {
          return neco::fail(neco::Errc::invalid_argument, "refused by request");
        }
        if (!request.values("break").empty()) {
          out.emplace_back().name = "half_done";
          return neco::fail(neco::Errc::internal, "broken");
        }
        out.emplace_back().name = "picked";
        return {};
      }));
  auto plain = registry.add_collector(
      [](std::vector<MetricFamily>& out) { out.emplace_back().name = "plain"; });

  auto all = registry.collect(ScrapeRequest{{{"pick", "a"}, {"other", "x"}, {"pick", "b"}}});
  REQUIRE(all.has_value());
  CHECK(seen == std::vector<std::string>{"a", "b"});
  CHECK(find_family(*all, "picked") != nullptr);
  CHECK(find_family(*all, "plain") != nullptr);
  CHECK(find_family(*all, "native") != nullptr);

  auto refused = registry.collect(ScrapeRequest{{{"refuse", "1"}}});
  REQUIRE_FALSE(refused.has_value());
  CHECK(refused.error().code == neco::Errc::invalid_argument);
  CHECK(refused.error().message == "refused by request");

  // Any other failure costs only that collector's output.
  auto broken = registry.collect(ScrapeRequest{{{"break", "1"}}});
  REQUIRE(broken.has_value());
  CHECK(find_family(*broken, "half_done") == nullptr);
  CHECK(find_family(*broken, "plain") != nullptr);

  // Internal collections pass an empty request.
  CHECK(find_family(registry.collect(), "picked") != nullptr);
}

TEST_CASE("MetricFamily::add_histogram lays out buckets, sum and count") {
  MetricFamily family;
  family.name = "io_seconds";
  family.type = MetricType::histogram;
  const LabelView labels[] = {{"device", "sda"}};
  const double bounds[] = {0.5, 1};
  const std::uint64_t cumulative[] = {3, 7};
  family.add_histogram(labels, bounds, cumulative, 9, 4.5);
  REQUIRE(family.samples.size() == 5);
  CHECK(family.labels_of(family.samples[2]).size() == 2);
  CHECK(family.labels_of(family.samples[2])[1].value == "+Inf");
  CHECK(family.samples[2].value == 9);
  CHECK(family.samples[3].suffix == Suffix::sum);
  CHECK(family.samples[4].value == 9);
  CHECK(family.labels_of(family.samples[4]).size() == 1);
}
