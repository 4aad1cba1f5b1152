// Feeds a rendered registry to the real `promtool check metrics`, which parses the text format
// and lints it; exit code 0 means both passed. Meson passes promtool's path in PROMTOOL;
// without it the test exits 77, which Meson reports as SKIP.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>

#include "agent/metrics/exposition.hpp"
#include "agent/metrics/process_metrics.hpp"

extern char** environ;

using namespace neco::metrics;

namespace {

// A temp file removed at scope exit.
struct TempFile {
  std::string path;
  TempFile() {
    const char* dir = std::getenv("TMPDIR");
    path = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/neco-metrics-XXXXXX";
    int fd = ::mkstemp(path.data());
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  ~TempFile() { ::unlink(path.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Runs `promtool check metrics < input > output 2>&1`; returns the exit status.
int run_promtool(const char* promtool, const std::string& input, const std::string& output) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, input.c_str(), O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, output.c_str(), O_WRONLY | O_TRUNC, 0);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  char arg0[] = "promtool";
  char arg1[] = "check";
  char arg2[] = "metrics";
  char* argv[] = {arg0, arg1, arg2, nullptr};
  pid_t pid = 0;
  int rc = posix_spawn(&pid, promtool, &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  REQUIRE(rc == 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

TEST_CASE("promtool check metrics accepts the text exposition") {
  const char* promtool = std::getenv("PROMTOOL");
  if (promtool == nullptr || *promtool == '\0') {
    std::fputs("SKIP: promtool not found\n", stderr);
    std::exit(77);
  }

  Registry registry;
  auto& requests = registry.counter({.name = "neco_http_requests_total",
                                     .help = "HTTP requests handled, by \"method\" and code.\n"
                                             "Second line with a \\ backslash.",
                                     .labels = {"method", "path"}});
  requests.with({"GET", "/v1/\"quoted\""}).inc(3);
  requests.with({"POST", "C:\\dir\\file"}).inc();
  requests.with({"PUT", "multi\nline"}).inc();
  requests.with({"DELETE", ""}).inc();
  registry.gauge({.name = "neco_queue_depth", .help = "Items waiting.", .labels = {"queue"}})
      .with({"a\"b\\c\nd"})
      .set(-2.5);
  registry
      .gauge({.name = "neco_temperature_celsius",
              .help = "Odd values.",
              .labels = {"kind"},
              .unit = "celsius"})
      .with({"nan"})
      .set(std::numeric_limits<double>::quiet_NaN());
  registry
      .gauge({.name = "neco_temperature_celsius",
              .help = "Odd values.",
              .labels = {"kind"},
              .unit = "celsius"})
      .with({"inf"})
      .set(std::numeric_limits<double>::infinity());
  auto& latency = registry.histogram({.name = "neco_http_request_duration_seconds",
                                      .help = "Request latency.",
                                      .labels = {"method"},
                                      .unit = "seconds"});
  for (double v : {0.001, 0.02, 0.3, 4.0, 60.0})
    latency.with({"GET"}).observe(v);
  latency.with({"POST"});  // a child with no observations
  add_build_info(registry, "0.1.0");
  auto process = add_process_collector(registry);
  auto collector = registry.add_collector([](std::vector<MetricFamily>& out) {
    MetricFamily& f = out.emplace_back();
    f.name = "node_disk_io_time_seconds_total";
    f.help = "Total seconds spent doing I/Os.";
    f.type = MetricType::counter;
    f.unit = "seconds";
    f.add(12.5, {{"device", "sda"}}).add(1e21, {{"device", "nvme0n1"}}, 1700000000123);
    MetricFamily& h = out.emplace_back();
    h.name = "node_scrape_duration_seconds";
    h.help = "Collector durations.";
    h.type = MetricType::histogram;
    const LabelView labels[] = {{"collector", "cpu"}};
    const double bounds[] = {0.01, 0.1};
    const std::uint64_t counts[] = {1, 3};
    h.add_histogram(labels, bounds, counts, 4, 0.75);
  });

  auto exposition = render(registry, "text/plain;version=0.0.4");
  REQUIRE(exposition.content_type == kTextContentType);
  TempFile input;
  TempFile output;
  {
    std::ofstream out(input.path, std::ios::binary);
    out << exposition.body;
  }
  int status = run_promtool(promtool, input.path, output.path);
  INFO("exposition:\n" << exposition.body);
  INFO("promtool output:\n" << read_all(output.path));
  CHECK(status == 0);
}
