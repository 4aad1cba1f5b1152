// The agent's own process metrics, named and defined as in the Prometheus client libraries,
// and the neco_build_info gauge.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "agent/metrics/registry.hpp"
#include "agent/util/error.hpp"

namespace neco::metrics {

// The fields of /proc/<pid>/stat the process collector needs.
struct ProcStat {
  std::uint64_t utime_ticks = 0;      // field 14: user CPU, clock ticks
  std::uint64_t stime_ticks = 0;      // field 15: system CPU, clock ticks
  std::uint64_t starttime_ticks = 0;  // field 22: start after boot, clock ticks
  std::uint64_t vsize_bytes = 0;      // field 23: virtual memory size
  std::int64_t rss_pages = 0;         // field 24: resident set, pages
};

// Parses /proc/<pid>/stat text; the command name may contain spaces and parentheses.
Expected<ProcStat> parse_proc_stat(std::string_view text);
// Parses the boot time ("btime" line, seconds since the epoch) from /proc/stat text.
Expected<std::int64_t> parse_boot_time(std::string_view proc_stat);

// A collector for process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds and
// process_start_time_seconds of the calling process. A value that cannot be read is left
// out of that scrape (and logged at debug level) rather than failing the scrape.
Collector process_collector();
// Registers process_collector() on `registry`.
[[nodiscard]] CollectorHandle add_process_collector(Registry& registry);

// "gcc 12.2.0" / "clang 16.0.6": the compiler this binary was built with.
std::string compiler_version();

// Declares neco_build_info{version, compiler} = 1.
void add_build_info(Registry& registry, std::string_view version,
                    std::string_view compiler = compiler_version());

}  // namespace neco::metrics
