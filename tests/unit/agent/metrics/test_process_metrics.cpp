#include <catch2/catch.hpp>
#include <filesystem>
#include <iterator>

#include <algorithm>
#include <chrono>

#include "agent/metrics/exposition.hpp"
#include "agent/metrics/process_metrics.hpp"

using namespace neco::metrics;

namespace {}  // namespace

TEST_CASE("parse_proc_stat handles command names with spaces and parentheses") {
  constexpr std::string_view line =
      "4242 (my (odd) cmd) S 1 4242 4242 0 -1 4194560 1200 0 3 0 "
      "150 25 0 0 20 0 7 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 "
      "17 1 0 0 0 0 0\n";
  auto stat = parse_proc_stat(line);
  REQUIRE(stat);
  CHECK(stat->utime_ticks == 150);
  CHECK(stat->stime_ticks == 25);
  CHECK(stat->starttime_ticks == 123456);
  CHECK(stat->vsize_bytes == 987654321);
  CHECK(stat->rss_pages == 2048);

  CHECK_FALSE(parse_proc_stat("4242 no parenthesis"));
  CHECK_FALSE(parse_proc_stat("4242 (short) S 1 2 3"));
  CHECK_FALSE(
      parse_proc_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 25 0 0 20 0 7 0 123456 987654321 2048"));
}

TEST_CASE("parse_boot_time") {
  auto btime = parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n");
  REQUIRE(btime);
  CHECK(*btime == 1700000000);
  CHECK_FALSE(parse_boot_time("cpu 1 2 3\n"));
  CHECK_FALSE(parse_boot_time("btime soon\n"));
}

TEST_CASE("the process collector reports this process") {
  Registry registry;
  auto handle = add_process_collector(registry);
  auto families = registry.collect();
  for (auto name : {"process_cpu_seconds_total", "process_resident_memory_bytes",
                    "process_virtual_memory_bytes", "process_open_fds", "process_max_fds",
                    "process_start_time_seconds"}) {
    INFO(name);
    const MetricFamily* family = find_family(families, name);
    REQUIRE(family != nullptr);
    REQUIRE(family->samples.size() == 1);
    CHECK(family->samples[0].value >= 0);
    CHECK_FALSE(family->help.empty());
  }
  CHECK(find_family(families, "process_cpu_seconds_total")->type == MetricType::counter);
  CHECK(find_family(families, "process_open_fds")->samples[0].value >=
        3);  // stdin/out/err at least
  CHECK(find_family(families, "process_max_fds")->samples[0].value >=
        find_family(families, "process_open_fds")->samples[0].value);
  // The same count a directory walk gives (it includes the walk's own descriptor).
  const auto walked = std::distance(std::filesystem::directory_iterator("/proc/self/fd"),
                                    std::filesystem::directory_iterator());
  CHECK(find_family(families, "process_open_fds")->samples[0].value == static_cast<double>(walked));
  CHECK(find_family(families, "process_resident_memory_bytes")->samples[0].value > 0);
  CHECK(find_family(families, "process_virtual_memory_bytes")->samples[0].value >=
        find_family(families, "process_resident_memory_bytes")->samples[0].value);
  double now =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  double start = find_family(families, "process_start_time_seconds")->samples[0].value;
  CHECK(start <= now + 2);    // btime is whole seconds
  CHECK(start > now - 3600);  // this test process started moments ago

  // Units are consistent with the names, so OpenMetrics carries them.
  normalize(families);
  auto text = render(families, Format::openmetrics_100);
  CHECK(text.find("# UNIT process_cpu_seconds seconds\n") != std::string::npos);
  CHECK(text.find("\nprocess_cpu_seconds_total ") != std::string::npos);
}

TEST_CASE("build info") {
  Registry registry;
  add_build_info(registry, "1.2.3");
  CHECK(compiler_version().find('.') != std::string::npos);
  auto body = render(registry, "").body;
  CHECK(body.find("neco_build_info{version=\"1.2.3\",compiler=\"" + compiler_version() +
                  "\"} 1\n") != std::string::npos);
}
