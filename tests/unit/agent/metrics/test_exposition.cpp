#include <catch2/catch.hpp>

#include <charconv>
#include <cmath>
#include <limits>

#include "agent/metrics/exposition.hpp"

using namespace neco::metrics;

namespace {

// A small registry with every type, escaping in help and label values, a unit, a collector
// family with a timestamp and a value that needs an exponent.
struct Fixture {
  Registry registry;
  CollectorHandle collector;

  Fixture() {
    auto& requests = registry.counter({.name = "neco_test_requests_total",
                                       .help = "Requests handled.",
                                       .labels = {"method", "code"}});
    requests.with({"POST", "500"}).inc();
    requests.with({"GET", "200"}).inc(3);
    registry
        .gauge({.name = "neco_test_temperature_celsius",
                .help = "Temperature with \"quotes\" and \\ backslash\nnewline.",
                .unit = "celsius"})
        .with()
        .set(-1.5);
    auto& latency = registry.histogram({.name = "neco_test_latency_seconds",
                                        .help = "Latency.",
                                        .labels = {"path"},
                                        .unit = "seconds",
                                        .buckets = {0.1, 1}});
    Histogram& h = latency.with({"/a\"b\\c\nd"});
    h.observe(0.25);
    h.observe(0.5);
    h.observe(2);
    h.observe(0.0625);
    collector = registry.add_collector([](std::vector<MetricFamily>& out) {
      MetricFamily& f = out.emplace_back();
      f.name = "neco_test_untyped";
      f.help = "Something untyped.";
      f.type = MetricType::untyped;
      f.add(1e21, {{"a", "b"}}, 1700000000123);
    });
  }
};

constexpr std::string_view kText = R"(# HELP neco_test_latency_seconds Latency.
# TYPE neco_test_latency_seconds histogram
neco_test_latency_seconds_bucket{path="/a\"b\\c\nd",le="0.1"} 1
neco_test_latency_seconds_bucket{path="/a\"b\\c\nd",le="1"} 3
neco_test_latency_seconds_bucket{path="/a\"b\\c\nd",le="+Inf"} 4
neco_test_latency_seconds_sum{path="/a\"b\\c\nd"} 2.8125
neco_test_latency_seconds_count{path="/a\"b\\c\nd"} 4
# HELP neco_test_requests_total Requests handled.
# TYPE neco_test_requests_total counter
neco_test_requests_total{method="GET",code="200"} 3
neco_test_requests_total{method="POST",code="500"} 1
# HELP neco_test_temperature_celsius Temperature with "quotes" and \\ backslash\nnewline.
# TYPE neco_test_temperature_celsius gauge
neco_test_temperature_celsius -1.5
# HELP neco_test_untyped Something untyped.
# TYPE neco_test_untyped untyped
neco_test_untyped{a="b"} 1e+21 1700000000123
)";

constexpr std::string_view kOpenMetrics = R"(# HELP neco_test_latency_seconds Latency.
# TYPE neco_test_latency_seconds histogram
# UNIT neco_test_latency_seconds seconds
neco_test_latency_seconds_bucket{path="/a\"b\\c\nd",le="0.1"} 1
neco_test_latency_seconds_bucket{path="/a\"b\\c\nd",le="1"} 3
neco_test_latency_seconds_bucket{path="/a\"b\\c\nd",le="+Inf"} 4
neco_test_latency_seconds_sum{path="/a\"b\\c\nd"} 2.8125
neco_test_latency_seconds_count{path="/a\"b\\c\nd"} 4
# HELP neco_test_requests Requests handled.
# TYPE neco_test_requests counter
neco_test_requests_total{method="GET",code="200"} 3
neco_test_requests_total{method="POST",code="500"} 1
# HELP neco_test_temperature_celsius Temperature with \"quotes\" and \\ backslash\nnewline.
# TYPE neco_test_temperature_celsius gauge
# UNIT neco_test_temperature_celsius celsius
neco_test_temperature_celsius -1.5
# HELP neco_test_untyped Something untyped.
# TYPE neco_test_untyped unknown
neco_test_untyped{a="b"} 1e+21 1700000000.123
# EOF
)";

constexpr std::string_view kPrometheus242 =
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

}  // namespace

TEST_CASE("text format 0.0.4 is byte-exact") {
  Fixture fixture;
  auto exposition = render(fixture.registry, "text/plain;version=0.0.4");
  CHECK(exposition.content_type == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(exposition.body == kText);
}

TEST_CASE("OpenMetrics 1.0 is byte-exact") {
  Fixture fixture;
  auto exposition = render(fixture.registry, kPrometheus242);
  CHECK(exposition.content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8");
  CHECK(exposition.body == kOpenMetrics);
}

TEST_CASE("rendering is deterministic") {
  Fixture fixture;
  CHECK(render(fixture.registry, "").body == render(fixture.registry, "").body);
}

TEST_CASE("content negotiation") {
  struct Row {
    std::string_view accept;
    Format want;
  };
  const Row rows[] = {
      {kPrometheus242, Format::openmetrics_100},
      // Prometheus 3 default scrape_protocols (escaping parameters are ignored).
      {"application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
       "application/openmetrics-text;version=0.0.1;q=0.5,"
       "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,"
       "*/*;q=0.2",
       Format::openmetrics_100},
      // Prometheus with the protobuf protocol first: we do not offer protobuf.
      {"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
       "encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1",
       Format::text_004},
      // Prometheus with scrape_protocols: [PrometheusText0.0.4].
      {"text/plain;version=0.0.4;q=0.5,*/*;q=0.1", Format::text_004},
      {"*/*", Format::text_004},  // curl
      {"", Format::text_004},
      {"text/plain", Format::text_004},
      {"application/openmetrics-text", Format::openmetrics_100},
      {"application/*", Format::openmetrics_100},
      {"Application/OpenMetrics-Text; Version=\"1.0.0\"", Format::openmetrics_100},
      // Only a version we do not produce: fall back to text rather than 406.
      {"application/openmetrics-text;version=0.0.1", Format::text_004},
      {"application/openmetrics-text;q=0.2, text/plain;q=0.8", Format::text_004},
      {"text/plain;q=0.2, application/openmetrics-text;q=0.8", Format::openmetrics_100},
      // q=0 means "not acceptable", even when a wildcard would allow it.
      {"application/openmetrics-text;version=1.0.0;q=0, */*", Format::text_004},
      {"text/plain;q=0, */*;q=0.5", Format::openmetrics_100},
      // Equal q: the first listed wins.
      {"text/plain;version=0.0.4;q=0.5, application/openmetrics-text;version=1.0.0;q=0.5",
       Format::text_004},
      {"application/openmetrics-text;version=1.0.0;q=0.5, text/plain;version=0.0.4;q=0.5",
       Format::openmetrics_100},
      // Malformed q: that range is unusable.
      {"application/openmetrics-text;q=high, text/plain;q=0.1", Format::text_004},
  };
  for (const auto& row : rows) {
    INFO("Accept: " << row.accept);
    CHECK(negotiate(row.accept) == row.want);
  }
}

TEST_CASE("value formatting") {
  CHECK(format_value(0) == "0");
  CHECK(format_value(-0.0) == "0");
  CHECK(format_value(1) == "1");
  CHECK(format_value(1000000) == "1000000");
  CHECK(format_value(-42) == "-42");
  CHECK(format_value(9007199254740992.0) == "9007199254740992");
  CHECK(format_value(1e21) == "1e+21");
  CHECK(format_value(0.1) == "0.1");
  CHECK(format_value(2.5e-7) == "2.5e-07");
  CHECK(format_value(std::numeric_limits<double>::infinity()) == "+Inf");
  CHECK(format_value(-std::numeric_limits<double>::infinity()) == "-Inf");
  CHECK(format_value(std::numeric_limits<double>::quiet_NaN()) == "NaN");
  // Shortest form that reads back to the same double.
  for (double v : {0.1 + 0.2, 1.0 / 3, 123456.789e10, 5e-324, 1.7976931348623157e308}) {
    std::string text = format_value(v);
    double back = 0;
    std::from_chars(text.data(), text.data() + text.size(), back);
    CHECK(back == v);
  }
}

TEST_CASE("normalize sorts, merges same-type duplicates and drops bad input") {
  std::vector<MetricFamily> families;
  auto add = [&](std::string name, MetricType type) -> MetricFamily& {
    MetricFamily& f = families.emplace_back();
    f.name = std::move(name);
    f.type = type;
    return f;
  };
  add("b_metric", MetricType::gauge).add(1, {{"x", "1"}});
  add("a_metric", MetricType::gauge).add(2);
  add("bad-name", MetricType::gauge).add(3);
  add("b_metric", MetricType::gauge).add(4, {{"x", "2"}});
  add("b_metric", MetricType::counter).add(5);  // other type: dropped
  add("c_metric", MetricType::gauge).add(6, {{"__bad", "v"}}).add(7, {{"ok", "v"}});
  MetricFamily& with_unit = add("d_bytes", MetricType::gauge);
  with_unit.unit = "seconds";  // not the name's suffix: the unit is dropped
  with_unit.add(8);

  normalize(families);
  REQUIRE(families.size() == 4);
  CHECK(families[0].name == "a_metric");
  CHECK(families[1].name == "b_metric");
  CHECK(families[1].type == MetricType::gauge);
  REQUIRE(families[1].samples.size() == 2);
  CHECK(families[1].labels_of(families[1].samples[1])[0].value == "2");
  CHECK(families[2].samples.size() == 1);
  CHECK(families[2].samples[0].value == 7);
  CHECK(families[3].unit.empty());
  CHECK(render(families, Format::text_004) ==
        "# TYPE a_metric gauge\na_metric 2\n"
        "# TYPE b_metric gauge\nb_metric{x=\"1\"} 1\nb_metric{x=\"2\"} 4\n"
        "# TYPE c_metric gauge\nc_metric{ok=\"v\"} 7\n"
        "# TYPE d_bytes gauge\nd_bytes 8\n");
}

TEST_CASE("OpenMetrics timestamps are exact seconds") {
  std::vector<MetricFamily> families(1);
  families[0].name = "t";
  families[0].type = MetricType::gauge;
  families[0].add(1, {}, 1500).add(1, {}, 2000).add(1, {}, -1).add(1, {}, 10);
  CHECK(render(families, Format::openmetrics_100) ==
        "# TYPE t gauge\nt 1 1.5\nt 1 2\nt 1 -0.001\nt 1 0.01\n# EOF\n");
}

TEST_CASE("empty registry") {
  Registry registry;
  CHECK(render(registry, "").body.empty());
  CHECK(render(registry, "application/openmetrics-text").body == "# EOF\n");
}
