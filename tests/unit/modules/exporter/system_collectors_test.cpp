// The diskstats, sockstat, pressure, os, timex and entropy collectors and the time collector's
// zone and clocksource series: against made-up fixture files (compared with golden
// expositions that node_exporter 1.5 produced the same series for), unit conversions, broken
// input and the diskstats settings of the exporter section.
#include <sys/timex.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <ctime>
#include <random>
#include <string>

#include "modules/exporter/exporter.hpp"
#include "modules/exporter/scrape_runner.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/exporter/exporter_test_support.hpp"

namespace {

namespace ex = neco::exporter;
using neco::metrics::find_family;
using neco::metrics::MetricFamily;
using namespace neco::exporter::testing;

// The fixture tree including an os-release root and a udev database.
ex::Paths system_paths() {
  auto p = fixture_paths();
  p.root = kData / "fixtures/root";
  return p;
}

// node_exporter's defaults for the diskstats collector, with the fixture udev database.
ex::CollectorOptions diskstats_options() {
  const ex::ExporterConfig defaults;
  ex::CollectorOptions o;
  o.diskstats_device_exclude = defaults.diskstats.device_exclude;
  o.udev_data_directory = kData / "fixtures/udev/data";
  return o;
}

// Runs a collector expected to fail and returns its error message.
std::string collect_error(std::string_view name, const ex::Paths& paths,
                          const ex::CollectorOptions& options = {}) {
  auto c = ex::find_collector(name)->make(options);
  std::vector<MetricFamily> out;
  auto r = c->collect(paths, out);
  REQUIRE_FALSE(r.has_value());
  return r.error().message;
}

// A scratch procfs/sysfs/root tree for broken-input cases.
struct Scratch {
  neco::testing::TempDir dir;
  ex::Paths paths() const { return {dir / "proc", dir / "sys", dir / "root"}; }
  void write(const std::string& relative, const std::string& content) const {
    const auto p = dir / relative;
    std::filesystem::create_directories(p.parent_path());
    neco::testing::write_file(p, content);
  }
};

std::vector<std::string> label_values(const MetricFamily& f, std::string_view label) {
  std::vector<std::string> out;
  for (const auto& s : f.samples) {
    for (const auto& l : f.labels_of(s)) {
      if (l.name == label) out.push_back(l.value);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

const MetricFamily& family(const std::vector<MetricFamily>& fams, std::string_view name) {
  const auto* f = find_family(fams, name);
  INFO(name);
  REQUIRE(f != nullptr);
  return *f;
}

}  // namespace

TEST_CASE("system collectors match their golden expositions", "[exporter][system]") {
  SECTION("diskstats") {
    check_golden("diskstats",
                 render(run_collector("diskstats", system_paths(), diskstats_options())));
  }
  for (const char* name : {"sockstat", "pressure", "os", "entropy"}) {
    SECTION(name) {
      check_golden(name, render(run_collector(name, system_paths())));
    }
  }
  SECTION("time clocksources") {
    auto fams = run_collector("time", system_paths());
    std::erase_if(fams, [](const MetricFamily& f) { return !f.name.contains("clocksource"); });
    check_golden("time_clocksource", render(std::move(fams)));
  }
}

TEST_CASE("diskstats converts sectors and ticks and excludes partitions", "[exporter][system]") {
  const auto fams = run_collector("diskstats", system_paths(), diskstats_options());
  // sda: 96310846 sectors read of 512 bytes, 1021567 ms reading, 58213376 sectors discarded.
  CHECK(value_of(fams, "node_disk_read_bytes_total", "device", "sda") == 96310846.0 * 512);
  CHECK(value_of(fams, "node_disk_read_time_seconds_total", "device", "sda") == Approx(1021.567));
  CHECK(value_of(fams, "node_disk_discarded_sectors_total", "device", "sda") == 58213376);
  CHECK(value_of(fams, "node_disk_io_now", "device", "nvme0n1") == 3);
  CHECK(value_of(fams, "node_disk_flush_requests_total", "device", "nvme0n1") == 1239855);

  const auto devices = label_values(family(fams, "node_disk_info"), "device");
  CHECK(devices == std::vector<std::string>{"dm-0", "md127", "nvme0n1", "sda", "sr0", "vda"});
  // vda's kernel has the 11 original columns only, md127's also the discard ones.
  CHECK(label_values(family(fams, "node_disk_discards_completed_total"), "device") ==
        std::vector<std::string>{"dm-0", "md127", "nvme0n1", "sda", "sr0"});
  CHECK(label_values(family(fams, "node_disk_flush_requests_total"), "device") ==
        std::vector<std::string>{"dm-0", "nvme0n1", "sda", "sr0"});

  // udev facts: model/serial for node_disk_info, filesystem and LVM for dm-0, ATA for sda.
  CHECK(value_of(fams, "node_disk_info", "serial", "W1E2R3T4") == 1);
  CHECK(value_of(fams, "node_disk_filesystem_info", "uuid",
                 "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d") == 1);
  CHECK(value_of(fams, "node_disk_device_mapper_info", "vg_name", "vg0") == 1);
  CHECK(value_of(fams, "node_disk_ata_rotation_rate_rpm", "device", "sda") == 7200);

  // Without a udev database the labels are empty and the udev-only families absent.
  auto options = diskstats_options();
  options.udev_data_directory.clear();
  const auto bare = run_collector("diskstats", system_paths(), options);
  CHECK(value_of(bare, "node_disk_info", "device", "sda") == 1);
  CHECK(label_values(family(bare, "node_disk_info"), "serial") == std::vector<std::string>(6, ""));
  CHECK(find_family(bare, "node_disk_filesystem_info") == nullptr);
  CHECK(find_family(bare, "node_disk_ata_write_cache") == nullptr);
}

TEST_CASE("diskstats: short lines are skipped, malformed ones fail", "[exporter][system]") {
  Scratch s;
  // A 2.6-era partition line (4 statistics) carries too little and is skipped.
  s.write("proc/diskstats",
          "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n"
          "   8       1 sda1 4 5 6 7\n"
          "\n");
  auto fams = run_collector("diskstats", s.paths());
  CHECK(label_values(family(fams, "node_disk_info"), "device") == std::vector<std::string>{"sda"});

  s.write("proc/diskstats", "   8       0 sda 1 2 x 4 5 6 7 8 9 10 11\n");
  auto msg = collect_error("diskstats", s.paths());
  CHECK(msg.find("diskstats") != std::string::npos);
  CHECK(msg.find("line 1") != std::string::npos);
  CHECK(msg.find("\"x\"") != std::string::npos);
  s.write("proc/diskstats", "   8       0 sda 1 2 3 4 5 6 -7 8 9 10 11\n");
  CHECK_FALSE(collect_error("diskstats", s.paths()).empty());
  s.write("proc/diskstats", "   8       0 sda 1 2 3 4 5 6 99999999999999999999999 8 9 10 11\n");
  CHECK_FALSE(collect_error("diskstats", s.paths()).empty());
  s.write("proc/diskstats", "   eight   0 sda 1 2 3 4 5 6 7 8 9 10 11\n");
  CHECK(collect_error("diskstats", s.paths()).find("device number") != std::string::npos);

  CHECK(collect_error("diskstats", {"/nonexistent", "/nonexistent", "/"})
            .find("/nonexistent/diskstats") != std::string::npos);

  ex::CollectorOptions bad_regex;
  bad_regex.diskstats_device_exclude = "(";
  CHECK(collect_error("diskstats", system_paths(), bad_regex).find("device_exclude") !=
        std::string::npos);
}

TEST_CASE("sockstat reports both families and memory in bytes", "[exporter][system]") {
  const auto fams = run_collector("sockstat", system_paths());
  const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
  CHECK(value_of(fams, "node_sockstat_sockets_used") == 1243);
  CHECK(value_of(fams, "node_sockstat_TCP_mem") == 29);
  CHECK(value_of(fams, "node_sockstat_TCP_mem_bytes") == 29 * page);
  CHECK(value_of(fams, "node_sockstat_UDP_mem_bytes") == 6 * page);
  CHECK(value_of(fams, "node_sockstat_TCP6_inuse") == 23);
  CHECK(value_of(fams, "node_sockstat_FRAG6_memory") == 0);
  // Keys the file lacks are not invented (except inuse).
  CHECK(find_family(fams, "node_sockstat_UDP_tw") == nullptr);
  CHECK(find_family(fams, "node_sockstat_FRAG_mem_bytes") == nullptr);

  Scratch s;
  // Without IPv6 the kernel has no sockstat6: the IPv4 series alone; with neither, none.
  s.write("proc/net/sockstat", "sockets: used 3\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 1\n");
  auto v4 = run_collector("sockstat", s.paths());
  CHECK(value_of(v4, "node_sockstat_TCP_inuse") == 1);
  CHECK(find_family(v4, "node_sockstat_TCP6_inuse") == nullptr);
  std::filesystem::remove(s.dir / "proc/net/sockstat");
  CHECK(run_collector("sockstat", s.paths()).empty());

  for (const char* bad :
       {"TCP: inuse\n", "TCP: inuse 1 orphan\n", "TCP: inuse one\n", "TCP inuse 1\n",
        "T-CP: inuse 1\n", "TCP: inuse 1\nTCP: inuse 2\n", "TCP: inuse 1.5\n"}) {
    CAPTURE(bad);
    s.write("proc/net/sockstat", bad);
    CHECK(collect_error("sockstat", s.paths()).find("net/sockstat") != std::string::npos);
  }
}

TEST_CASE("pressure converts microseconds and fails without PSI", "[exporter][system]") {
  const auto fams = run_collector("pressure", system_paths());
  CHECK(value_of(fams, "node_pressure_cpu_waiting_seconds_total") == Approx(4107.853219));
  CHECK(value_of(fams, "node_pressure_io_stalled_seconds_total") == Approx(611.740094));
  CHECK(value_of(fams, "node_pressure_memory_waiting_seconds_total") == Approx(21.736415));
  CHECK(find_family(fams, "node_pressure_cpu_stalled_seconds_total") == nullptr);

  Scratch s;
  // No /proc/pressure (kernel before 4.20 or without CONFIG_PSI): a failed collector, no data.
  auto c = ex::find_collector("pressure")->make({});
  std::vector<MetricFamily> out;
  auto r = c->collect(s.paths(), out);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == neco::Errc::not_found);
  CHECK(out.empty());

  const std::string ok_line = "some avg10=0.00 avg60=0.00 avg300=0.00 total=1\n";
  s.write("proc/pressure/cpu", ok_line);
  s.write("proc/pressure/io", ok_line + "full avg10=0.00 avg60=0.00 avg300=0.00 total=2\n");
  s.write("proc/pressure/memory", ok_line);  // "full" missing
  CHECK(collect_error("pressure", s.paths()).find("memory") != std::string::npos);
  for (const char* bad :
       {"some avg10=0.00 avg60=0.00 avg300=0.00 total=x\n", "some avg10=0.00 avg60=0.00 total=5\n",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=-5\n",
        "some total=5 avg10=0.00 avg60=0.00 avg300=0.00\n", "some\n"}) {
    CAPTURE(bad);
    s.write("proc/pressure/cpu", bad);
    CHECK(collect_error("pressure", s.paths()).find("pressure/cpu") != std::string::npos);
  }
  // Lines of kinds not known yet are ignored.
  s.write("proc/pressure/cpu", "future x=1\n" + ok_line);
  s.write("proc/pressure/memory", ok_line + "full avg10=0.00 avg60=0.00 avg300=0.00 total=3\n");
  CHECK(value_of(run_collector("pressure", s.paths()),
                 "node_pressure_memory_stalled_seconds_total") == Approx(3e-6));
}

TEST_CASE("os reads etc/os-release, else usr/lib/os-release", "[exporter][system]") {
  const auto fams = run_collector("os", system_paths());
  CHECK(value_of(fams, "node_os_info", "pretty_name", "Exemplar Linux 24.10") == 1);
  CHECK(value_of(fams, "node_os_info", "build_id", "2024-10-17") == 1);        // single quotes
  CHECK(value_of(fams, "node_os_version", "id", "exemplar") == Approx(24.1));  // "24.10.3"

  Scratch s;
  s.write("root/usr/lib/os-release", "NAME=Base\nID=base\nVERSION_ID=7\nIMAGE_ID=img\n");
  auto fallback = run_collector("os", s.paths());
  CHECK(value_of(fallback, "node_os_info", "image_id", "img") == 1);
  CHECK(value_of(fallback, "node_os_version", "name", "Base") == 7);

  // Quoting, escapes, comments and a VERSION_ID without a number (no node_os_version).
  s.write("root/etc/os-release",
          "# comment\n\nNAME=\"A \\\"quoted\\\" \\\\ name\" # trailing\nID=rolling \n"
          "VERSION_ID=rolling\nPRETTY_NAME='it''s'\n");
  auto quoted = run_collector("os", s.paths());
  CHECK(value_of(quoted, "node_os_info", "name", "A \"quoted\" \\ name") == 1);
  CHECK(value_of(quoted, "node_os_info", "id", "rolling") == 1);
  CHECK(value_of(quoted, "node_os_info", "pretty_name", "its") == 1);
  CHECK(find_family(quoted, "node_os_version") == nullptr);

  for (const char* bad : {"NAME=\"unclosed\n", "just words\n", "=value\n", "1D=x\n",
                          // A control character; split so "\x01b" is not one escape.
                          "NAME=a\x01"  // NOLINT(bugprone-suspicious-missing-comma)
                          "b\n"}) {
    CAPTURE(bad);
    s.write("root/etc/os-release", bad);
    CHECK(collect_error("os", s.paths()).find("etc/os-release") != std::string::npos);
  }

  Scratch empty;
  std::filesystem::create_directories(empty.dir / "root");
  auto c = ex::find_collector("os")->make({});
  std::vector<MetricFamily> out;
  auto r = c->collect(empty.paths(), out);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().code == neco::Errc::not_found);
}

TEST_CASE("entropy reads the pool and fails on garbage", "[exporter][system]") {
  const auto fams = run_collector("entropy", system_paths());
  CHECK(value_of(fams, "node_entropy_available_bits") == 256);
  CHECK(value_of(fams, "node_entropy_pool_size_bits") == 256);

  Scratch s;
  s.write("proc/sys/kernel/random/entropy_avail", "3754\n");
  CHECK(collect_error("entropy", s.paths()).find("poolsize") != std::string::npos);
  s.write("proc/sys/kernel/random/poolsize", "4096 bits\n");
  CHECK(collect_error("entropy", s.paths()).find("poolsize") != std::string::npos);
  s.write("proc/sys/kernel/random/poolsize", "4096\n");
  CHECK(value_of(run_collector("entropy", s.paths()), "node_entropy_available_bits") == 3754);
}

TEST_CASE("timex reports adjtimex(2) as node_exporter does", "[exporter][system]") {
  const auto fams = run_collector("timex", system_paths());
  std::vector<std::string> names;
  for (const auto& f : fams) {
    names.push_back(f.name);
    CHECK(f.samples.size() == 1);
  }
  std::sort(names.begin(), names.end());
  // node_exporter 1.5's timex family set.
  CHECK(names == std::vector<std::string>{
                     "node_timex_estimated_error_seconds", "node_timex_frequency_adjustment_ratio",
                     "node_timex_loop_time_constant", "node_timex_maxerror_seconds",
                     "node_timex_offset_seconds", "node_timex_pps_calibration_total",
                     "node_timex_pps_error_total", "node_timex_pps_frequency_hertz",
                     "node_timex_pps_jitter_seconds", "node_timex_pps_jitter_total",
                     "node_timex_pps_shift_seconds", "node_timex_pps_stability_exceeded_total",
                     "node_timex_pps_stability_hertz", "node_timex_status",
                     "node_timex_sync_status", "node_timex_tai_offset_seconds",
                     "node_timex_tick_seconds"});
  CHECK(family(fams, "node_timex_pps_error_total").type == neco::metrics::MetricType::counter);
  CHECK(family(fams, "node_timex_offset_seconds").type == neco::metrics::MetricType::gauge);
  // The kernel's tick is 1e6/HZ µs: 1 ms to 10 ms for HZ 100..1000.
  const double tick = value_of(fams, "node_timex_tick_seconds");
  CHECK(tick >= 0.0009);
  CHECK(tick <= 0.0101);
  const double sync = value_of(fams, "node_timex_sync_status");
  CHECK((sync == 0 || sync == 1));
  // The kernel limits the frequency correction to ±500 ppm.
  CHECK(value_of(fams, "node_timex_frequency_adjustment_ratio") == Approx(1).margin(0.0006));
  CHECK(value_of(fams, "node_timex_maxerror_seconds") >= 0);
  CHECK(std::abs(value_of(fams, "node_timex_offset_seconds")) < 1);
  struct ::timex tx {};
  REQUIRE(::adjtimex(&tx) != -1);
  CHECK(value_of(fams, "node_timex_status") == tx.status);
}

TEST_CASE("time reports the zone and the clocksources", "[exporter][system]") {
  const auto fams = run_collector("time", system_paths());
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  REQUIRE(::localtime_r(&now, &local) != nullptr);
  CHECK(value_of(fams, "node_time_zone_offset_seconds", "time_zone", local.tm_zone) ==
        local.tm_gmtoff);
  CHECK(value_of(fams, "node_time_clocksource_current_info", "clocksource", "tsc") == 1);
  CHECK(label_values(family(fams, "node_time_clocksource_available_info"), "clocksource") ==
        std::vector<std::string>{"acpi_pm", "hpet", "tsc"});

  Scratch s;
  // No clocksource directory: only time and zone.
  std::filesystem::create_directories(s.dir / "sys");
  auto bare = run_collector("time", s.paths());
  CHECK(find_family(bare, "node_time_seconds") != nullptr);
  CHECK(find_family(bare, "node_time_clocksource_current_info") == nullptr);

  // Devices are numbered by position in name order, as node_exporter numbers them.
  const std::string cs = "sys/devices/system/clocksource/";
  s.write(cs + "clocksource0/available_clocksource", "arch_sys_counter\n");
  s.write(cs + "clocksource0/current_clocksource", "arch_sys_counter\n");
  s.write(cs + "clocksource7/available_clocksource", "jiffies\n");
  s.write(cs + "clocksource7/current_clocksource", "jiffies\n");
  s.write(cs + "power/available_clocksource", "ignored\n");
  auto two = run_collector("time", s.paths());
  CHECK(value_of(two, "node_time_clocksource_current_info", "clocksource", "jiffies") == 1);
  CHECK(label_values(family(two, "node_time_clocksource_current_info"), "device") ==
        std::vector<std::string>{"0", "1"});

  std::filesystem::remove(s.dir / (cs + "clocksource7/current_clocksource"));
  CHECK(collect_error("time", s.paths()).find("current_clocksource") != std::string::npos);
}

TEST_CASE("the exporter section's diskstats settings", "[exporter][config]") {
  const ex::ExporterConfig defaults;
  CHECK(defaults.diskstats.device_exclude == R"(^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$)");
  CHECK(defaults.diskstats.udev_data_path == "/run/udev/data");

  auto parse = [](const std::string& yaml) -> neco::Expected<ex::ExporterConfig> {
    neco::config::ModuleSection ms{"exporter", YAML::Load(yaml), yaml, {}};
    neco::config::Section section(ms, "role.yaml");
    ex::ExporterConfig c;
    if (auto ok = section.read(ex::exporter_schema(), c); !ok) return std::unexpected(ok.error());
    return c;
  };
  auto bad = parse("diskstats:\n  device_exclude: \"(\"\n");
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().message.find("device_exclude") != std::string::npos);
  CHECK_FALSE(parse("diskstats:\n  unknown: 1\n").has_value());

  auto c = parse("collectors: [diskstats]\nprocfs: " + (kData / "fixtures/proc").string() +
                 "\ndiskstats:\n  device_exclude: '^(sd|dm-)'\n  udev_data_path: " +
                 (kData / "fixtures/udev/data").string() + "\n");
  REQUIRE(c.has_value());
  auto runner = ex::make_runner(*c);
  std::vector<MetricFamily> out;
  runner->scrape(out);
  CHECK(value_of(out, "node_scrape_collector_success", "collector", "diskstats") == 1);
  // The configured regex replaces the default: partitions are back, sd* and dm-* gone.
  CHECK(label_values(family(out, "node_disk_info"), "device") ==
        std::vector<std::string>{"loop0", "md127", "nvme0n1", "nvme0n1p1", "ram0", "sr0", "vda"});
  CHECK(value_of(out, "node_disk_info", "model", "Example NVMe SSD 1TB") == 1);
}

TEST_CASE("system collectors survive arbitrary file contents", "[exporter][system]") {
  // Seeded so a failure reproduces.
  std::mt19937 rng(20240611);
  const std::string alphabet = "0123456789 \t\n:=.-#\"'\\abcdefsomefullTCPinuse\x01\xff";
  // Either random bytes or lines of plausible tokens, so some input gets past the first checks.
  const std::vector<std::string> tokens{"8",
                                        "0",
                                        "sda",
                                        "18446744073709551615",
                                        "18446744073709551616",
                                        "-1",
                                        "1.5",
                                        "TCP:",
                                        "inuse",
                                        "mem",
                                        "some",
                                        "full",
                                        "avg10=0.1",
                                        "avg60=1",
                                        "avg300=x",
                                        "total=9",
                                        "NAME=\"x",
                                        "ID='a'",
                                        "\"",
                                        "#",
                                        "=",
                                        "E:ID_ATA=1",
                                        "nan",
                                        "inf",
                                        ""};
  auto garbage = [&] {
    std::string s;
    const bool bytes = rng() % 2 == 0;
    const auto n = rng() % 300;
    for (std::size_t i = 0; i < n; ++i) {
      if (bytes) {
        s += alphabet[rng() % alphabet.size()];
      } else {
        s += tokens[rng() % tokens.size()];
        s += rng() % 8 == 0 ? '\n' : ' ';
      }
    }
    return s;
  };
  const std::vector<std::pair<const char*, std::vector<std::string>>> cases{
      {"diskstats", {"proc/diskstats"}},
      {"sockstat", {"proc/net/sockstat", "proc/net/sockstat6"}},
      {"pressure", {"proc/pressure/cpu", "proc/pressure/io", "proc/pressure/memory"}},
      {"os", {"root/etc/os-release"}},
      {"entropy", {"proc/sys/kernel/random/entropy_avail", "proc/sys/kernel/random/poolsize"}},
      {"time",
       {"sys/devices/system/clocksource/clocksource0/available_clocksource",
        "sys/devices/system/clocksource/clocksource0/current_clocksource"}},
  };
  Scratch s;
  for (const auto& [name, files] : cases) {
    auto c = ex::find_collector(name)->make(diskstats_options());
    for (int round = 0; round < 200; ++round) {
      for (const auto& f : files)
        s.write(f, garbage());
      std::vector<MetricFamily> out;
      auto r = c->collect(s.paths(), out);
      if (r) render(std::move(out));  // whatever was accepted renders
    }
  }
  SUCCEED("no crash");
}
