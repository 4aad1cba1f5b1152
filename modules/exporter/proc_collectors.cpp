// The collectors that read plain procfs files: meminfo, loadavg, cpu, stat, vmstat, filefd,
// uname, time (with sysfs clocksources) and netdev. Names, types and labels follow
// node_exporter 1.5 on Linux.
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <ctime>
#include <map>
#include <string>

#include "modules/exporter/collector.hpp"
#include "modules/exporter/file_cache.hpp"
#include "modules/exporter/text_parse.hpp"

namespace neco::exporter {
namespace {

using metrics::MetricFamily;
using metrics::MetricType;

// USER_HZ as seen by user space on Linux (sysconf(_SC_CLK_TCK) is 100 on every architecture).
constexpr double kUserHz = 100.0;

// The shared splitter (text_parse.hpp) under this file's older name.
std::vector<std::string_view> fields_of(std::string_view line) {
  return text::fields(line);
}

template <class Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  while (!text.empty()) {
    const auto nl = text.find('\n');
    fn(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

bool to_double(std::string_view s, double& out) {
  return text::parse_double(s, out);
}

std::string trim_newline(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
    s.pop_back();
  return s;
}

Error parse_error(const std::filesystem::path& path, std::string_view what) {
  return Error{Errc::internal, "Failed to parse " + path.string() + ": " + std::string(what)};
}

class MeminfoCollector final : public Collector {
 public:
  std::string_view name() const override { return "meminfo"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto path = paths.proc / "meminfo";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    std::optional<Error> error;
    for_each_line(*text, [&](std::string_view line) {
      const auto f = fields_of(line);
      if (f.empty() || error) return;
      if (f.size() < 2 || f[0].back() != ':') {
        error = parse_error(path, "malformed line");
        return;
      }
      std::string key(f[0].substr(0, f[0].size() - 1));
      double value = 0;
      if (!to_double(f[1], value)) {
        error = parse_error(path, "bad value for " + key);
        return;
      }
      // "Active(anon)" -> "Active_anon", as node_exporter names it.
      if (const auto open = key.find('('); open != std::string::npos) {
        key[open] = '_';
        if (!key.empty() && key.back() == ')') key.pop_back();
      }
      std::string metric = "node_memory_" + key;
      std::string unit;
      if (f.size() >= 3 && f[2] == "kB") {
        value *= 1024;
        metric += "_bytes";
        unit = "bytes";
      }
      MetricFamily fam{.name = std::move(metric),
                       .help = "Memory information field " + key + ".",
                       .type = MetricType::gauge,
                       .unit = std::move(unit)};
      fam.add(value);
      out.push_back(std::move(fam));
    });
    if (error) return std::unexpected(*error);
    return {};
  }
};

class LoadavgCollector final : public Collector {
 public:
  std::string_view name() const override { return "loadavg"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto path = paths.proc / "loadavg";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    const auto f = fields_of(*text);
    std::array<double, 3> loads{};
    for (std::size_t i = 0; i < 3; ++i) {
      if (f.size() < 3 || !to_double(f[i], loads[i]))
        return std::unexpected(parse_error(path, "bad load"));
    }
    const std::array<std::string_view, 3> names{"1", "5", "15"};
    for (std::size_t i = 0; i < 3; ++i) {
      MetricFamily fam{.name = "node_load" + std::string(names[i]),
                       .help = std::string(names[i]) + "m load average.",
                       .type = MetricType::gauge};
      fam.add(loads[i]);
      out.push_back(std::move(fam));
    }
    return {};
  }
};

class CpuCollector final : public Collector {
 public:
  std::string_view name() const override { return "cpu"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto path = paths.proc / "stat";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    MetricFamily seconds{.name = "node_cpu_seconds_total",
                         .help = "Seconds the CPUs spent in each mode.",
                         .type = MetricType::counter,
                         .unit = "seconds"};
    MetricFamily guest{.name = "node_cpu_guest_seconds_total",
                       .help = "Seconds the CPUs spent in guests (VMs) for each mode.",
                       .type = MetricType::counter,
                       .unit = "seconds"};
    static constexpr std::array<std::string_view, 8> kModes{"user",   "nice", "system",  "idle",
                                                            "iowait", "irq",  "softirq", "steal"};
    std::optional<Error> error;
    for_each_line(*text, [&](std::string_view line) {
      const auto f = fields_of(line);
      if (error || f.empty() || f[0].size() <= 3 || f[0].substr(0, 3) != "cpu") return;
      const std::string cpu(f[0].substr(3));
      if (f.size() < 11) {
        error = parse_error(path, "short cpu line");
        return;
      }
      std::array<double, 10> v{};
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (!to_double(f[i + 1], v[i])) {
          error = parse_error(path, "bad cpu value");
          return;
        }
        v[i] /= kUserHz;
      }
      for (std::size_t m = 0; m < kModes.size(); ++m) {
        seconds.add(v[m], {{"cpu", cpu}, {"mode", kModes[m]}});
      }
      guest.add(v[8], {{"cpu", cpu}, {"mode", "user"}});
      guest.add(v[9], {{"cpu", cpu}, {"mode", "nice"}});
    });
    if (error) return std::unexpected(*error);
    out.push_back(std::move(seconds));
    out.push_back(std::move(guest));
    return {};
  }
};

class StatCollector final : public Collector {
 public:
  std::string_view name() const override { return "stat"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto path = paths.proc / "stat";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    struct Field {
      std::string_view key;
      const char* metric;
      const char* help;
      MetricType type;
      const char* unit;
    };
    static constexpr std::array<Field, 6> kFields{{
        {"intr", "node_intr_total", "Total number of interrupts serviced.", MetricType::counter,
         ""},
        {"ctxt", "node_context_switches_total", "Total number of context switches.",
         MetricType::counter, ""},
        {"btime", "node_boot_time_seconds", "Node boot time, in unixtime.", MetricType::gauge,
         "seconds"},
        {"processes", "node_forks_total", "Total number of forks.", MetricType::counter, ""},
        {"procs_running", "node_procs_running", "Number of processes in runnable state.",
         MetricType::gauge, ""},
        {"procs_blocked", "node_procs_blocked",
         "Number of processes blocked waiting for I/O to complete.", MetricType::gauge, ""},
    }};
    std::array<std::optional<double>, kFields.size()> values;
    for_each_line(*text, [&](std::string_view line) {
      const auto f = fields_of(line);
      if (f.size() < 2) return;
      for (std::size_t i = 0; i < kFields.size(); ++i) {
        double v = 0;
        if (f[0] == kFields[i].key && to_double(f[1], v)) values[i] = v;
      }
    });
    for (std::size_t i = 0; i < kFields.size(); ++i) {
      if (!values[i])
        return std::unexpected(parse_error(path, std::string(kFields[i].key) + " missing"));
    }
    for (std::size_t i = 0; i < kFields.size(); ++i) {
      MetricFamily fam{.name = kFields[i].metric,
                       .help = kFields[i].help,
                       .type = kFields[i].type,
                       .unit = kFields[i].unit};
      fam.add(*values[i]);
      out.push_back(std::move(fam));
    }
    return {};
  }
};

// node_exporter's default --collector.vmstat.fields, ^(oom_kill|pgpg|pswp|pg.*fault).*, as
// plain string tests: a regex per /proc/vmstat line was most of this collector's time.
bool default_vmstat_field(std::string_view key) {
  return key.starts_with("oom_kill") || key.starts_with("pgpg") || key.starts_with("pswp") ||
         (key.starts_with("pg") && key.find("fault", 2) != std::string_view::npos);
}

class VmstatCollector final : public Collector {
 public:
  std::string_view name() const override { return "vmstat"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto path = paths.proc / "vmstat";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    std::optional<Error> error;
    for_each_line(*text, [&](std::string_view line) {
      const auto f = fields_of(line);
      if (error || f.empty()) return;
      if (!default_vmstat_field(f[0])) return;
      const std::string key(f[0]);
      double v = 0;
      if (f.size() != 2 || !to_double(f[1], v)) {
        error = parse_error(path, "bad value for " + key);
        return;
      }
      MetricFamily fam{.name = "node_vmstat_" + key,
                       .help = "/proc/vmstat information field " + key + ".",
                       .type = MetricType::untyped};
      fam.add(v);
      out.push_back(std::move(fam));
    });
    if (error) return std::unexpected(*error);
    return {};
  }
};

class FilefdCollector final : public Collector {
 public:
  std::string_view name() const override { return "filefd"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto path = paths.proc / "sys/fs/file-nr";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    const auto f = fields_of(trim_newline(*text));
    double allocated = 0;
    double maximum = 0;
    if (f.size() != 3 || !to_double(f[0], allocated) || !to_double(f[2], maximum)) {
      return std::unexpected(parse_error(path, "expected three fields"));
    }
    MetricFamily a{.name = "node_filefd_allocated",
                   .help = "File descriptor statistics: allocated.",
                   .type = MetricType::gauge};
    a.add(allocated);
    MetricFamily m{.name = "node_filefd_maximum",
                   .help = "File descriptor statistics: maximum.",
                   .type = MetricType::gauge};
    m.add(maximum);
    out.push_back(std::move(a));
    out.push_back(std::move(m));
    return {};
  }
};

// uname(2)'s fields from a procfs tree (fixtures, or a host's /proc mounted elsewhere).
Expected<std::array<std::string, 6>> read_uname_files(const std::filesystem::path& kernel) {
  std::array<std::string, 6> v;
  static constexpr std::array<const char*, 5> kFiles{"ostype", "osrelease", "version", "hostname",
                                                     "domainname"};
  for (std::size_t i = 0; i < kFiles.size(); ++i) {
    auto text = read_text_file(kernel / kFiles[i]);
    if (!text) return std::unexpected(text.error());
    v[i] = trim_newline(std::move(*text));
  }
  // /proc/sys/kernel/arch exists since Linux 6.1; older kernels: ask uname(2).
  if (auto arch = read_text_file(kernel / "arch")) {
    v[5] = trim_newline(std::move(*arch));
  } else {
    utsname u{};
    if (::uname(&u) == 0) v[5] = u.machine;
  }
  return v;
}

class UnameCollector final : public Collector {
 public:
  std::string_view name() const override { return "uname"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    // sysname, release, version, nodename, domainname, machine
    std::array<std::string, 6> v;
    utsname u{};
    if (paths.proc == "/proc" && ::uname(&u) == 0) {
      // The live host: one uname(2), as node_exporter does, instead of six file reads (the
      // files under /proc/sys/kernel show the same UTS namespace).
      v = {u.sysname, u.release, u.version, u.nodename, u.domainname, u.machine};
    } else {
      auto files = read_uname_files(paths.proc / "sys/kernel");
      if (!files) return std::unexpected(files.error());
      v = std::move(*files);
    }
    MetricFamily fam{.name = "node_uname_info",
                     .help = "Labeled system information as provided by the uname system call.",
                     .type = MetricType::gauge};
    fam.add(1, {{"domainname", v[4]},
                {"machine", v[5]},
                {"nodename", v[3]},
                {"release", v[1]},
                {"sysname", v[0]},
                {"version", v[2]}});
    out.push_back(std::move(fam));
    return {};
  }
};

class TimeCollector final : public Collector {
 public:
  std::string_view name() const override { return "time"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto now = std::chrono::system_clock::now();
    MetricFamily seconds{.name = "node_time_seconds",
                         .help = "System time in seconds since epoch (1970).",
                         .type = MetricType::gauge,
                         .unit = "seconds"};
    seconds.add(std::chrono::duration<double>(now.time_since_epoch()).count());
    // The local zone as this process sees it (TZ, else /etc/localtime), as node_exporter.
    const std::time_t t = std::chrono::system_clock::to_time_t(now);
    std::tm local{};
    if (::localtime_r(&t, &local) == nullptr) {
      return fail(Errc::internal, "Failed to get the local time zone");
    }
    MetricFamily zone{.name = "node_time_zone_offset_seconds",
                      .help = "System time zone offset in seconds.",
                      .type = MetricType::gauge,
                      .unit = "seconds"};
    zone.add(static_cast<double>(local.tm_gmtoff),
             {{"time_zone", local.tm_zone != nullptr ? local.tm_zone : ""}});
    auto clocksources = collect_clocksources(paths);
    if (!clocksources) return std::unexpected(clocksources.error());
    out.push_back(std::move(seconds));
    out.push_back(std::move(zone));
    for (auto& f : *clocksources) {
      if (!f.samples.empty()) out.push_back(std::move(f));
    }
    return {};
  }

 private:
  // node_time_clocksource_{available,current}_info from sys/devices/system/clocksource/
  // clocksource<N>/. The `device` label is the position in name order ("0", "1", ...), not
  // N: that is what node_exporter 1.5 exports.
  static Expected<std::array<MetricFamily, 2>> collect_clocksources(const Paths& paths) {
    std::array<MetricFamily, 2> fams{
        MetricFamily{.name = "node_time_clocksource_available_info",
                     .help = "Available clocksources read from '/sys/devices/system/clocksource'.",
                     .type = MetricType::gauge},
        MetricFamily{.name = "node_time_clocksource_current_info",
                     .help = "Current clocksource read from '/sys/devices/system/clocksource'.",
                     .type = MetricType::gauge}};
    std::vector<std::filesystem::path> dirs;
    std::error_code ec;
    // A kernel without the directory has no clocksources to report.
    for (std::filesystem::directory_iterator it(paths.sys / "devices/system/clocksource", ec), end;
         !ec && it != end; it.increment(ec)) {
      const auto name = it->path().filename().string();
      if (name.size() > 11 && name.starts_with("clocksource") && name[11] >= '0' &&
          name[11] <= '9') {
        dirs.push_back(it->path());
      }
    }
    std::sort(dirs.begin(), dirs.end());
    for (std::size_t i = 0; i < dirs.size(); ++i) {
      auto available = read_text_file(dirs[i] / "available_clocksource");
      if (!available) return std::unexpected(available.error());
      auto current = read_text_file(dirs[i] / "current_clocksource");
      if (!current) return std::unexpected(current.error());
      const std::string device = std::to_string(i);
      const std::string names = trim_newline(std::move(*available));  // outlives the views
      for (const auto cs : fields_of(names)) {
        fams[0].add(1, {{"clocksource", cs}, {"device", device}});
      }
      fams[1].add(1, {{"clocksource", trim_newline(std::move(*current))}, {"device", device}});
    }
    return fams;
  }
};

class NetdevCollector final : public Collector {
 public:
  std::string_view name() const override { return "netdev"; }
  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    // The 16 columns of /proc/net/dev, named as node_exporter names them.
    static constexpr std::array<std::string_view, 16> kColumns{
        "receive_bytes",  "receive_packets",  "receive_errs",       "receive_drop",
        "receive_fifo",   "receive_frame",    "receive_compressed", "receive_multicast",
        "transmit_bytes", "transmit_packets", "transmit_errs",      "transmit_drop",
        "transmit_fifo",  "transmit_colls",   "transmit_carrier",   "transmit_compressed"};
    const auto path = paths.proc / "net/dev";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());
    std::vector<MetricFamily> fams;
    for (const auto column : kColumns) {
      const bool bytes = column.ends_with("_bytes");
      fams.push_back(MetricFamily{.name = "node_network_" + std::string(column) + "_total",
                                  .help = "Network device statistic " + std::string(column) + ".",
                                  .type = MetricType::counter,
                                  .unit = bytes ? "bytes" : ""});
    }
    std::optional<Error> error;
    int line_no = 0;
    for_each_line(*text, [&](std::string_view line) {
      if (error || ++line_no <= 2 || line.empty()) return;  // two header lines
      const auto colon = line.find(':');
      if (colon == std::string_view::npos) {
        error = parse_error(path, "no device name");
        return;
      }
      const auto dev = fields_of(line.substr(0, colon));
      const auto f = fields_of(line.substr(colon + 1));
      if (dev.size() != 1 || f.size() != kColumns.size()) {
        error = parse_error(path, "expected 16 columns");
        return;
      }
      if (dev[0] == "lo") return;
      for (std::size_t i = 0; i < f.size(); ++i) {
        double v = 0;
        if (!to_double(f[i], v)) {
          error = parse_error(path, "bad value");
          return;
        }
        fams[i].add(v, {{"device", dev[0]}});
      }
    });
    if (error) return std::unexpected(*error);
    for (auto& f : fams)
      out.push_back(std::move(f));
    return {};
  }
};

}  // namespace

Expected<std::string> read_text_file(const std::filesystem::path& path) {
  // 64 MiB bounds a runaway file; procfs files are kilobytes, textfile inputs megabytes at most.
  constexpr std::size_t kLimit = std::size_t{64} << 20;
  auto text = read_file(path, kLimit, false);
  if (text) return std::move(*text);
  // Could not be opened (missing, or not for us): not_found, as callers treat absent files.
  const int e = text.error();
  const bool absent = e == ENOENT || e == ENOTDIR || e == EACCES || e == EPERM || e == ENXIO;
  const Errc code = absent ? Errc::not_found : Errc::internal;
  return fail(code, "Failed to read " + path.string() + ": " + std::strerror(text.error()));
}

std::unique_ptr<Collector> make_meminfo_collector(const CollectorOptions&) {
  return std::make_unique<MeminfoCollector>();
}
std::unique_ptr<Collector> make_loadavg_collector(const CollectorOptions&) {
  return std::make_unique<LoadavgCollector>();
}
std::unique_ptr<Collector> make_cpu_collector(const CollectorOptions&) {
  return std::make_unique<CpuCollector>();
}
std::unique_ptr<Collector> make_stat_collector(const CollectorOptions&) {
  return std::make_unique<StatCollector>();
}
std::unique_ptr<Collector> make_vmstat_collector(const CollectorOptions&) {
  return std::make_unique<VmstatCollector>();
}
std::unique_ptr<Collector> make_filefd_collector(const CollectorOptions&) {
  return std::make_unique<FilefdCollector>();
}
std::unique_ptr<Collector> make_uname_collector(const CollectorOptions&) {
  return std::make_unique<UnameCollector>();
}
std::unique_ptr<Collector> make_time_collector(const CollectorOptions&) {
  return std::make_unique<TimeCollector>();
}
std::unique_ptr<Collector> make_netdev_collector(const CollectorOptions&) {
  return std::make_unique<NetdevCollector>();
}

std::span<const CollectorInfo> collector_table() {
  static constexpr std::array<CollectorInfo, 22> kTable{{
      {"cpu", &make_cpu_collector},
      {"diskstats", &make_diskstats_collector},
      {"edac", &make_edac_collector},
      {"entropy", &make_entropy_collector},
      {"filefd", &make_filefd_collector},
      {"filesystem", &make_filesystem_collector},
      {"hwmon", &make_hwmon_collector},
      {"loadavg", &make_loadavg_collector},
      {"meminfo", &make_meminfo_collector},
      {"netclass", &make_netclass_collector},
      {"netdev", &make_netdev_collector},
      {"nvme", &make_nvme_collector},
      {"os", &make_os_collector},
      {"pressure", &make_pressure_collector},
      {"sockstat", &make_sockstat_collector},
      {"stat", &make_stat_collector},
      {"textfile", &make_textfile_collector},
      {"thermal_zone", &make_thermal_zone_collector},
      {"time", &make_time_collector},
      {"timex", &make_timex_collector},
      {"uname", &make_uname_collector},
      {"vmstat", &make_vmstat_collector},
  }};
  return kTable;
}

const CollectorInfo* find_collector(std::string_view name) {
  for (const auto& c : collector_table()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

}  // namespace neco::exporter
