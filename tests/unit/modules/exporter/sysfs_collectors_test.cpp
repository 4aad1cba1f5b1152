// The sysfs collectors (netclass, hwmon, thermal_zone, nvme, edac) against a made-up sysfs tree
// with the links real sysfs has, compared with golden expositions that were checked against
// node_exporter 1.5.0 run on the same tree; plus missing classes, malformed attributes and the
// netclass options.
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "agent/metrics/exposition.hpp"
#include "modules/exporter/exporter.hpp"
#include "modules/exporter/rtnetlink.hpp"
#include "modules/exporter/sysfs_read.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/exporter/exporter_test_support.hpp"

namespace {

namespace ex = neco::exporter;
namespace sysfs = neco::exporter::sysfs;
using neco::metrics::MetricFamily;
using namespace neco::exporter::testing;

constexpr const char* kSysfsCollectors[] = {"netclass", "hwmon", "thermal_zone", "nvme", "edac"};

// Runs a collector expecting failure; returns the error.
neco::Error collect_error(std::string_view name, const ex::Paths& paths,
                          const ex::CollectorOptions& options = {}) {
  auto c = ex::find_collector(name)->make(options);
  std::vector<MetricFamily> out;
  auto r = c->collect(paths, out);
  REQUIRE_FALSE(r.has_value());
  return r.error();
}

ex::Paths sys_at(const std::filesystem::path& sys) {
  return {"/nonexistent", sys, "/"};
}

void write(const std::filesystem::path& p, const std::string& text) {
  std::filesystem::create_directories(p.parent_path());
  neco::testing::write_file(p, text);
}

bool has_series(const std::vector<MetricFamily>& fams, std::string_view family,
                std::string_view label, std::string_view value) {
  const auto* f = neco::metrics::find_family(fams, family);
  if (f == nullptr) return false;
  for (const auto& s : f->samples) {
    for (const auto& l : f->labels_of(s)) {
      if (l.name == label && l.value == value) return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("sysfs collectors match their golden expositions", "[exporter][sysfs]") {
  for (const char* name : kSysfsCollectors) {
    SECTION(name) {
      check_golden(name, render(run_collector(name, fixture_paths())));
    }
  }
}

TEST_CASE("netclass: values, skipped attributes and node_exporter's conversions",
          "[exporter][sysfs]") {
  auto f = run_collector("netclass", fixture_paths());
  // bonding_masters is a file in class/net, not a device.
  CHECK_FALSE(has_series(f, "node_network_up", "device", "bonding_masters"));
  CHECK(value_of(f, "node_network_up", "device", "enp0s31f6") == 1);
  CHECK(value_of(f, "node_network_up", "device", "lo") == 0);  // operstate "unknown"
  // "0x1003" is hex, as Go's ParseInt with base 0 reads it.
  CHECK(value_of(f, "node_network_flags", "device", "enp0s31f6") == 0x1003);
  // Mbit/s to bytes/s; -1 (unknown) is kept by default: -125000 as node_exporter 1.5 does.
  CHECK(value_of(f, "node_network_speed_bytes", "device", "enp0s31f6") == 125000000);
  CHECK(value_of(f, "node_network_speed_bytes", "device", "eno2") == -125000);
  // A missing attribute (no carrier file on the down link, no speed on lo) is left out.
  CHECK_FALSE(has_series(f, "node_network_carrier", "device", "eno2"));
  CHECK_FALSE(has_series(f, "node_network_speed_bytes", "device", "lo"));
  CHECK(value_of(f, "node_network_mtu_bytes", "device", "vxlan100") == 8950);
  CHECK(has_series(f, "node_network_info", "ifalias", "uplink to tor-a3 \"primary\""));
  const auto* changes = neco::metrics::find_family(f, "node_network_carrier_changes_total");
  REQUIRE(changes != nullptr);
  CHECK(changes->type == neco::metrics::MetricType::counter);
}

TEST_CASE("netclass: the rtnetlink dump gives exactly what sysfs alone gives",
          "[exporter][sysfs]") {
  if (!std::filesystem::exists("/sys/class/net")) {
    WARN("skipped: no /sys/class/net here");
    return;
  }
  const ex::Paths live{"/proc", "/sys", "/"};
  ex::CollectorOptions sysfs_only;
  sysfs_only.netclass_sysfs_only = true;
  // Counters may move between the two reads; compare a few times and accept one quiet pair.
  bool equal = false;
  std::string a;
  std::string b;
  for (int attempt = 0; attempt < 5 && !equal; ++attempt) {
    a = render(run_collector("netclass", live));
    b = render(run_collector("netclass", live, sysfs_only));
    equal = a == b;
  }
  INFO("netlink:\n" << a << "\nsysfs:\n" << b);
  CHECK(equal);
  // The netlink path was really taken: it is used when the dump lists exactly the devices
  // of /sys/class/net, as on this host.
  auto dumped = neco::exporter::rtnetlink::LinkDumper().dump();
  REQUIRE(dumped.has_value());
  std::size_t dirs = 0;
  for (const auto& e : std::filesystem::directory_iterator("/sys/class/net")) {
    if (e.is_regular_file()) continue;
    ++dirs;
    CHECK(dumped->contains(e.path().filename().string()));
  }
  CHECK(dirs == dumped->size());
  // The host's interfaces include a down one (carrier/dormant left out) on most machines;
  // lo is always there.
  CHECK(a.find("node_network_up{device=\"lo\"}") != std::string::npos);
}

namespace {

// A netlink message buffer built by hand: header, ifinfomsg, then attributes.
struct NlBuilder {
  std::vector<std::uint8_t> bytes;
  std::size_t start = 0;

  void begin(std::uint16_t type, std::uint32_t seq, int ifindex, std::uint32_t flags) {
    start = bytes.size();
    nlmsghdr h{};
    h.nlmsg_type = type;
    h.nlmsg_seq = seq;
    append(&h, sizeof h);
    ifinfomsg ifi{};
    ifi.ifi_index = ifindex;
    ifi.ifi_type = 1;
    ifi.ifi_flags = flags;
    append(&ifi, sizeof ifi);
  }
  void attr(std::uint16_t type, const void* data, std::size_t len) {
    rtattr a{};
    a.rta_type = type;
    a.rta_len = static_cast<std::uint16_t>(RTA_LENGTH(len));
    append(&a, sizeof a);
    append(data, len);
    bytes.resize(start + NLMSG_ALIGN(bytes.size() - start));
  }
  void end() {
    const auto len = static_cast<std::uint32_t>(bytes.size() - start);
    std::memcpy(bytes.data() + start, &len, sizeof len);  // nlmsg_len is the first field
  }
  void append(const void* data, std::size_t len) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    bytes.insert(bytes.end(), p, p + len);
  }
};

}  // namespace

TEST_CASE("rtnetlink: link messages parse into sysfs terms; malformed ones are errors",
          "[exporter][sysfs]") {
  namespace rt = neco::exporter::rtnetlink;
  NlBuilder b;
  b.begin(RTM_NEWLINK, 7, 3, IFF_UP | IFF_DORMANT);
  b.attr(IFLA_IFNAME, "eth7", 5);
  const std::uint8_t mac[] = {0x02, 0xab, 0x00, 0x10, 0xff, 0x01};
  b.attr(IFLA_ADDRESS, mac, sizeof mac);
  const std::uint32_t mtu = 9000;
  b.attr(IFLA_MTU, &mtu, sizeof mtu);
  const std::uint8_t carrier = 1;
  const std::uint8_t oper = 6;  // IF_OPER_UP
  b.attr(IFLA_CARRIER, &carrier, 1);
  b.attr(IFLA_OPERSTATE, &oper, 1);
  b.end();
  b.begin(RTM_NEWLINK, 6, 4, 0);  // another request's answer: ignored
  b.attr(IFLA_IFNAME, "old0", 5);
  b.end();
  const std::size_t before_done = b.bytes.size();
  b.begin(NLMSG_DONE, 7, 0, 0);
  b.end();

  std::map<std::string, rt::LinkInfo> links;
  auto done = rt::parse_link_messages(b.bytes, 7, links);
  REQUIRE(done.has_value());
  CHECK(*done);
  REQUIRE(links.size() == 1);
  const auto& eth = links.at("eth7");
  CHECK(eth.ifindex == 3);
  CHECK(eth.address == "02:ab:00:10:ff:01");
  CHECK(eth.mtu == 9000);
  CHECK(eth.carrier == 1);
  CHECK(eth.operstate == 6);
  CHECK((eth.flags & IFF_DORMANT) != 0);
  CHECK(rt::format_hw_address({}).empty());

  // Without NLMSG_DONE the dump is not over yet.
  links.clear();
  auto partial = rt::parse_link_messages(std::span(b.bytes.data(), before_done), 7, links);
  REQUIRE(partial.has_value());
  CHECK_FALSE(*partial);

  // A message longer than the buffer, an attribute longer than its message, and a message
  // too short for its ifinfomsg are errors, never reads past the end.
  auto broken = b.bytes;
  std::uint32_t huge = 1u << 20;
  std::memcpy(broken.data(), &huge, sizeof huge);
  CHECK_FALSE(rt::parse_link_messages(broken, 7, links).has_value());
  NlBuilder bad_attr;
  bad_attr.begin(RTM_NEWLINK, 7, 1, 0);
  bad_attr.attr(IFLA_IFNAME, "x", 2);
  bad_attr.end();
  const std::uint16_t too_long = 200;
  std::memcpy(bad_attr.bytes.data() + sizeof(nlmsghdr) + sizeof(ifinfomsg), &too_long,
              sizeof too_long);
  CHECK_FALSE(rt::parse_link_messages(bad_attr.bytes, 7, links).has_value());
  NlBuilder short_msg;
  short_msg.begin(RTM_NEWLINK, 7, 1, 0);
  short_msg.bytes.resize(sizeof(nlmsghdr) + 4);
  short_msg.end();
  CHECK_FALSE(rt::parse_link_messages(short_msg.bytes, 7, links).has_value());
  // Every truncation of a good buffer is handled (error or "not done"), never a crash.
  for (std::size_t n = 0; n < b.bytes.size(); ++n) {
    std::map<std::string, rt::LinkInfo> some;
    (void)rt::parse_link_messages(std::span(b.bytes.data(), n), 7, some);
  }
}

TEST_CASE("rtnetlink: the live dump lists the loopback interface", "[exporter][sysfs]") {
  neco::exporter::rtnetlink::LinkDumper dumper;
  auto links = dumper.dump();
  REQUIRE(links.has_value());
  REQUIRE(links->contains("lo"));
  CHECK(links->at("lo").ifindex == 1);
  CHECK(links->at("lo").mtu.has_value());
  // The socket is kept: a second dump works too.
  CHECK(dumper.dump().has_value());
}

TEST_CASE("netclass options: ignored devices and invalid speeds", "[exporter][sysfs][config]") {
  ex::CollectorOptions options;
  options.netclass_ignored_devices = "^(lo|vxlan[0-9]+)$";
  options.netclass_ignore_invalid_speed = true;
  auto f = run_collector("netclass", fixture_paths(), options);
  CHECK_FALSE(has_series(f, "node_network_up", "device", "lo"));
  CHECK_FALSE(has_series(f, "node_network_up", "device", "vxlan100"));
  CHECK(has_series(f, "node_network_up", "device", "eno2"));
  CHECK_FALSE(has_series(f, "node_network_speed_bytes", "device", "eno2"));
  CHECK(has_series(f, "node_network_speed_bytes", "device", "enp0s31f6"));

  // An invalid pattern fails the collector, never its constructor.
  options.netclass_ignored_devices = "(";
  CHECK(collect_error("netclass", fixture_paths(), options).message.find("ignored_devices") !=
        std::string::npos);

  // The config section carries both keys, with node_exporter's defaults.
  const ex::ExporterConfig defaults;
  CHECK(defaults.netclass.ignored_devices == "^$");
  CHECK_FALSE(defaults.netclass.ignore_invalid_speed);
  const std::string yaml = "netclass:\n  ignored_devices: '^veth'\n  ignore_invalid_speed: true\n";
  neco::config::ModuleSection ms{"exporter", YAML::Load(yaml), yaml, {}};
  ex::ExporterConfig c;
  REQUIRE(neco::config::Section(ms, "role.yaml").read(ex::exporter_schema(), c).has_value());
  CHECK(c.netclass.ignored_devices == "^veth");
  CHECK(c.netclass.ignore_invalid_speed);
  for (const std::string bad : {"netclass:\n  ignored_devices: '('\n", "netclass:\n  bogus: 1\n"}) {
    neco::config::ModuleSection bad_ms{"exporter", YAML::Load(bad), bad, {}};
    ex::ExporterConfig b;
    CHECK_FALSE(
        neco::config::Section(bad_ms, "role.yaml").read(ex::exporter_schema(), b).has_value());
  }
}

TEST_CASE("hwmon: chip names, unit conversions and element names", "[exporter][sysfs]") {
  auto f = run_collector("hwmon", fixture_paths());
  // The chip is named after the device's bus path; without a device link after the name file,
  // and without either after the hwmonN directory.
  CHECK(has_series(f, "node_hwmon_chip_names", "chip", "platform_coretemp_0"));
  CHECK(has_series(f, "node_hwmon_chip_names", "chip", "pci0000:00_0000:00:18_3"));
  CHECK(has_series(f, "node_hwmon_chip_names", "chip", "nvme_nvme0"));
  CHECK(has_series(f, "node_hwmon_chip_names", "chip_name", "power_meter"));
  CHECK(has_series(f, "node_hwmon_temp_celsius", "chip", "hwmon5"));
  CHECK(has_series(f, "node_hwmon_sensor_label", "label", "Package id 0"));
  CHECK(value_of(f, "node_hwmon_temp_celsius", "chip", "platform_coretemp_0") == Approx(47.0));
  CHECK(value_of(f, "node_hwmon_temp_min_celsius", "chip", "nvme_nvme0") == Approx(-273.15));
  CHECK(value_of(f, "node_hwmon_in_volts", "sensor", "in0") == Approx(1.032));
  CHECK(value_of(f, "node_hwmon_fan_rpm", "sensor", "fan1") == 1202);
  CHECK(value_of(f, "node_hwmon_curr_amps", "sensor", "curr1") == Approx(2.35));
  CHECK(value_of(f, "node_hwmon_power_average_watt", "sensor", "power1") == Approx(245.0));
  CHECK(value_of(f, "node_hwmon_power_accuracy", "sensor", "power1") == Approx(0.095));
  CHECK(value_of(f, "node_hwmon_energy_joule_total", "sensor", "energy1") == Approx(123456.789012));
  CHECK(value_of(f, "node_hwmon_update_interval_seconds", "chip", "hwmon5") == Approx(2.0));
  // vrm sits in the device directory, merged into the chip's sensors.
  CHECK(value_of(f, "node_hwmon_voltage_regulator_version", "chip", "platform_nct6775_656") == 91);
  // Alarms get no unit, "crit_alarm" is an element like any other (node_exporter's naming).
  CHECK(neco::metrics::find_family(f, "node_hwmon_in_alarm") != nullptr);
  CHECK(neco::metrics::find_family(f, "node_hwmon_temp_crit_alarm_celsius") != nullptr);
  // A value that is not a number is skipped; the device's power/ directory is not a sensor.
  CHECK(neco::metrics::find_family(f, "node_hwmon_power_model_number_watt") == nullptr);
  CHECK_FALSE(has_series(f, "node_hwmon_power_watt", "sensor", "power0"));
}

TEST_CASE("hwmon sensor file names split as node_exporter's pattern does", "[exporter][sysfs]") {
  neco::testing::TempDir tmp;
  const auto dir = tmp.path() / "class/hwmon/hwmon0";
  write(dir / "name", "odd\n");
  write(dir / "temp_input", "1000\n");    // no number: type "temp_input", not a sensor
  write(dir / "in_foo1x", "1\n");         // backtracks to type "in", element "foo1x"
  write(dir / "fan1input", "5\n");        // no "_": does not match at all
  write(dir / "temp01_input", "2000\n");  // leading zero: sensor temp1
  write(dir / "temp99999999999999999999_input", "1\n");  // id past int64: skipped
  write(dir / "temp2_input", " 42000\n");                // ParseFloat refuses the space: skipped
  write(dir / "temp3_input", "");                        // empty: skipped
  write(dir / "temp4_label", "\xff\xfe bad\n");          // invalid UTF-8 becomes one U+FFFD
  auto f = run_collector("hwmon", sys_at(tmp.path()));
  CHECK(value_of(f, "node_hwmon_in_foo1x_volts", "sensor", "in0") == Approx(0.001));
  CHECK(value_of(f, "node_hwmon_temp_celsius", "sensor", "temp1") == Approx(2.0));
  CHECK_FALSE(has_series(f, "node_hwmon_temp_celsius", "sensor", "temp2"));
  CHECK_FALSE(has_series(f, "node_hwmon_temp_celsius", "sensor", "temp3"));
  CHECK(has_series(f, "node_hwmon_sensor_label", "label", "\xEF\xBF\xBD bad"));
  CHECK(neco::metrics::find_family(f, "node_hwmon_fan_rpm") == nullptr);
  CHECK(render(f).find("temp_input") == std::string::npos);
}

TEST_CASE("thermal_zone: zones and cooling devices", "[exporter][sysfs]") {
  auto f = run_collector("thermal_zone", fixture_paths());
  CHECK(value_of(f, "node_thermal_zone_temp", "zone", "0") == Approx(27.8));
  CHECK(value_of(f, "node_thermal_zone_temp", "type", "iwlwifi_1") == Approx(-5.0));
  CHECK(value_of(f, "node_cooling_device_cur_state", "type", "intel_powerclamp") == -1);
  CHECK(value_of(f, "node_cooling_device_max_state", "name", "10") == 1);
}

TEST_CASE("nvme and edac report what the tree holds", "[exporter][sysfs]") {
  auto n = run_collector("nvme", fixture_paths());
  CHECK(has_series(n, "node_nvme_info", "model", "ACME NV3 1TB"));  // padding trimmed
  CHECK(has_series(n, "node_nvme_info", "state", "resetting"));
  auto e = run_collector("edac", fixture_paths());
  CHECK(value_of(e, "node_edac_correctable_errors_total", "controller", "0") == 3);
  CHECK(value_of(e, "node_edac_uncorrectable_errors_total", "controller", "1") == 1);
  CHECK(has_series(e, "node_edac_csrow_correctable_errors_total", "csrow", "unknown"));
  CHECK(has_series(e, "node_edac_csrow_uncorrectable_errors_total", "csrow", "1"));
}

TEST_CASE("a missing sysfs class behaves as in node_exporter 1.5", "[exporter][sysfs]") {
  neco::testing::TempDir empty;
  const auto paths = sys_at(empty.path());
  // No data: an error (success 0) for netclass, hwmon and nvme, marked "unavailable" so the
  // scrape logs it at debug level only.
  for (const char* name : {"netclass", "hwmon", "nvme"}) {
    INFO(name);
    CHECK(collect_error(name, paths).code == neco::Errc::unavailable);
  }
  // thermal_zone and edac glob, and an empty glob is success with nothing.
  for (const char* name : {"thermal_zone", "edac"}) {
    CHECK(run_collector(name, paths).empty());
  }
}

TEST_CASE("malformed sysfs attributes never crash a collector", "[exporter][sysfs]") {
  neco::testing::TempDir tmp;
  const auto& sys = tmp.path();
  SECTION("netclass: unparsable numbers read as 0, as procfs's ValueParser gives them") {
    const auto dev = sys / "class/net/eth9";
    std::filesystem::create_directories(dev);
    write(dev / "mtu", "lots\n");
    write(dev / "flags", "0x\n");
    write(dev / "ifindex", "99999999999999999999\n");
    write(dev / "speed", "010\n");                    // a leading 0 is octal to Go: 8 Mbit/s
    write(dev / "operstate", std::string(500, 'u'));  // read as one 128-byte chunk
    write(dev / "address", "");
    auto f = run_collector("netclass", sys_at(sys));
    CHECK(value_of(f, "node_network_mtu_bytes") == 0);
    CHECK(value_of(f, "node_network_flags") == 0);
    CHECK(value_of(f, "node_network_iface_id") == 0);
    CHECK(value_of(f, "node_network_speed_bytes") == 1000000);
    CHECK(has_series(f, "node_network_info", "operstate", std::string(128, 'u')));
  }
  SECTION("netclass: a device entry that is no directory fails the collector") {
    std::filesystem::create_directories(sys / "class/net");
    std::filesystem::create_symlink("/nonexistent/eth0", sys / "class/net/eth0");
    collect_error("netclass", sys_at(sys));
  }
  SECTION("thermal_zone: a bad temperature fails, a missing type fails") {
    write(sys / "class/thermal/thermal_zone0/type", "acpitz\n");
    write(sys / "class/thermal/thermal_zone0/policy", "step_wise\n");
    write(sys / "class/thermal/thermal_zone0/temp", "warm\n");
    CHECK(collect_error("thermal_zone", sys_at(sys)).message.find("temp") != std::string::npos);
    write(sys / "class/thermal/thermal_zone0/temp", "41000\n");
    write(sys / "class/thermal/thermal_zone0/passive", "-1\n");
    CHECK(collect_error("thermal_zone", sys_at(sys)).message.find("passive") != std::string::npos);
    std::filesystem::remove(sys / "class/thermal/thermal_zone0/passive");
    write(sys / "class/thermal/cooling_device0/type", "Fan\n");
    write(sys / "class/thermal/cooling_device0/max_state", "1\n");
    collect_error("thermal_zone", sys_at(sys));  // no cur_state
    write(sys / "class/thermal/cooling_device0/cur_state", "1\n");
    auto f = run_collector("thermal_zone", sys_at(sys));
    CHECK(value_of(f, "node_thermal_zone_temp") == Approx(41.0));
  }
  SECTION("nvme: a device without its attributes fails") {
    write(sys / "class/nvme/nvme0/model", "X\n");
    CHECK(collect_error("nvme", sys_at(sys)).message.find("firmware_rev") != std::string::npos);
  }
  SECTION("edac: a negative or missing count fails") {
    const auto mc = sys / "devices/system/edac/mc/mc0";
    for (const char* file : {"ce_count", "ce_noinfo_count", "ue_count", "ue_noinfo_count"})
      write(mc / file, "0\n");
    write(mc / "csrow0/ce_count", "-1\n");
    write(mc / "csrow0/ue_count", "0\n");
    CHECK(collect_error("edac", sys_at(sys)).message.find("csrow0") != std::string::npos);
    std::filesystem::remove(mc / "ue_count");
    collect_error("edac", sys_at(sys));
  }
  SECTION("hwmon: a chip directory that cannot be listed fails, a dangling link is skipped") {
    std::filesystem::create_directories(sys / "class/hwmon");
    std::filesystem::create_symlink("/nonexistent/hwmon7", sys / "class/hwmon/hwmon7");
    CHECK(run_collector("hwmon", sys_at(sys)).empty());
  }
}

TEST_CASE("sysfs value parsing follows Go's strconv", "[exporter][sysfs]") {
  CHECK(sysfs::parse_int_any_base("0x1003") == 4099);
  CHECK(sysfs::parse_int_any_base("-0X10") == -16);
  CHECK(sysfs::parse_int_any_base("0o17") == 15);
  CHECK(sysfs::parse_int_any_base("0b101") == 5);
  CHECK(sysfs::parse_int_any_base("017") == 15);
  CHECK(sysfs::parse_int_any_base("0") == 0);
  CHECK(sysfs::parse_int_any_base("-9223372036854775808") == INT64_MIN);
  CHECK_FALSE(sysfs::parse_int_any_base("9223372036854775808"));
  CHECK_FALSE(sysfs::parse_int_any_base("0x"));
  CHECK_FALSE(sysfs::parse_int_any_base("08"));
  CHECK_FALSE(sysfs::parse_int_any_base("0x-1"));
  CHECK_FALSE(sysfs::parse_int_any_base(""));
  CHECK(sysfs::parse_int("+5") == 5);
  CHECK_FALSE(sysfs::parse_int("5 "));
  CHECK_FALSE(sysfs::parse_uint("-0"));
  CHECK_FALSE(sysfs::parse_uint("+1"));
  CHECK(sysfs::parse_float("1e3") == 1000.0);
  CHECK(sysfs::parse_float("-.5") == -0.5);
  CHECK(sysfs::parse_float("+Inf") == INFINITY);
  CHECK(std::isnan(*sysfs::parse_float("NaN")));
  CHECK_FALSE(sysfs::parse_float("1e"));
  CHECK_FALSE(sysfs::parse_float("infin"));
  CHECK_FALSE(sysfs::parse_float("--1"));
  CHECK_FALSE(sysfs::parse_float(""));
  CHECK(sysfs::trim_space(" \t1\n") == "1");
  CHECK(sysfs::to_valid_utf8("a\xC3\xA9z") == "a\xC3\xA9z");
  CHECK(sysfs::to_valid_utf8("a\xC3z\xE2\x82") == "a\xEF\xBF\xBDz\xEF\xBF\xBD");
}
