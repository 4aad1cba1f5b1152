// System-wide collectors: sockstat, pressure, os, timex and entropy. Names, types, labels and
// unit conversions follow node_exporter 1.5 on Linux.
#include <sys/timex.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "modules/exporter/collector.hpp"
#include "modules/exporter/text_parse.hpp"

namespace neco::exporter {
namespace {

using metrics::MetricFamily;
using metrics::MetricType;

MetricFamily gauge(std::string name, std::string help, double value, std::string unit = "") {
  MetricFamily f{.name = std::move(name),
                 .help = std::move(help),
                 .type = MetricType::gauge,
                 .unit = std::move(unit)};
  f.add(value);
  return f;
}

// --- sockstat ---------------------------------------------------------------------------

// One protocol line of /proc/net/sockstat{,6}: "TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 3".
struct SockstatLine {
  std::string protocol;
  std::vector<std::pair<std::string, std::int64_t>> values;  // in file order

  std::optional<std::int64_t> get(std::string_view key) const {
    for (const auto& [k, v] : values) {
      if (k == key) return v;
    }
    return std::nullopt;
  }
};

Expected<std::vector<SockstatLine>> parse_sockstat(const std::filesystem::path& path,
                                                   std::string_view content) {
  std::vector<SockstatLine> out;
  for (const auto line : text::lines(content)) {
    if (text::trim(line).empty()) continue;
    const auto f = text::fields(line);
    // A protocol and at least one key/value pair.
    if (f.size() < 3 || f.size() % 2 == 0 || !f[0].ends_with(':')) {
      return std::unexpected(
          text::parse_error(path, "malformed line \"" + std::string(line) + "\""));
    }
    SockstatLine l{.protocol = std::string(f[0].substr(0, f[0].size() - 1)), .values = {}};
    if (!text::name_safe(l.protocol)) {
      return std::unexpected(text::parse_error(path, "bad protocol \"" + l.protocol + "\""));
    }
    for (const auto& other : out) {
      if (other.protocol == l.protocol) {
        return std::unexpected(text::parse_error(path, "duplicate protocol " + l.protocol));
      }
    }
    for (std::size_t i = 1; i + 1 < f.size(); i += 2) {
      std::int64_t v = 0;
      if (!text::parse_int(f[i + 1], v)) {
        return std::unexpected(
            text::parse_error(path, "bad value for " + l.protocol + " " + std::string(f[i])));
      }
      l.values.emplace_back(std::string(f[i]), v);
    }
    out.push_back(std::move(l));
  }
  return out;
}

class SockstatCollector final : public Collector {
 public:
  std::string_view name() const override { return "sockstat"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    std::vector<MetricFamily> fams;
    for (const bool v6 : {false, true}) {
      const auto path = paths.proc / (v6 ? "net/sockstat6" : "net/sockstat");
      auto content = read_text_file(path);
      if (!content) {
        // Without IPv4 or IPv6 in the kernel its file is absent; that family is skipped.
        if (content.error().code == Errc::not_found) continue;
        return std::unexpected(content.error());
      }
      auto parsed = parse_sockstat(path, *content);
      if (!parsed) return std::unexpected(parsed.error());
      for (const auto& l : *parsed) {
        if (l.protocol == "sockets") {
          // Only sockstat (IPv4) has the total of sockets in use.
          if (!v6) {
            fams.push_back(gauge("node_sockstat_sockets_used", "Number of IPv4 sockets in use.",
                                 static_cast<double>(l.get("used").value_or(0))));
          }
          continue;
        }
        auto add = [&](std::string_view key, double value) {
          fams.push_back(gauge(
              "node_sockstat_" + l.protocol + "_" + std::string(key),
              "Number of " + l.protocol + " sockets in state " + std::string(key) + ".", value));
        };
        // "inuse" is always exported (0 when absent), the others only when present.
        add("inuse", static_cast<double>(l.get("inuse").value_or(0)));
        for (const char* key : {"orphan", "tw", "alloc", "mem", "memory"}) {
          if (const auto v = l.get(key)) add(key, static_cast<double>(*v));
        }
        // "mem" counts pages.
        if (const auto pages = l.get("mem")) {
          add("mem_bytes", static_cast<double>(*pages) * page_size_);
        }
      }
    }
    for (auto& f : fams)
      out.push_back(std::move(f));
    return {};
  }

 private:
  double page_size_ = static_cast<double>(::sysconf(_SC_PAGESIZE));
};

// --- pressure ---------------------------------------------------------------------------

// The "total=" microseconds of a PSI line "some avg10=0.00 avg60=0.00 avg300=0.00 total=123".
Expected<std::uint64_t> psi_total(const std::filesystem::path& path, std::string_view line) {
  static constexpr std::array<std::string_view, 4> kKeys{"avg10=", "avg60=", "avg300=", "total="};
  const auto f = text::fields(line);
  if (f.size() != kKeys.size() + 1) {
    return std::unexpected(text::parse_error(path, "malformed line \"" + std::string(line) + "\""));
  }
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < kKeys.size(); ++i) {
    const auto field = f[i + 1];
    double avg = 0;
    const bool ok = field.starts_with(kKeys[i]) &&
                    (i + 1 < kKeys.size() ? text::parse_double(field.substr(kKeys[i].size()), avg)
                                          : text::parse_int(field.substr(kKeys[i].size()), total));
    if (!ok) {
      return std::unexpected(text::parse_error(path, "bad field \"" + std::string(field) + "\""));
    }
  }
  return total;
}

class PressureCollector final : public Collector {
 public:
  std::string_view name() const override { return "pressure"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    struct Resource {
      const char* file;
      const char* some_name;
      const char* some_help;
      const char* full_name;  // nullptr: "full" is not exported (cpu)
      const char* full_help;
    };
    static constexpr std::array<Resource, 3> kResources{{
        {"cpu", "node_pressure_cpu_waiting_seconds_total",
         "Total time in seconds that processes have waited for CPU time", nullptr, nullptr},
        {"io", "node_pressure_io_waiting_seconds_total",
         "Total time in seconds that processes have waited due to IO congestion",
         "node_pressure_io_stalled_seconds_total",
         "Total time in seconds no process could make progress due to IO congestion"},
        {"memory", "node_pressure_memory_waiting_seconds_total",
         "Total time in seconds that processes have waited for memory",
         "node_pressure_memory_stalled_seconds_total",
         "Total time in seconds no process could make progress due to memory congestion"},
    }};
    std::vector<MetricFamily> fams;
    for (const auto& r : kResources) {
      const auto path = paths.proc / "pressure" / r.file;
      auto content = read_text_file(path);
      if (!content) {
        if (content.error().code == Errc::not_found) {
          return fail(Errc::not_found, "pressure information is unavailable (" + path.string() +
                                           " is missing: it needs Linux 4.20 with CONFIG_PSI)");
        }
        return std::unexpected(content.error());
      }
      std::optional<std::uint64_t> some;
      std::optional<std::uint64_t> full;
      for (const auto line : text::lines(*content)) {
        const auto f = text::fields(line);
        if (f.empty()) continue;
        // Unknown kinds of line are ignored, so later kernels' additions do no harm.
        auto* slot = f[0] == "some" ? &some : f[0] == "full" ? &full : nullptr;
        if (slot == nullptr) continue;
        auto total = psi_total(path, line);
        if (!total) return std::unexpected(total.error());
        *slot = *total;
      }
      if (!some || (r.full_name != nullptr && !full)) {
        return std::unexpected(text::parse_error(path, "a \"some\" or \"full\" line is missing"));
      }
      auto counter = [](const char* name, const char* help, std::uint64_t us) {
        MetricFamily f{.name = name, .help = help, .type = MetricType::counter, .unit = "seconds"};
        f.add(static_cast<double>(us) / 1000.0 / 1000.0);
        return f;
      };
      fams.push_back(counter(r.some_name, r.some_help, *some));
      if (r.full_name != nullptr) fams.push_back(counter(r.full_name, r.full_help, *full));
    }
    for (auto& f : fams)
      out.push_back(std::move(f));
    return {};
  }
};

// --- os ---------------------------------------------------------------------------------

// Parses os-release(5): KEY=value lines, values optionally in shell quotes ("..." with
// backslash escapes, '...' verbatim), '#' comments.
Expected<std::map<std::string, std::string>> parse_os_release(const std::filesystem::path& path,
                                                              std::string_view content) {
  std::map<std::string, std::string> out;
  std::size_t line_no = 0;
  for (const auto raw : text::lines(content)) {
    ++line_no;
    const auto line = text::trim(raw);
    if (line.empty() || line.front() == '#') continue;
    const auto where = "line " + std::to_string(line_no);
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      return std::unexpected(text::parse_error(path, where + ": no '='"));
    }
    auto key = text::trim(line.substr(0, eq));
    if (key.starts_with("export ")) key = text::trim(key.substr(7));
    if (!text::name_safe(key) || (key.front() >= '0' && key.front() <= '9')) {
      return std::unexpected(text::parse_error(path, where + ": bad key"));
    }
    const auto raw_value = text::trim(line.substr(eq + 1));
    std::string value;
    std::size_t unquoted_end = 0;  // value's length after its last non-blank unquoted char
    char quote = 0;
    for (std::size_t i = 0; i < raw_value.size(); ++i) {
      const char c = raw_value[i];
      if (static_cast<unsigned char>(c) < 0x20 && c != '\t') {
        return std::unexpected(text::parse_error(path, where + ": control character"));
      }
      if (quote == 0) {
        if (c == '#') break;  // a comment after the value
        if (c == '"' || c == '\'') {
          quote = c;
          continue;
        }
        value += c;
        if (c != ' ' && c != '\t') unquoted_end = value.size();
        continue;
      }
      if (c == quote) {
        quote = 0;
        unquoted_end = value.size();
        continue;
      }
      if (quote == '"' && c == '\\' && i + 1 < raw_value.size()) {
        const char next = raw_value[++i];
        switch (next) {
          case 'n':
            value += '\n';
            break;
          case 't':
            value += '\t';
            break;
          default:
            value += next;  // \" \\ \$ \` and anything else stand for themselves
        }
      } else {
        value += c;
      }
      unquoted_end = value.size();
    }
    if (quote != 0) return std::unexpected(text::parse_error(path, where + ": unclosed quote"));
    value.resize(unquoted_end);
    out.insert_or_assign(std::string(key), std::move(value));
  }
  return out;
}

// node_exporter's "major.minor part" of VERSION_ID: the longest prefix of the form
// digits[.digits], as a number (0 when VERSION_ID does not start with a digit).
double os_version_number(std::string_view version_id) {
  std::size_t n = 0;
  while (n < version_id.size() && version_id[n] >= '0' && version_id[n] <= '9')
    ++n;
  if (n == 0) return 0;
  if (n < version_id.size() && version_id[n] == '.') {
    ++n;
    while (n < version_id.size() && version_id[n] >= '0' && version_id[n] <= '9')
      ++n;
  }
  auto prefix = version_id.substr(0, n);
  if (prefix.ends_with('.')) prefix.remove_suffix(1);
  double v = 0;
  return text::parse_double(prefix, v) ? v : 0;
}

class OsCollector final : public Collector {
 public:
  std::string_view name() const override { return "os"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    std::filesystem::path path;
    Expected<std::string> content = fail(Errc::not_found, "");
    for (const char* candidate : {"etc/os-release", "usr/lib/os-release"}) {
      path = paths.root / candidate;
      content = read_text_file(path);
      if (content || content.error().code != Errc::not_found) break;
    }
    if (!content) {
      if (content.error().code == Errc::not_found) {
        return fail(Errc::not_found, "no os-release file under " + paths.root.string() +
                                         " (etc/os-release, usr/lib/os-release)");
      }
      return std::unexpected(content.error());
    }
    auto env = parse_os_release(path, *content);
    if (!env) return std::unexpected(env.error());
    auto get = [&](const char* key) -> std::string_view {
      const auto it = env->find(key);
      return it == env->end() ? std::string_view{} : std::string_view(it->second);
    };
    MetricFamily info{.name = "node_os_info",
                      .help =
                          "A metric with a constant '1' value labeled by build_id, id, "
                          "id_like, image_id, image_version, name, pretty_name, variant, "
                          "variant_id, version, version_codename, version_id.",
                      .type = MetricType::gauge};
    info.add(1, {{"build_id", get("BUILD_ID")},
                 {"id", get("ID")},
                 {"id_like", get("ID_LIKE")},
                 {"image_id", get("IMAGE_ID")},
                 {"image_version", get("IMAGE_VERSION")},
                 {"name", get("NAME")},
                 {"pretty_name", get("PRETTY_NAME")},
                 {"variant", get("VARIANT")},
                 {"variant_id", get("VARIANT_ID")},
                 {"version", get("VERSION")},
                 {"version_codename", get("VERSION_CODENAME")},
                 {"version_id", get("VERSION_ID")}});
    out.push_back(std::move(info));
    if (const double version = os_version_number(get("VERSION_ID")); version > 0) {
      MetricFamily v{.name = "node_os_version",
                     .help = "Metric containing the major.minor part of the OS version.",
                     .type = MetricType::gauge};
      v.add(version, {{"id", get("ID")}, {"id_like", get("ID_LIKE")}, {"name", get("NAME")}});
      out.push_back(std::move(v));
    }
    return {};
  }
};

// --- timex ------------------------------------------------------------------------------

class TimexCollector final : public Collector {
 public:
  std::string_view name() const override { return "timex"; }

  Expected<void> collect(const Paths&, std::vector<MetricFamily>& out) override {
    struct ::timex tx {};  // modes 0: read only
    const int state = ::adjtimex(&tx);
    if (state == -1) {
      const int e = errno;
      return fail(e == EPERM ? Errc::permission_denied : Errc::internal,
                  std::string("Failed to call adjtimex: ") + std::strerror(e));
    }
    // offset and jitter are in ns with STA_NANO, else µs; freq, ppsfreq and stabil are
    // ppm with a 16-bit fraction (adjtimex(2) NOTES).
    const double divisor = (tx.status & STA_NANO) != 0 ? 1e9 : 1e6;
    constexpr double kPpm16 = 1000000.0 * 65536.0;
    auto g = [&](const char* name, const char* help, double value, const char* unit = "") {
      out.push_back(gauge(name, help, value, unit));
    };
    auto c = [&](const char* name, const char* help, double value) {
      MetricFamily f{.name = name, .help = help, .type = MetricType::counter};
      f.add(value);
      out.push_back(std::move(f));
    };
    g("node_timex_sync_status", "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
      state == TIME_ERROR ? 0 : 1);
    g("node_timex_offset_seconds", "Time offset in between local system and reference clock.",
      static_cast<double>(tx.offset) / divisor, "seconds");
    g("node_timex_frequency_adjustment_ratio", "Local clock frequency adjustment.",
      1 + static_cast<double>(tx.freq) / kPpm16, "ratio");
    g("node_timex_maxerror_seconds", "Maximum error in seconds.",
      static_cast<double>(tx.maxerror) / 1e6, "seconds");
    g("node_timex_estimated_error_seconds", "Estimated error in seconds.",
      static_cast<double>(tx.esterror) / 1e6, "seconds");
    g("node_timex_status", "Value of the status array bits.", static_cast<double>(tx.status));
    g("node_timex_loop_time_constant", "Phase-locked loop time constant.",
      static_cast<double>(tx.constant));
    g("node_timex_tick_seconds", "Seconds between clock ticks.", static_cast<double>(tx.tick) / 1e6,
      "seconds");
    g("node_timex_pps_frequency_hertz", "Pulse per second frequency.",
      static_cast<double>(tx.ppsfreq) / kPpm16, "hertz");
    g("node_timex_pps_jitter_seconds", "Pulse per second jitter.",
      static_cast<double>(tx.jitter) / divisor, "seconds");
    g("node_timex_pps_shift_seconds", "Pulse per second interval duration.",
      static_cast<double>(tx.shift), "seconds");
    g("node_timex_pps_stability_hertz",
      "Pulse per second stability, average of recent frequency changes.",
      static_cast<double>(tx.stabil) / kPpm16, "hertz");
    c("node_timex_pps_jitter_total", "Pulse per second count of jitter limit exceeded events.",
      static_cast<double>(tx.jitcnt));
    c("node_timex_pps_calibration_total", "Pulse per second count of calibration intervals.",
      static_cast<double>(tx.calcnt));
    c("node_timex_pps_error_total", "Pulse per second count of calibration errors.",
      static_cast<double>(tx.errcnt));
    c("node_timex_pps_stability_exceeded_total",
      "Pulse per second count of stability limit exceeded events.", static_cast<double>(tx.stbcnt));
    g("node_timex_tai_offset_seconds", "International Atomic Time (TAI) offset.",
      static_cast<double>(tx.tai), "seconds");
    return {};
  }
};

// --- entropy ----------------------------------------------------------------------------

class EntropyCollector final : public Collector {
 public:
  std::string_view name() const override { return "entropy"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto dir = paths.proc / "sys/kernel/random";
    std::array<double, 2> values{};
    static constexpr std::array<const char*, 2> kFiles{"entropy_avail", "poolsize"};
    for (std::size_t i = 0; i < kFiles.size(); ++i) {
      const auto path = dir / kFiles[i];
      auto content = read_text_file(path);
      if (!content) return std::unexpected(content.error());
      std::uint64_t v = 0;
      if (!text::parse_int(text::trim(*content), v)) {
        return std::unexpected(text::parse_error(path, "not an unsigned integer"));
      }
      values[i] = static_cast<double>(v);
    }
    out.push_back(
        gauge("node_entropy_available_bits", "Bits of available entropy.", values[0], "bits"));
    out.push_back(gauge("node_entropy_pool_size_bits", "Bits of entropy pool.", values[1], "bits"));
    return {};
  }
};

}  // namespace

std::unique_ptr<Collector> make_sockstat_collector(const CollectorOptions&) {
  return std::make_unique<SockstatCollector>();
}
std::unique_ptr<Collector> make_pressure_collector(const CollectorOptions&) {
  return std::make_unique<PressureCollector>();
}
std::unique_ptr<Collector> make_os_collector(const CollectorOptions&) {
  return std::make_unique<OsCollector>();
}
std::unique_ptr<Collector> make_timex_collector(const CollectorOptions&) {
  return std::make_unique<TimexCollector>();
}
std::unique_ptr<Collector> make_entropy_collector(const CollectorOptions&) {
  return std::make_unique<EntropyCollector>();
}

}  // namespace neco::exporter
