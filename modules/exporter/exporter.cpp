#include "modules/exporter/exporter.hpp"

#include <algorithm>
#include <regex>

#include "agent/module/context.hpp"
#include "agent/module/registry.hpp"
#include "modules/exporter/scrape_runner.hpp"

namespace neco::exporter {
namespace {

std::string known_collectors() {
  std::string out;
  for (const auto& c : collector_table())
    out += (out.empty() ? "" : ", ") + std::string(c.name);
  return out;
}

std::string check_collector_names(const std::vector<std::string>& names) {
  for (const auto& n : names) {
    if (find_collector(n) == nullptr) {
      return "unknown collector \"" + n + "\" (known: " + known_collectors() + ")";
    }
  }
  return "";
}

std::string check_regex(const std::string& pattern) {
  try {
    std::regex r(pattern);
  } catch (const std::regex_error& e) {
    return std::string("invalid regular expression: ") + e.what();
  }
  return "";
}

}  // namespace

ExporterConfig::ExporterConfig() {
  for (const auto& c : collector_table())
    collectors.emplace_back(c.name);
}

const config::Schema<ExporterConfig>& exporter_schema() {
  static const auto schema = [] {
    config::Schema<FilesystemConfig> fs;
    fs.field("mount_points_exclude", &FilesystemConfig::mount_points_exclude,
             "regex of mount points not reported", {.check = check_regex});
    fs.field("fs_types_exclude", &FilesystemConfig::fs_types_exclude,
             "regex of filesystem types not reported", {.check = check_regex});
    fs.field("mount_timeout", &FilesystemConfig::mount_timeout,
             "how long one statfs may take before its mount counts as stuck",
             {.min = std::chrono::milliseconds(1)});
    config::Schema<DiskstatsConfig> disk;
    disk.field("device_exclude", &DiskstatsConfig::device_exclude,
               "regex of block devices not reported (empty: none excluded)",
               {.check = check_regex});
    disk.field("udev_data_path", &DiskstatsConfig::udev_data_path,
               "udev database read for node_disk_info's labels (empty: not read)");
    config::Schema<NetclassConfig> net;
    net.field("ignored_devices", &NetclassConfig::ignored_devices,
              "regex of network devices not reported", {.check = check_regex});
    net.field("ignore_invalid_speed", &NetclassConfig::ignore_invalid_speed,
              "leave out the speed of devices that report -1 (unknown)");
    config::Schema<ExporterConfig> s;
    s.field("collectors", &ExporterConfig::collectors, "enabled collectors (default: all)",
            {.check = check_collector_names});
    s.field("exclude_collectors", &ExporterConfig::exclude_collectors,
            "collectors removed from `collectors`", {.check = check_collector_names});
    s.field("procfs", &ExporterConfig::procfs, "procfs mount point");
    s.field("sysfs", &ExporterConfig::sysfs, "sysfs mount point");
    s.field("rootfs", &ExporterConfig::rootfs, "root of the host filesystem");
    s.field("textfile_directory", &ExporterConfig::textfile_directory,
            "directory of *.prom files to export (empty: off)");
    s.field("collector_timeout", &ExporterConfig::collector_timeout,
            "per-collector deadline within one scrape", {.min = std::chrono::milliseconds(1)});
    s.section("filesystem", &ExporterConfig::filesystem, fs, "filesystem collector settings");
    s.section("diskstats", &ExporterConfig::diskstats, disk, "diskstats collector settings");
    s.section("netclass", &ExporterConfig::netclass, net, "netclass collector settings");
    return s;
  }();
  return schema;
}

std::vector<std::string> enabled_collectors(const ExporterConfig& config) {
  std::vector<std::string> out;
  for (const auto& c : config.collectors) {
    if (std::find(config.exclude_collectors.begin(), config.exclude_collectors.end(), c) ==
            config.exclude_collectors.end() &&
        std::find(out.begin(), out.end(), c) == out.end()) {
      out.push_back(c);
    }
  }
  return out;
}

Expected<std::vector<std::string>> select_collectors(const std::vector<std::string>& enabled,
                                                     const metrics::ScrapeRequest& request) {
  const auto collect = request.values("collect[]");
  const auto exclude = request.values("exclude[]");
  if (collect.empty() && exclude.empty()) return std::vector<std::string>{};
  if (!collect.empty() && !exclude.empty()) {
    return fail(Errc::invalid_argument, "collect[] and exclude[] cannot be combined");
  }
  for (const auto* names : {&collect, &exclude}) {
    for (const auto name : *names) {
      if (find_collector(name) == nullptr) {
        return fail(Errc::invalid_argument, "missing collector: \"" + std::string(name) +
                                                "\" (known: " + known_collectors() + ")");
      }
      if (std::find(enabled.begin(), enabled.end(), name) == enabled.end()) {
        return fail(Errc::invalid_argument, "disabled collector: \"" + std::string(name) +
                                                "\" (not in this agent's exporter collectors)");
      }
    }
  }
  std::vector<std::string> out;
  for (const auto& name : enabled) {
    const bool listed = std::find(collect.begin(), collect.end(), name) != collect.end() ||
                        std::find(exclude.begin(), exclude.end(), name) != exclude.end();
    if (listed == !collect.empty()) out.push_back(name);
  }
  // Everything excluded: the scrape carries the agent's own metrics and no node_ ones; an
  // empty list would mean "all", so name a collector that is not there.
  if (out.empty()) out.emplace_back("");
  return out;
}

std::unique_ptr<ScrapeRunner> make_runner(const ExporterConfig& config) {
  CollectorOptions options;
  options.mount_points_exclude = config.filesystem.mount_points_exclude;
  options.fs_types_exclude = config.filesystem.fs_types_exclude;
  options.mount_timeout = config.filesystem.mount_timeout;
  options.textfile_directory = config.textfile_directory;
  options.diskstats_device_exclude = config.diskstats.device_exclude;
  options.udev_data_directory = config.diskstats.udev_data_path;
  options.netclass_ignored_devices = config.netclass.ignored_devices;
  options.netclass_ignore_invalid_speed = config.netclass.ignore_invalid_speed;
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const auto& name : enabled_collectors(config)) {
    const auto* info = find_collector(name);
    if (info != nullptr) collectors.push_back(info->make(options));
  }
  return std::make_unique<ScrapeRunner>(std::move(collectors),
                                        Paths{config.procfs, config.sysfs, config.rootfs},
                                        config.collector_timeout);
}

ExporterModule::ExporterModule() = default;
ExporterModule::~ExporterModule() {
  stop();
}

Expected<void> ExporterModule::configure(const config::Section& section) {
  ExporterConfig c;
  if (auto ok = section.read(exporter_schema(), c); !ok) return ok;
  // A statfs deadline at or past the collector's would fail the whole filesystem collector
  // for one stuck mount instead of reporting that mount alone.
  if (c.filesystem.mount_timeout >= c.collector_timeout) {
    return fail(Errc::invalid_argument, section.path() + ".filesystem.mount_timeout: " +
                                            config::format_duration(c.filesystem.mount_timeout) +
                                            " must be shorter than collector_timeout (" +
                                            config::format_duration(c.collector_timeout) + ")");
  }
  pending_ = std::move(c);
  return {};
}

Expected<void> ExporterModule::start(ModuleContext& context) {
  live_ = pending_;
  runner_ = make_runner(live_);
  enabled_ = enabled_collectors(live_);
  handle_ = context.metrics().add_collector(
      metrics::RequestCollector([this](const metrics::ScrapeRequest& request,
                                       std::vector<metrics::MetricFamily>& out) -> Expected<void> {
        auto selected = select_collectors(enabled_, request);
        if (!selected) return std::unexpected(selected.error());
        runner_->scrape(out, *selected);
        return {};
      }));
  running_ = true;
  return {};
}

void ExporterModule::stop() {
  handle_.reset();  // waits for a scrape in progress
  runner_.reset();
  running_ = false;
}

Health ExporterModule::health() const {
  return {running_ ? HealthState::healthy : HealthState::stopped, ""};
}

nlohmann::json ExporterModule::effective_config() const {
  return exporter_schema().dump(live_);
}

}  // namespace neco::exporter

NECO_REGISTER_MODULE(exporter, neco::exporter::ExporterModule);
