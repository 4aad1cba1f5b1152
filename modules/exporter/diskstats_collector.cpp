// node_disk_*: the per-device I/O counters of /proc/diskstats, plus node_exporter 1.5's
// node_disk_info and the filesystem, device-mapper and ATA facts udev recorded for the device
// in its database (/run/udev/data/b<major>:<minor>).
#include <array>
#include <map>
#include <optional>
#include <regex>
#include <string>

#include "modules/exporter/collector.hpp"
#include "modules/exporter/text_parse.hpp"

namespace neco::exporter {
namespace {

using metrics::MetricFamily;
using metrics::MetricType;

// The kernel counts sectors of 512 bytes whatever the device's block size
// (Documentation/admin-guide/iostats.rst), and times in milliseconds.
constexpr double kSectorBytes = 512.0;
constexpr double kSecondsPerTick = 0.001;

// Fields of a line before the statistics: major, minor, device name.
constexpr std::size_t kHeadFields = 3;
// Linux 4.18 added 4 discard fields and 5.5 two flush fields to the original 11.
constexpr std::size_t kMinStats = 11;

struct StatColumn {
  const char* name;
  const char* help;
  MetricType type;
  const char* unit;
  double scale;
};

// The statistics columns in file order; a kernel without the later ones has fewer.
constexpr std::array<StatColumn, 17> kColumns{{
    {"node_disk_reads_completed_total", "The total number of reads completed successfully.",
     MetricType::counter, "", 1},
    {"node_disk_reads_merged_total", "The total number of reads merged.", MetricType::counter, "",
     1},
    {"node_disk_read_bytes_total", "The total number of bytes read successfully.",
     MetricType::counter, "bytes", kSectorBytes},
    {"node_disk_read_time_seconds_total", "The total number of seconds spent by all reads.",
     MetricType::counter, "seconds", kSecondsPerTick},
    {"node_disk_writes_completed_total", "The total number of writes completed successfully.",
     MetricType::counter, "", 1},
    {"node_disk_writes_merged_total", "The number of writes merged.", MetricType::counter, "", 1},
    {"node_disk_written_bytes_total", "The total number of bytes written successfully.",
     MetricType::counter, "bytes", kSectorBytes},
    {"node_disk_write_time_seconds_total",
     "This is the total number of seconds spent by all writes.", MetricType::counter, "seconds",
     kSecondsPerTick},
    {"node_disk_io_now", "The number of I/Os currently in progress.", MetricType::gauge, "", 1},
    {"node_disk_io_time_seconds_total", "Total seconds spent doing I/Os.", MetricType::counter,
     "seconds", kSecondsPerTick},
    {"node_disk_io_time_weighted_seconds_total", "The weighted # of seconds spent doing I/Os.",
     MetricType::counter, "seconds", kSecondsPerTick},
    {"node_disk_discards_completed_total", "The total number of discards completed successfully.",
     MetricType::counter, "", 1},
    {"node_disk_discards_merged_total", "The total number of discards merged.", MetricType::counter,
     "", 1},
    // Sectors, not bytes: node_exporter exports this count unconverted.
    {"node_disk_discarded_sectors_total", "The total number of sectors discarded successfully.",
     MetricType::counter, "", 1},
    {"node_disk_discard_time_seconds_total",
     "This is the total number of seconds spent by all discards.", MetricType::counter, "seconds",
     kSecondsPerTick},
    {"node_disk_flush_requests_total", "The total number of flush requests completed successfully",
     MetricType::counter, "", 1},
    {"node_disk_flush_requests_time_seconds_total",
     "This is the total number of seconds spent by all flush requests.", MetricType::counter,
     "seconds", kSecondsPerTick},
}};

// udev properties (the "E:KEY=value" lines of a device's database file).
using UdevProperties = std::map<std::string, std::string, std::less<>>;

std::string_view property(const UdevProperties& p, std::string_view key) {
  const auto it = p.find(key);
  return it == p.end() ? std::string_view{} : std::string_view(it->second);
}

// A device without a database file (no udev, or not a device udev knows) has no properties.
UdevProperties read_udev_properties(const std::filesystem::path& dir, std::uint32_t major,
                                    std::uint32_t minor) {
  UdevProperties out;
  if (dir.empty()) return out;
  auto text = read_text_file(dir / ("b" + std::to_string(major) + ":" + std::to_string(minor)));
  if (!text) return out;
  for (const auto line : text::lines(*text)) {
    if (!line.starts_with("E:")) continue;
    const auto kv = line.substr(2);
    const auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    out.insert_or_assign(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return out;
}

class DiskstatsCollector final : public Collector {
 public:
  explicit DiskstatsCollector(const CollectorOptions& options)
      : udev_dir_(options.udev_data_directory) {
    if (options.diskstats_device_exclude.empty()) return;
    try {
      exclude_.emplace(options.diskstats_device_exclude);
    } catch (const std::regex_error& e) {
      setup_error_ = "invalid diskstats device_exclude regex: " + std::string(e.what());
    }
  }

  std::string_view name() const override { return "diskstats"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    if (!setup_error_.empty()) return fail(Errc::invalid_argument, setup_error_);
    const auto path = paths.proc / "diskstats";
    auto text = read_text_file(path);
    if (!text) return std::unexpected(text.error());

    std::vector<MetricFamily> stats;  // kColumns' families, then the others
    stats.reserve(kColumns.size());
    for (const auto& c : kColumns) {
      stats.push_back(MetricFamily{.name = c.name, .help = c.help, .type = c.type, .unit = c.unit});
    }
    MetricFamily info{.name = "node_disk_info",
                      .help = "Info of /sys/block/<block_device>.",
                      .type = MetricType::gauge};
    MetricFamily fs_info{.name = "node_disk_filesystem_info",
                         .help = "Info about disk filesystem.",
                         .type = MetricType::gauge};
    MetricFamily dm_info{.name = "node_disk_device_mapper_info",
                         .help = "Info about disk device mapper.",
                         .type = MetricType::gauge};
    struct Ata {
      std::string_view property;
      MetricFamily family;
    };
    std::array<Ata, 3> ata{{
        {"ID_ATA_WRITE_CACHE",
         {.name = "node_disk_ata_write_cache",
          .help = "ATA disk has a write cache.",
          .type = MetricType::gauge}},
        {"ID_ATA_WRITE_CACHE_ENABLED",
         {.name = "node_disk_ata_write_cache_enabled",
          .help = "ATA disk has its write cache enabled.",
          .type = MetricType::gauge}},
        {"ID_ATA_ROTATION_RATE_RPM",
         {.name = "node_disk_ata_rotation_rate_rpm",
          .help = "ATA disk rotation rate in RPMs (0 for SSDs).",
          .type = MetricType::gauge}},
    }};

    std::size_t line_no = 0;
    for (const auto line : text::lines(*text)) {
      ++line_no;
      const auto f = text::fields(line);
      // Lines this short (partitions on 2.6 kernels have 4 statistics) carry too little to
      // export; node_exporter skips them too.
      if (f.size() < kHeadFields + kMinStats) continue;
      const auto where = "line " + std::to_string(line_no);
      std::uint32_t major = 0;
      std::uint32_t minor = 0;
      if (!text::parse_int(f[0], major) || !text::parse_int(f[1], minor)) {
        return std::unexpected(text::parse_error(path, where + ": bad device number"));
      }
      const std::string device(f[2]);
      const std::size_t count = std::min(f.size() - kHeadFields, kColumns.size());
      std::array<std::uint64_t, kColumns.size()> v{};
      for (std::size_t i = 0; i < count; ++i) {
        if (!text::parse_int(f[kHeadFields + i], v[i])) {
          return std::unexpected(text::parse_error(
              path, where + ": bad value \"" + std::string(f[kHeadFields + i]) + "\""));
        }
      }
      if (exclude_ && std::regex_search(device, *exclude_)) continue;

      const auto udev = read_udev_properties(udev_dir_, major, minor);
      const std::string major_s = std::to_string(major);
      const std::string minor_s = std::to_string(minor);
      info.add(1, {{"device", device},
                   {"major", major_s},
                   {"minor", minor_s},
                   {"model", property(udev, "ID_MODEL")},
                   {"path", property(udev, "ID_PATH")},
                   {"revision", property(udev, "ID_REVISION")},
                   {"serial", property(udev, "ID_SERIAL_SHORT")},
                   {"wwn", property(udev, "ID_WWN")}});
      for (std::size_t i = 0; i < count; ++i) {
        stats[i].add(static_cast<double>(v[i]) * kColumns[i].scale, {{"device", device}});
      }
      if (const auto type = property(udev, "ID_FS_TYPE"); !type.empty()) {
        fs_info.add(1, {{"device", device},
                        {"type", type},
                        {"usage", property(udev, "ID_FS_USAGE")},
                        {"uuid", property(udev, "ID_FS_UUID")},
                        {"version", property(udev, "ID_FS_VERSION")}});
      }
      if (const auto dm_name = property(udev, "DM_NAME"); !dm_name.empty()) {
        dm_info.add(1, {{"device", device},
                        {"lv_layer", property(udev, "DM_LV_LAYER")},
                        {"lv_name", property(udev, "DM_LV_NAME")},
                        {"name", dm_name},
                        {"uuid", property(udev, "DM_UUID")},
                        {"vg_name", property(udev, "DM_VG_NAME")}});
      }
      if (!property(udev, "ID_ATA").empty()) {
        for (auto& a : ata) {
          const auto it = udev.find(a.property);
          double value = 0;
          // An unparsable value is skipped, as node_exporter does (it logs it).
          if (it != udev.end() && text::parse_double(it->second, value)) {
            a.family.add(value, {{"device", device}});
          }
        }
      }
    }

    // Families without samples (no device, or no kernel column) are left out, as in
    // node_exporter.
    stats.push_back(std::move(info));
    stats.push_back(std::move(fs_info));
    stats.push_back(std::move(dm_info));
    for (auto& a : ata)
      stats.push_back(std::move(a.family));
    for (auto& f : stats) {
      if (!f.samples.empty()) out.push_back(std::move(f));
    }
    return {};
  }

 private:
  std::filesystem::path udev_dir_;
  std::optional<std::regex> exclude_;
  std::string setup_error_;  // the options were unusable; every collect() reports it
};

}  // namespace

std::unique_ptr<Collector> make_diskstats_collector(const CollectorOptions& options) {
  return std::make_unique<DiskstatsCollector>(options);
}

}  // namespace neco::exporter
