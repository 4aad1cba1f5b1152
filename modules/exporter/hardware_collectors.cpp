// The sysfs hardware collectors: hwmon (lm-sensors style chips), thermal_zone (zones and
// cooling devices), nvme (controller info) and edac (memory controller error counts). Names,
// labels, unit conversions and which errors skip or fail follow node_exporter 1.5.
#include <algorithm>
#include <array>
#include <cerrno>
#include <map>
#include <set>

#include <fmt/format.h>

#include "modules/exporter/collector.hpp"
#include "modules/exporter/sysfs_read.hpp"

namespace neco::exporter {
namespace {

using metrics::MetricFamily;
using metrics::MetricType;
namespace fs = std::filesystem;

// ---- hwmon ----

// node_exporter's cleanMetricName: lower case, [^a-z0-9:_] to "_", "_" trimmed at both ends.
std::string clean_name(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char raw : s) {
    const char c = raw >= 'A' && raw <= 'Z' ? static_cast<char>(raw | 0x20) : raw;
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ':' || c == '_';
    // A multi-byte UTF-8 character is one "_" in Go (it replaces runes, not bytes).
    if (!ok && (static_cast<unsigned char>(c) & 0xC0) == 0x80) continue;
    out += ok ? c : '_';
  }
  const auto b = out.find_first_not_of('_');
  if (b == std::string::npos) return "";
  return out.substr(b, out.find_last_not_of('_') - b + 1);
}

struct SensorFile {
  std::string type;
  std::int64_t num = 0;
  std::string property;
};

// Splits "temp1_crit_alarm" into temp, 1, crit_alarm as node_exporter's
// ^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$ does, backtracking included.
std::optional<SensorFile> explode_sensor_filename(std::string_view name) {
  if (name.find('\n') != std::string_view::npos) return std::nullopt;  // "." stops at \n
  const std::size_t run = std::min(name.find_first_of("0123456789"), name.size());
  if (run == 0) return std::nullopt;
  // Greedy: the whole non-digit run as type, then every digit as id.
  const std::size_t digits_end = std::min(name.find_first_not_of("0123456789", run), name.size());
  const std::string_view rest = name.substr(digits_end);
  std::size_t type_len = 0;
  std::string_view id;
  std::string_view property;
  if (rest.empty() || (rest.size() >= 2 && rest[0] == '_')) {
    type_len = run;
    id = name.substr(run, digits_end - run);
    property = rest.empty() ? rest : rest.substr(1);
  } else {
    // Backtracking: a shorter type ending right before a "_" inside the run, no id.
    const auto us = name.substr(0, run).find_last_of('_');
    std::size_t k = us;
    while (k != std::string_view::npos && (k == 0 || k + 1 >= name.size())) {
      k = k == 0 ? std::string_view::npos : name.substr(0, k).find_last_of('_');
    }
    if (k == std::string_view::npos) return std::nullopt;
    type_len = k;
    property = name.substr(k + 1);
  }
  SensorFile out{std::string(name.substr(0, type_len)), 0, std::string(property)};
  if (!id.empty()) {
    auto n = sysfs::parse_int(id);  // Go's Atoi; fails past int64
    if (!n) return std::nullopt;
    out.num = *n;
  }
  return out;
}

constexpr std::array<std::string_view, 13> kHwmonSensorTypes{
    "vrm",  "beep_enable", "update_interval", "in",     "cpu",      "fan",      "pwm",
    "temp", "curr",        "power",           "energy", "humidity", "intrusion"};

using SensorData = std::map<std::string, std::map<std::string, std::string>>;

Expected<void> collect_sensor_data(const fs::path& dir, SensorData& data) {
  auto entries = sysfs::read_dir(dir);
  if (!entries) return fail(Errc::internal, entries.error().message(dir));
  for (const auto& e : *entries) {
    auto f = explode_sensor_filename(e.name);
    if (!f) continue;
    if (std::find(kHwmonSensorTypes.begin(), kHwmonSensorTypes.end(), f->type) ==
        kHwmonSensorTypes.end()) {
      continue;
    }
    auto raw = sysfs::read_attr(dir / e.name);
    if (!raw) continue;  // node_exporter skips every unreadable value (EAGAIN, EIO, a dir)
    std::string_view v = *raw;
    while (!v.empty() && v.front() == '\n')
      v.remove_prefix(1);
    while (!v.empty() && v.back() == '\n')
      v.remove_suffix(1);
    data[f->type + std::to_string(f->num)][f->property] = std::string(v);
  }
  return {};
}

// The chip label: from the device's bus path when there is one ("platform_coretemp_0"), else
// from the name file, else the hwmonN directory name.
Expected<std::string> hwmon_chip(const fs::path& dir) {
  std::error_code ec;
  const auto device = fs::canonical(dir / "device", ec);
  if (!ec) {
    const std::string dev_name = clean_name(device.filename().string());
    const std::string dev_type = clean_name(device.parent_path().filename().string());
    if (!dev_type.empty() && !dev_name.empty()) return dev_type + "_" + dev_name;
    if (!dev_name.empty()) return dev_name;
  }
  if (auto name = sysfs::read_whole(dir / "name"); name && !name->empty()) {
    if (auto clean = clean_name(*name); !clean.empty()) return clean;
  }
  const auto real = fs::canonical(dir, ec);
  if (ec) return fail(Errc::internal, "Failed to resolve " + dir.string() + ": " + ec.message());
  if (auto clean = clean_name(real.filename().string()); !clean.empty()) return clean;
  return fail(Errc::internal, "Failed to derive a chip name for " + dir.string());
}

// Families of one scrape by name; a (family, chip, sensor) seen twice keeps its first value,
// as the exposition may not repeat a series.
class HwmonFamilies {
 public:
  void add(const std::string& name, std::string help, MetricType type, std::string_view unit,
           double value, std::initializer_list<metrics::LabelView> labels) {
    std::string key = name;
    for (const auto& [k, v] : labels)
      key.append("\xff").append(v);
    if (!seen_.insert(std::move(key)).second) return;
    auto [it, inserted] = families_.try_emplace(name);
    if (inserted) {
      it->second = MetricFamily{
          .name = name, .help = std::move(help), .type = type, .unit = std::string(unit)};
    }
    it->second.add(value, labels);
  }
  void move_to(std::vector<MetricFamily>& out) {
    for (auto& [_, f] : families_)
      out.push_back(std::move(f));
  }

 private:
  std::map<std::string, MetricFamily> families_;
  std::set<std::string> seen_;
};

void emit_sensor(HwmonFamilies& fams, const std::string& chip, const std::string& sensor,
                 const std::map<std::string, std::string>& props) {
  const auto split = explode_sensor_filename(sensor);
  const std::string type = split ? split->type : sensor;
  const std::initializer_list<metrics::LabelView> labels{{"chip", chip}, {"sensor", sensor}};
  if (auto it = props.find("label"); it != props.end()) {
    const std::string label = sysfs::to_valid_utf8(it->second);
    fams.add("node_hwmon_sensor_label", "Label for given chip and sensor", MetricType::gauge, "", 1,
             {{"chip", chip}, {"label", label}, {"sensor", sensor}});
  }
  const auto bare = props.find("");
  if (type == "beep_enable") {
    const double v = bare != props.end() && bare->second == "1" ? 1 : 0;
    fams.add("node_hwmon_beep_enabled", "Hardware beep enabled", MetricType::gauge, "", v, labels);
    return;
  }
  if (type == "vrm" || type == "update_interval") {
    const auto v = sysfs::parse_float(bare != props.end() ? bare->second : "");
    if (!v) return;
    if (type == "vrm") {
      fams.add("node_hwmon_voltage_regulator_version", "Hardware voltage regulator",
               MetricType::gauge, "", *v, labels);
    } else {
      fams.add("node_hwmon_update_interval_seconds", "Hardware monitor update interval",
               MetricType::gauge, "seconds", *v * 0.001, labels);
    }
    return;
  }
  const std::string prefix = "node_hwmon_" + type;
  for (const auto& [element_key, raw] : props) {
    std::string element = element_key;
    if (element == "label") continue;
    std::string name = prefix;
    if (element == "input") {
      if (bare != props.end()) name += "_input";  // both "temp1" and "temp1_input" exist
    } else if (!element.empty()) {
      name += "_" + clean_name(element);
    }
    const auto parsed = sysfs::parse_float(raw);
    if (!parsed) continue;
    const double v = *parsed;
    const auto gauge = MetricType::gauge;
    if (element == "fault" || element == "alarm") {
      fams.add(name, fmt::format("Hardware sensor {} status ({})", element, type), gauge, "", v,
               labels);
    } else if (element == "beep") {
      fams.add(name + "_enabled", "Hardware monitor sensor has beeping enabled", gauge, "", v,
               labels);
    } else if (type == "in" || type == "cpu") {
      fams.add(name + "_volts", "Hardware monitor for voltage (" + element + ")", gauge, "volts",
               v * 0.001, labels);
    } else if (type == "temp" && element != "type") {
      if (element.empty()) element = "input";
      fams.add(name + "_celsius", "Hardware monitor for temperature (" + element + ")", gauge,
               "celsius", v * 0.001, labels);
    } else if (type == "curr") {
      fams.add(name + "_amps", "Hardware monitor for current (" + element + ")", gauge, "amps",
               v * 0.001, labels);
    } else if (type == "energy") {
      fams.add(name + "_joule_total", "Hardware monitor for joules used so far (" + element + ")",
               MetricType::counter, "joule", v / 1000000.0, labels);
    } else if (type == "power" && element == "accuracy") {
      fams.add(name, "Hardware monitor power meter accuracy, as a ratio", gauge, "", v / 1000000.0,
               labels);
    } else if (type == "power" &&
               (element == "average_interval" || element == "average_interval_min" ||
                element == "average_interval_max")) {
      fams.add(name + "_seconds", "Hardware monitor power usage update interval (" + element + ")",
               gauge, "seconds", v * 0.001, labels);
    } else if (type == "power") {
      fams.add(name + "_watt", "Hardware monitor for power usage in watts (" + element + ")", gauge,
               "watt", v / 1000000.0, labels);
    } else if (type == "humidity") {
      fams.add(name,
               "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the "
               "humidity as a percentage) (" +
                   element + ")",
               gauge, "", v / 1000000.0, labels);
    } else if (type == "fan" && (element == "input" || element == "min" || element == "max" ||
                                 element == "target")) {
      fams.add(name + "_rpm", "Hardware monitor for fan revolutions per minute (" + element + ")",
               gauge, "rpm", v, labels);
    } else {
      fams.add(name, fmt::format("Hardware monitor {} element {}", type, element), gauge, "", v,
               labels);
    }
  }
}

class HwmonCollector final : public Collector {
 public:
  std::string_view name() const override { return "hwmon"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto root = paths.sys / "class/hwmon";
    auto entries = sysfs::read_dir(root);
    if (!entries) {
      const int err = entries.error().error;
      return fail(err == ENOENT ? Errc::unavailable : Errc::internal,
                  entries.error().message(root));
    }
    HwmonFamilies fams;
    for (const auto& e : *entries) {
      const auto dir = root / e.name;
      std::error_code ec;
      if (!fs::is_directory(dir, ec)) continue;  // follows the hwmonN -> device link
      auto chip = hwmon_chip(dir);
      if (!chip) return std::unexpected(chip.error());
      SensorData data;
      if (auto ok = collect_sensor_data(dir, data); !ok) return ok;
      if (fs::exists(dir / "device", ec)) {
        if (auto ok = collect_sensor_data(dir / "device", data); !ok) return ok;
      }
      if (auto name = sysfs::read_whole(dir / "name"); name && !name->empty()) {
        if (auto clean = clean_name(*name); !clean.empty()) {
          fams.add("node_hwmon_chip_names", "Annotation metric for human-readable chip names",
                   MetricType::gauge, "", 1, {{"chip", *chip}, {"chip_name", clean}});
        }
      }
      for (const auto& [sensor, props] : data)
        emit_sensor(fams, *chip, sensor, props);
    }
    fams.move_to(out);
    return {};
  }
};

// ---- thermal_zone ----

struct Zone {
  std::string name;
  std::string type;
  std::int64_t temp = 0;
};

// A zone's attributes, or nullopt for a zone whose sensor answers ENODATA (skipped).
Expected<std::optional<Zone>> read_zone(const fs::path& dir) {
  auto error = [&](const fs::path& p, const sysfs::ReadError& e) -> Expected<std::optional<Zone>> {
    if (e.error == ENODATA) return std::optional<Zone>();
    return fail(Errc::internal, e.message(p));
  };
  Zone z{.name = dir.filename().string().substr(std::string_view("thermal_zone").size())};
  auto type = sysfs::read_attr(dir / "type");
  if (!type) return error(dir / "type", type.error());
  z.type = std::string(sysfs::trim_space(*type));
  // policy and mode are read only because an error on them fails the collector.
  if (auto policy = sysfs::read_attr(dir / "policy"); !policy) {
    return error(dir / "policy", policy.error());
  }
  auto temp = sysfs::read_whole(dir / "temp");
  if (!temp) return error(dir / "temp", temp.error());
  const auto t = sysfs::parse_int(sysfs::trim_space(*temp));
  if (!t) return fail(Errc::internal, "Failed to parse " + (dir / "temp").string());
  z.temp = *t;
  auto optional_error = [](int e) { return e != ENOENT && e != EACCES && e != EPERM; };
  if (auto mode = sysfs::read_attr(dir / "mode"); !mode && optional_error(mode.error().error)) {
    return error(dir / "mode", mode.error());
  }
  if (auto passive = sysfs::read_whole(dir / "passive"); !passive) {
    if (optional_error(passive.error().error)) return error(dir / "passive", passive.error());
  } else if (!sysfs::parse_uint(sysfs::trim_space(*passive))) {
    return fail(Errc::internal, "Failed to parse " + (dir / "passive").string());
  }
  return std::optional<Zone>(std::move(z));
}

class ThermalZoneCollector final : public Collector {
 public:
  std::string_view name() const override { return "thermal_zone"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto root = paths.sys / "class/thermal";
    MetricFamily temp{.name = "node_thermal_zone_temp",
                      .help = "Zone temperature in Celsius",
                      .type = MetricType::gauge};
    for (const auto& dir : sysfs::glob_numbered(root, "thermal_zone")) {
      auto zone = read_zone(dir);
      if (!zone) return std::unexpected(zone.error());
      if (!*zone) continue;
      temp.add(static_cast<double>((*zone)->temp) / 1000.0,
               {{"type", (*zone)->type}, {"zone", (*zone)->name}});
    }
    MetricFamily cur{.name = "node_cooling_device_cur_state",
                     .help = "Current throttle state of the cooling device",
                     .type = MetricType::gauge};
    MetricFamily max{.name = "node_cooling_device_max_state",
                     .help = "Maximum throttle state of the cooling device",
                     .type = MetricType::gauge};
    for (const auto& dir : sysfs::glob_numbered(root, "cooling_device")) {
      const std::string name =
          dir.filename().string().substr(std::string_view("cooling_device").size());
      std::array<std::string, 3> v;
      static constexpr std::array<const char*, 3> kFiles{"type", "max_state", "cur_state"};
      for (std::size_t i = 0; i < v.size(); ++i) {
        auto raw = sysfs::read_attr(dir / kFiles[i]);
        if (!raw) return fail(Errc::internal, raw.error().message(dir / kFiles[i]));
        v[i] = std::string(sysfs::trim_space(*raw));
      }
      const auto max_state = sysfs::parse_int(v[1]);
      const auto cur_state = sysfs::parse_int(v[2]);  // -1 for intel_powerclamp
      if (!max_state || !cur_state) {
        return fail(Errc::internal, "Failed to parse the states of " + dir.string());
      }
      cur.add(static_cast<double>(*cur_state), {{"name", name}, {"type", v[0]}});
      max.add(static_cast<double>(*max_state), {{"name", name}, {"type", v[0]}});
    }
    for (auto* f : {&temp, &cur, &max}) {
      if (!f->samples.empty()) out.push_back(std::move(*f));
    }
    return {};
  }
};

// ---- nvme ----

class NvmeCollector final : public Collector {
 public:
  std::string_view name() const override { return "nvme"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    const auto root = paths.sys / "class/nvme";
    auto entries = sysfs::read_dir(root);
    if (!entries) {
      const int err = entries.error().error;
      return fail(err == ENOENT ? Errc::unavailable : Errc::internal,
                  entries.error().message(root));
    }
    MetricFamily info{.name = "node_nvme_info",
                      .help = "Non-numeric data from /sys/class/nvme/<device>, value is always 1.",
                      .type = MetricType::gauge};
    for (const auto& e : *entries) {
      static constexpr std::array<const char*, 4> kFiles{"firmware_rev", "model", "serial",
                                                         "state"};
      std::array<std::string, 4> v;
      for (std::size_t i = 0; i < v.size(); ++i) {
        const auto path = root / e.name / kFiles[i];
        auto raw = sysfs::read_attr(path);
        if (!raw) return fail(Errc::internal, raw.error().message(path));
        v[i] = std::string(sysfs::trim_space(*raw));
      }
      info.add(1, {{"device", e.name},
                   {"firmware_revision", v[0]},
                   {"model", v[1]},
                   {"serial", v[2]},
                   {"state", v[3]}});
    }
    if (!info.samples.empty()) out.push_back(std::move(info));
    return {};
  }
};

// ---- edac ----

Expected<double> read_count(const fs::path& path) {
  auto raw = sysfs::read_whole(path);
  if (!raw) return fail(Errc::internal, raw.error().message(path));
  const auto v = sysfs::parse_uint(sysfs::trim_space(*raw));
  if (!v) return fail(Errc::internal, "Failed to parse " + path.string());
  return static_cast<double>(*v);
}

// The digits after `prefix` in a globbed name ("mc12" -> "12").
std::string number_after(const fs::path& p, std::string_view prefix) {
  const std::string name = p.filename().string().substr(prefix.size());
  return name.substr(0, std::min(name.find_first_not_of("0123456789"), name.size()));
}

class EdacCollector final : public Collector {
 public:
  std::string_view name() const override { return "edac"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    MetricFamily ce{.name = "node_edac_correctable_errors_total",
                    .help = "Total correctable memory errors.",
                    .type = MetricType::counter};
    MetricFamily ue{.name = "node_edac_uncorrectable_errors_total",
                    .help = "Total uncorrectable memory errors.",
                    .type = MetricType::counter};
    MetricFamily row_ce{.name = "node_edac_csrow_correctable_errors_total",
                        .help = "Total correctable memory errors for this csrow.",
                        .type = MetricType::counter};
    MetricFamily row_ue{.name = "node_edac_csrow_uncorrectable_errors_total",
                        .help = "Total uncorrectable memory errors for this csrow.",
                        .type = MetricType::counter};
    for (const auto& mc : sysfs::glob_numbered(paths.sys / "devices/system/edac/mc", "mc")) {
      const std::string controller = number_after(mc, "mc");
      struct Read {
        const char* file;
        MetricFamily* family;
        bool csrow_unknown;
      };
      for (const Read& r : {Read{"ce_count", &ce, false}, Read{"ce_noinfo_count", &row_ce, true},
                            Read{"ue_count", &ue, false}, Read{"ue_noinfo_count", &row_ue, true}}) {
        auto v = read_count(mc / r.file);
        if (!v) return std::unexpected(v.error());
        if (r.csrow_unknown) {
          r.family->add(*v, {{"controller", controller}, {"csrow", "unknown"}});
        } else {
          r.family->add(*v, {{"controller", controller}});
        }
      }
      for (const auto& row : sysfs::glob_numbered(mc, "csrow")) {
        const std::string csrow = number_after(row, "csrow");
        auto c = read_count(row / "ce_count");
        if (!c) return std::unexpected(c.error());
        auto u = read_count(row / "ue_count");
        if (!u) return std::unexpected(u.error());
        row_ce.add(*c, {{"controller", controller}, {"csrow", csrow}});
        row_ue.add(*u, {{"controller", controller}, {"csrow", csrow}});
      }
    }
    for (auto* f : {&ce, &row_ce, &ue, &row_ue}) {
      if (!f->samples.empty()) out.push_back(std::move(*f));
    }
    return {};
  }
};

}  // namespace

std::unique_ptr<Collector> make_hwmon_collector(const CollectorOptions&) {
  return std::make_unique<HwmonCollector>();
}
std::unique_ptr<Collector> make_thermal_zone_collector(const CollectorOptions&) {
  return std::make_unique<ThermalZoneCollector>();
}
std::unique_ptr<Collector> make_nvme_collector(const CollectorOptions&) {
  return std::make_unique<NvmeCollector>();
}
std::unique_ptr<Collector> make_edac_collector(const CollectorOptions&) {
  return std::make_unique<EdacCollector>();
}

}  // namespace neco::exporter
