#include "agent/metrics/process_metrics.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include <fmt/format.h>

#include "agent/log/log.hpp"

namespace neco::metrics {

namespace {

const log::Logger& logger() {
  static const log::Logger instance("metrics");
  return instance;
}

// /proc files report a size of 0, so read until EOF rather than stat-and-read.
Expected<std::string> read_proc_file(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(Errc::unavailable, fmt::format("open {}: {}", path, std::strerror(errno)));
  std::string out;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return fail(Errc::unavailable, fmt::format("read {}: {}", path, std::strerror(err)));
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

template <class T>
bool parse_number(std::string_view text, T& out) {
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && ptr == text.data() + text.size();
}

Expected<std::uint64_t> count_open_fds() {
  // Linux 6.2+ reports the number of open descriptors as the size of /proc/PID/fd: one stat
  // instead of a directory walk whose every entry costs the kernel a dentry (the exporter keeps
  // ~100 pseudo files open, which made the walk a tenth of a scrape). +1 for the descriptor a
  // walk would have open, so the value is the same either way.
  struct stat st {};
  if (::stat("/proc/self/fd", &st) == 0 && st.st_size > 0) {
    return static_cast<std::uint64_t>(st.st_size) + 1;
  }
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) {
    return fail(Errc::unavailable, fmt::format("opendir /proc/self/fd: {}", std::strerror(errno)));
  }
  // Counts the directory's own descriptor too, exactly as the Go and Python clients do.
  std::uint64_t count = 0;
  while (const dirent* entry = ::readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(dir);
  return count;
}

double ticks_per_second() {
  static const double ticks = [] {
    long t = ::sysconf(_SC_CLK_TCK);
    return t > 0 ? static_cast<double>(t) : 100.0;
  }();
  return ticks;
}

std::optional<double> read_start_time() {
  auto stat_text = read_proc_file("/proc/self/stat");
  auto boot_text = read_proc_file("/proc/stat");
  if (!stat_text || !boot_text) return std::nullopt;
  auto stat = parse_proc_stat(*stat_text);
  auto boot = parse_boot_time(*boot_text);
  if (!stat || !boot) return std::nullopt;
  return static_cast<double>(*boot) +
         static_cast<double>(stat->starttime_ticks) / ticks_per_second();
}

MetricFamily& family(std::vector<MetricFamily>& out, std::string_view name, std::string_view help,
                     MetricType type, std::string_view unit) {
  MetricFamily& f = out.emplace_back();
  f.name = name;
  f.help = help;
  f.type = type;
  f.unit = unit;
  return f;
}

}  // namespace

Expected<ProcStat> parse_proc_stat(std::string_view text) {
  // "pid (comm) state ppid …": comm may hold ") ", so the fields start after the last ')'.
  auto close = text.rfind(')');
  if (close == std::string_view::npos) {
    return fail(Errc::invalid_argument, "no ')' after the command name");
  }
  text.remove_prefix(close + 1);
  // Field 3 (state) is the first after ')'; collect fields 3..24.
  std::string_view fields[25];
  int index = 3;
  while (index <= 24) {
    while (!text.empty() && text.front() == ' ')
      text.remove_prefix(1);
    if (text.empty()) break;
    auto end = text.find_first_of(" \n");
    fields[index++] = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end);
  }
  if (index <= 24) return fail(Errc::invalid_argument, "fewer than 24 fields");
  ProcStat stat;
  if (!parse_number(fields[14], stat.utime_ticks) || !parse_number(fields[15], stat.stime_ticks) ||
      !parse_number(fields[22], stat.starttime_ticks) ||
      !parse_number(fields[23], stat.vsize_bytes) || !parse_number(fields[24], stat.rss_pages)) {
    return fail(Errc::invalid_argument, "non-numeric field");
  }
  return stat;
}

Expected<std::int64_t> parse_boot_time(std::string_view proc_stat) {
  std::size_t pos = 0;
  while (pos < proc_stat.size()) {
    auto end = proc_stat.find('\n', pos);
    std::string_view line =
        proc_stat.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    if (line.starts_with("btime ")) {
      line.remove_prefix(6);
      while (!line.empty() && line.front() == ' ')
        line.remove_prefix(1);
      std::int64_t btime = 0;
      if (!parse_number(line, btime)) return fail(Errc::invalid_argument, "bad btime line");
      return btime;
    }
    if (end == std::string_view::npos) break;
    pos = end + 1;
  }
  return fail(Errc::not_found, "no btime line");
}

CollectorHandle add_process_collector(Registry& registry) {
  return registry.add_collector(process_collector());
}

Collector process_collector() {
  // The start time never changes: read it once, at the first scrape that can. Collectors never
  // run concurrently with themselves, so the mutable capture needs no lock.
  std::optional<double> start_time;
  return [start_time](std::vector<MetricFamily>& out) mutable {
    if (auto text = read_proc_file("/proc/self/stat")) {
      if (auto stat = parse_proc_stat(*text)) {
        family(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.",
               MetricType::counter, "seconds")
            .add(static_cast<double>(stat->utime_ticks + stat->stime_ticks) / ticks_per_second());
        family(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
               MetricType::gauge, "bytes")
            .add(static_cast<double>(stat->vsize_bytes));
        family(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
               MetricType::gauge, "bytes")
            .add(static_cast<double>(stat->rss_pages) *
                 static_cast<double>(::sysconf(_SC_PAGESIZE)));
      } else {
        logger().debug("Failed to parse /proc/self/stat: {}", stat.error().message);
      }
    } else {
      logger().debug("Failed to read process stats: {}", text.error().message);
    }
    if (auto fds = count_open_fds()) {
      family(out, "process_open_fds", "Number of open file descriptors.", MetricType::gauge, "")
          .add(static_cast<double>(*fds));
    } else {
      logger().debug("Failed to count open fds: {}", fds.error().message);
    }
    // getrlimit gives the same soft limit /proc/self/limits shows, without parsing text.
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
      double max_fds = limit.rlim_cur == RLIM_INFINITY ? std::numeric_limits<double>::infinity()
                                                       : static_cast<double>(limit.rlim_cur);
      family(out, "process_max_fds", "Maximum number of open file descriptors.", MetricType::gauge,
             "")
          .add(max_fds);
    }
    if (!start_time) start_time = read_start_time();
    if (start_time) {
      family(out, "process_start_time_seconds",
             "Start time of the process since unix epoch in seconds.", MetricType::gauge, "seconds")
          .add(*start_time);
    }
  };
}

std::string compiler_version() {
#if defined(__clang__)
  return fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  return fmt::format("gcc {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

void add_build_info(Registry& registry, std::string_view version, std::string_view compiler) {
  registry
      .gauge({.name = "neco_build_info",
              .help = "A metric with a constant '1' value labeled by the version and compiler "
                      "neco was built with.",
              .labels = {"version", "compiler"}})
      .with({version, compiler})
      .set(1);
}

}  // namespace neco::metrics
