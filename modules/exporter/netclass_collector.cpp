// node_network_* from /sys/class/net/<iface>/, as node_exporter 1.5's netclass collector (sysfs
// mode): one info series of the string attributes, one gauge or counter per numeric one. An
// attribute the kernel refuses to give (EINVAL for the speed of a down link, EOPNOTSUPP, a
// missing or unreadable file) is left out; any other read error fails the collector.
#include <linux/if.h>

#include <array>
#include <cerrno>
#include <map>
#include <optional>
#include <regex>

#include "agent/log/log.hpp"
#include "modules/exporter/collector.hpp"
#include "modules/exporter/rtnetlink.hpp"
#include "modules/exporter/sysfs_read.hpp"

namespace neco::exporter {
namespace {

using metrics::MetricFamily;
using metrics::MetricType;
using rtnetlink::LinkDumper;
using rtnetlink::LinkInfo;

const log::Logger& logger() {
  static const log::Logger l("exporter");
  return l;
}

// The numeric attributes node_exporter exports, in its order: file, metric suffix, type.
struct NumericAttr {
  std::string_view file;
  std::string_view metric;
  MetricType type;
};
constexpr std::array<NumericAttr, 15> kNumeric{{
    {"addr_assign_type", "address_assign_type", MetricType::gauge},
    {"carrier", "carrier", MetricType::gauge},
    {"carrier_changes", "carrier_changes_total", MetricType::counter},
    {"carrier_up_count", "carrier_up_changes_total", MetricType::counter},
    {"carrier_down_count", "carrier_down_changes_total", MetricType::counter},
    {"dev_id", "device_id", MetricType::gauge},
    {"dormant", "dormant", MetricType::gauge},
    {"flags", "flags", MetricType::gauge},
    {"ifindex", "iface_id", MetricType::gauge},
    {"iflink", "iface_link", MetricType::gauge},
    {"link_mode", "iface_link_mode", MetricType::gauge},
    {"mtu", "mtu_bytes", MetricType::gauge},
    {"name_assign_type", "name_assign_type", MetricType::gauge},
    {"netdev_group", "net_dev_group", MetricType::gauge},
    {"tx_queue_len", "transmit_queue_length", MetricType::gauge},
}};
constexpr std::size_t kSpeedSlot = kNumeric.size();     // speed_bytes, computed from "speed"
constexpr std::size_t kTypeSlot = kNumeric.size() + 1;  // protocol_type, from "type"
constexpr std::array<std::string_view, 4> kStrings{"address", "broadcast", "duplex", "ifalias"};

struct Iface {
  std::string name;
  std::array<std::string, kStrings.size()> strings;
  std::string operstate;
  std::array<std::optional<std::int64_t>, kNumeric.size() + 2> numbers;
};

// The read errors node_exporter's procfs library treats as "attribute not available".
bool skippable(int error) {
  return error == ENOENT || error == EACCES || error == EPERM || error == EOPNOTSUPP ||
         error == EINVAL;
}

// procfs's ValueParser.PInt64 yields 0, not nothing, for a value it cannot parse.
std::int64_t attr_int(std::string_view value) {
  return sysfs::parse_int_any_base(value).value_or(0);
}

// The sysfs operstate names, by IF_OPER_* value.
std::string_view operstate_name(std::uint8_t state) {
  static constexpr std::array<std::string_view, 7> kNames{
      "unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"};
  return state < kNames.size() ? kNames[state] : "unknown";
}

// Fills `iface` from `link`, plus the few attributes only sysfs has exactly (raw flags,
// speed, duplex, dev_id, address and name assign types), read from `dir`.
Expected<Iface> iface_from_link(const std::filesystem::path& dir, std::string name,
                                const LinkInfo& link) {
  Iface iface{.name = std::move(name)};
  auto slot_of = [](std::string_view file) {
    for (std::size_t i = 0; i < kNumeric.size(); ++i) {
      if (kNumeric[i].file == file) return i;
    }
    return kNumeric.size();
  };
  // sysfs answers EINVAL for carrier and dormant while the device is down: leave them out.
  const bool running = (link.flags & IFF_UP) != 0;
  iface.numbers[slot_of("carrier")] = running ? link.carrier : std::nullopt;
  iface.numbers[slot_of("dormant")] =
      running ? std::optional<std::int64_t>((link.flags & IFF_DORMANT) != 0 ? 1 : 0) : std::nullopt;
  iface.numbers[slot_of("carrier_changes")] = link.carrier_changes;
  iface.numbers[slot_of("carrier_up_count")] = link.carrier_up;
  iface.numbers[slot_of("carrier_down_count")] = link.carrier_down;
  iface.numbers[slot_of("ifindex")] = link.ifindex;
  iface.numbers[slot_of("iflink")] = link.iflink.value_or(link.ifindex);
  iface.numbers[slot_of("link_mode")] = link.link_mode;
  iface.numbers[slot_of("mtu")] = link.mtu;
  iface.numbers[slot_of("netdev_group")] = link.group;
  iface.numbers[slot_of("tx_queue_len")] = link.txqlen;
  iface.numbers[kTypeSlot] = link.type;
  // The sysfs path reads 128 bytes of "alias\n" and trims them: do the same.
  const std::string alias_file = link.ifalias + "\n";
  iface.strings = {link.address, link.broadcast, "",
                   std::string(sysfs::trim_space(std::string_view(alias_file).substr(0, 128)))};
  iface.operstate = link.operstate ? std::string(operstate_name(*link.operstate)) : "unknown";

  for (std::string_view file :
       {"addr_assign_type", "dev_id", "flags", "name_assign_type", "speed", "duplex"}) {
    auto raw = sysfs::read_attr(dir / file);
    if (!raw) {
      if (skippable(raw.error().error)) continue;
      return fail(Errc::internal, raw.error().message(dir / file));
    }
    const std::string value(sysfs::trim_space(*raw));
    if (file == "duplex") {
      iface.strings[2] = value;
    } else if (file == "speed") {
      iface.numbers[kSpeedSlot] = attr_int(value);
    } else {
      iface.numbers[slot_of(file)] = attr_int(value);
    }
  }
  return iface;
}

Expected<Iface> read_iface(const std::filesystem::path& dir, std::string name) {
  Iface iface{.name = std::move(name)};
  auto entries = sysfs::read_dir(dir);
  if (!entries) return fail(Errc::not_found, entries.error().message(dir));
  for (const auto& e : *entries) {
    if (!e.regular) continue;
    std::size_t slot = kNumeric.size() + 2;
    std::size_t string_slot = kStrings.size();
    for (std::size_t i = 0; i < kNumeric.size(); ++i) {
      if (kNumeric[i].file == e.name) slot = i;
    }
    for (std::size_t i = 0; i < kStrings.size(); ++i) {
      if (kStrings[i] == e.name) string_slot = i;
    }
    if (e.name == "speed") slot = kSpeedSlot;
    if (e.name == "type") slot = kTypeSlot;
    const bool wanted =
        slot < iface.numbers.size() || string_slot < kStrings.size() || e.name == "operstate";
    if (!wanted) continue;
    auto raw = sysfs::read_attr(dir / e.name);
    if (!raw) {
      if (skippable(raw.error().error)) continue;
      return fail(Errc::internal, raw.error().message(dir / e.name));
    }
    const std::string value(sysfs::trim_space(*raw));
    if (slot < iface.numbers.size()) {
      iface.numbers[slot] = attr_int(value);
    } else if (string_slot < kStrings.size()) {
      iface.strings[string_slot] = value;
    } else {
      iface.operstate = value;
    }
  }
  return iface;
}

// Whether the directories of /sys/class/net are exactly the dump's interfaces.
bool same_devices(const std::vector<sysfs::DirEntry>& entries,
                  const std::map<std::string, LinkInfo>& links) {
  std::size_t dirs = 0;
  for (const auto& e : entries) {
    if (e.regular) continue;
    ++dirs;
    if (!links.contains(e.name)) return false;
  }
  return dirs == links.size();
}

class NetclassCollector final : public Collector {
 public:
  explicit NetclassCollector(const CollectorOptions& options)
      : ignore_invalid_speed_(options.netclass_ignore_invalid_speed),
        use_netlink_(!options.netclass_sysfs_only) {
    // The config refuses invalid patterns; one that slips through fails every collect().
    try {
      ignored_.emplace(options.netclass_ignored_devices);
    } catch (const std::regex_error& e) {
      regex_error_ = "invalid ignored_devices pattern \"" + options.netclass_ignored_devices +
                     "\": " + e.what();
    }
  }

  std::string_view name() const override { return "netclass"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    if (!ignored_) return fail(Errc::invalid_argument, regex_error_);
    const auto root = paths.sys / "class/net";
    auto devices = sysfs::read_dir(root);
    if (!devices) {
      // node_exporter: "no data" for a missing or unreadable class, an error otherwise.
      const int err = devices.error().error;
      return fail(
          err == ENOENT || err == EACCES || err == EPERM ? Errc::unavailable : Errc::internal,
          devices.error().message(root));
    }
    // Netlink describes the live host only; a sysfs tree elsewhere (fixtures, a host's /sys
    // mounted in a container) is read file by file. A failed dump falls back the same way.
    std::optional<std::map<std::string, LinkInfo>> links;
    if (use_netlink_ && paths.sys == "/sys") {
      auto dumped = dumper_.dump();
      // /sys may show another network namespace than the agent's (a container with the
      // host's /sys): then the names differ and sysfs alone is right.
      if (dumped && same_devices(*devices, *dumped)) {
        links = std::move(*dumped);
      } else if (!netlink_failed_) {
        netlink_failed_ = true;
        logger().debug("netclass: reading sysfs only: {}",
                       dumped ? "its devices differ from the dump's" : dumped.error().message);
      }
    }
    std::vector<Iface> ifaces;
    for (const auto& d : *devices) {
      if (d.regular) continue;  // bonding_masters and the like
      if (std::regex_search(d.name, *ignored_)) continue;
      const LinkInfo* link = nullptr;
      if (links) {
        if (auto it = links->find(d.name); it != links->end()) link = &it->second;
      }
      auto iface = link != nullptr ? iface_from_link(root / d.name, d.name, *link)
                                   : read_iface(root / d.name, d.name);
      if (!iface) return std::unexpected(iface.error());
      ifaces.push_back(std::move(*iface));
    }

    MetricFamily up{.name = "node_network_up",
                    .help = "Value is 1 if operstate is 'up', 0 otherwise.",
                    .type = MetricType::gauge};
    MetricFamily info{.name = "node_network_info",
                      .help = "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
                      .type = MetricType::gauge};
    std::vector<MetricFamily> numeric;
    auto family = [](std::string_view metric, MetricType type) {
      return MetricFamily{.name = "node_network_" + std::string(metric),
                          .help = "Network device property: " + std::string(metric),
                          .type = type,
                          .unit = metric.ends_with("_bytes") ? "bytes" : ""};
    };
    for (const auto& a : kNumeric)
      numeric.push_back(family(a.metric, a.type));
    numeric.push_back(family("speed_bytes", MetricType::gauge));
    numeric.push_back(family("protocol_type", MetricType::gauge));

    for (const auto& i : ifaces) {
      up.add(i.operstate == "up" ? 1 : 0, {{"device", i.name}});
      info.add(1, {{"address", i.strings[0]},
                   {"broadcast", i.strings[1]},
                   {"device", i.name},
                   {"duplex", i.strings[2]},
                   {"ifalias", i.strings[3]},
                   {"operstate", i.operstate}});
      for (std::size_t s = 0; s < i.numbers.size(); ++s) {
        if (!i.numbers[s]) continue;
        double v = static_cast<double>(*i.numbers[s]);
        if (s == kSpeedSlot) {
          // Some drivers report -1 for an unknown speed; node_exporter 1.5 still exports it
          // unless told to ignore it. Mbit/s to bytes/s in int64 with Go's wrap-around.
          if (*i.numbers[s] < 0 && ignore_invalid_speed_) continue;
          const auto bits = static_cast<std::uint64_t>(*i.numbers[s]) * 1000000u;
          v = static_cast<double>(static_cast<std::int64_t>(bits) / 8);
        }
        numeric[s].add(v, {{"device", i.name}});
      }
    }
    if (ifaces.empty()) return {};
    out.push_back(std::move(up));
    out.push_back(std::move(info));
    for (auto& f : numeric) {
      if (!f.samples.empty()) out.push_back(std::move(f));
    }
    return {};
  }

 private:
  std::optional<std::regex> ignored_;
  std::string regex_error_;
  bool ignore_invalid_speed_;
  bool use_netlink_;
  bool netlink_failed_ = false;  // logged once
  LinkDumper dumper_;
};

}  // namespace

std::unique_ptr<Collector> make_netclass_collector(const CollectorOptions& options) {
  return std::make_unique<NetclassCollector>(options);
}

}  // namespace neco::exporter
