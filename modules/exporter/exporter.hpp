// The exporter module: node_exporter-compatible node metrics (meminfo, cpu, filesystem, ...)
// produced at scrape time into the agent's one registry, so they appear on its /metrics.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/config/schema.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/module/module.hpp"
#include "modules/exporter/collector.hpp"

namespace neco::exporter {

class ScrapeRunner;

struct FilesystemConfig {
  std::string mount_points_exclude =
      "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
  std::string fs_types_exclude =
      "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|"
      "iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|"
      "sysfs|tracefs)$";
  config::Duration mount_timeout = std::chrono::seconds(1);
};

struct DiskstatsConfig {
  std::string device_exclude = "^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\\d+n\\d+p)\\d+$";
  std::string udev_data_path = "/run/udev/data";
};

struct NetclassConfig {
  std::string ignored_devices = "^$";  // node_exporter 1.5's default: nothing ignored
  bool ignore_invalid_speed = false;
};

struct ExporterConfig {
  std::vector<std::string> collectors;  // enabled; defaults to every implemented collector
  std::vector<std::string> exclude_collectors;
  std::string procfs = "/proc";
  std::string sysfs = "/sys";
  std::string rootfs = "/";
  std::string textfile_directory;  // empty: the textfile collector reads nothing
  config::Duration collector_timeout = std::chrono::seconds(2);
  FilesystemConfig filesystem;
  DiskstatsConfig diskstats;
  NetclassConfig netclass;

  ExporterConfig();
};

// The section's schema (also used by tests and docs).
const config::Schema<ExporterConfig>& exporter_schema();

// The enabled collector names of a config: `collectors` minus `exclude_collectors`.
std::vector<std::string> enabled_collectors(const ExporterConfig& config);

// The collectors one scrape runs, from node_exporter's query parameters: `collect[]` keeps
// only the named ones, `exclude[]` drops the named ones (empty result: all of `enabled`).
// An unknown or disabled name, an empty name, or both parameters at once are
// invalid_argument (the scrape answers 400, as node_exporter does).
Expected<std::vector<std::string>> select_collectors(const std::vector<std::string>& enabled,
                                                     const metrics::ScrapeRequest& request);

// Builds the scrape runner a config describes (the module's start(), and tests).
std::unique_ptr<ScrapeRunner> make_runner(const ExporterConfig& config);

class ExporterModule final : public Module {
 public:
  ExporterModule();
  ~ExporterModule() override;

  std::string_view name() const override { return "exporter"; }
  Expected<void> configure(const config::Section& section) override;
  Expected<void> start(ModuleContext& context) override;
  void stop() override;
  Health health() const override;
  nlohmann::json effective_config() const override;

 private:
  ExporterConfig pending_;
  ExporterConfig live_;
  bool running_ = false;
  std::unique_ptr<ScrapeRunner> runner_;
  std::vector<std::string> enabled_;  // of live_
  metrics::CollectorHandle handle_;   // after runner_: unregistered before the runner dies
};

}  // namespace neco::exporter
