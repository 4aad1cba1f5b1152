// The interface of one exporter collector (meminfo, cpu, filesystem, ...) and the table of
// every implemented collector, by name.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agent/metrics/metric_family.hpp"
#include "agent/util/error.hpp"

struct statfs;  // <sys/statfs.h>

namespace neco::exporter {

// Where the host's pseudo filesystems are; tests point these at fixture trees.
struct Paths {
  std::filesystem::path proc = "/proc";
  std::filesystem::path sys = "/sys";
  std::filesystem::path root = "/";
};

// Settings of individual collectors, taken from the module's section.
struct CollectorOptions {
  std::string mount_points_exclude;  // filesystem: ECMAScript regex over mount points
  std::string fs_types_exclude;      // filesystem: ECMAScript regex over filesystem types
  std::chrono::milliseconds mount_timeout{1000};  // filesystem: per-mount statfs deadline
  std::filesystem::path textfile_directory;       // textfile: empty = no files read
  std::string diskstats_device_exclude;           // diskstats: ECMAScript regex over device names
  std::filesystem::path udev_data_directory;      // diskstats: udev database; empty = not read
  std::string netclass_ignored_devices = "^$";    // netclass: ECMAScript regex over device names
  bool netclass_ignore_invalid_speed = false;     // netclass: drop speed -1 (unknown) instead
  bool netclass_sysfs_only = false;  // netclass: no rtnetlink dump (tests compare both ways)
  // filesystem: the statfs(2) to call; tests substitute one that blocks (empty = ::statfs).
  std::function<int(const char* path, struct ::statfs* buf)> statfs;
};

class Collector {
 public:
  virtual ~Collector() = default;
  // The collector's name as in node_exporter (the `collector` label value).
  virtual std::string_view name() const = 0;
  // Appends this collector's families; an error marks the collector unsuccessful and its
  // output is dropped. Errc::unavailable means the host has nothing for this collector
  // (node_exporter's ErrNoData, e.g. no /sys/class/hwmon): also success 0, but logged at debug
  // level only, since it repeats on every scrape. Never called concurrently with itself.
  virtual Expected<void> collect(const Paths& paths, std::vector<metrics::MetricFamily>& out) = 0;
};

using CollectorMaker = std::unique_ptr<Collector> (*)(const CollectorOptions& options);

struct CollectorInfo {
  std::string_view name;
  CollectorMaker make;
};

// Every implemented collector, sorted by name.
std::span<const CollectorInfo> collector_table();

// The table entry for `name`, or nullptr.
const CollectorInfo* find_collector(std::string_view name);

// The implemented collectors' constructors (one per source file group).
std::unique_ptr<Collector> make_meminfo_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_loadavg_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_cpu_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_stat_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_vmstat_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_filefd_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_uname_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_time_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_netdev_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_filesystem_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_textfile_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_diskstats_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_sockstat_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_pressure_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_os_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_timex_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_entropy_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_netclass_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_hwmon_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_thermal_zone_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_nvme_collector(const CollectorOptions& options);
std::unique_ptr<Collector> make_edac_collector(const CollectorOptions& options);

// Reads a whole (usually pseudo) file; not_found / internal with the path on failure.
Expected<std::string> read_text_file(const std::filesystem::path& path);

}  // namespace neco::exporter
