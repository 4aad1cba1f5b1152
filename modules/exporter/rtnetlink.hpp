// Interface attributes from one rtnetlink RTM_GETLINK dump, in sysfs's terms, for the
// netclass collector: one dump describes every interface of the network namespace, where
// sysfs needs ~20 file reads per interface.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "agent/util/error.hpp"

namespace neco::exporter::rtnetlink {

// What the dump says about one interface.
struct LinkInfo {
  std::int64_t ifindex = 0;
  std::int64_t type = 0;
  std::uint32_t flags = 0;  // dev_get_flags(): IFF_UP, IFF_DORMANT, ...
  std::optional<std::int64_t> iflink, mtu, txqlen, group, link_mode, carrier, carrier_changes,
      carrier_up, carrier_down;
  std::optional<std::uint8_t> operstate;    // IF_OPER_*
  std::string address, broadcast, ifalias;  // formatted as sysfs prints them
};

// sysfs_format_mac: lowercase hex bytes joined by ':' (empty for no address).
std::string format_hw_address(std::span<const std::uint8_t> bytes);

// Parses a buffer of netlink messages answering request `seq` into `links` (by name); true
// once NLMSG_DONE is seen. Every length is checked: a malformed message is an error.
Expected<bool> parse_link_messages(std::span<const std::uint8_t> buf, std::uint32_t seq,
                                   std::map<std::string, LinkInfo>& links);

// A NETLINK_ROUTE socket kept between dumps; any failure drops it (unavailable).
class LinkDumper {
 public:
  LinkDumper() = default;
  LinkDumper(const LinkDumper&) = delete;
  LinkDumper& operator=(const LinkDumper&) = delete;
  ~LinkDumper();

  Expected<std::map<std::string, LinkInfo>> dump();

 private:
  std::unexpected<Error> reset(std::string why);

  int fd_ = -1;
  std::uint32_t seq_ = 0;
};

}  // namespace neco::exporter::rtnetlink
