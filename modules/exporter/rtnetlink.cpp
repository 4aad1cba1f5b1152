#include "modules/exporter/rtnetlink.hpp"

#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

namespace neco::exporter::rtnetlink {

std::string format_hw_address(std::span<const std::uint8_t> bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0) out += ':';
    out += kHex[bytes[i] >> 4];
    out += kHex[bytes[i] & 0xf];
  }
  return out;
}

namespace {

std::optional<std::uint32_t> rta_u32(std::span<const std::uint8_t> payload) {
  if (payload.size() < sizeof(std::uint32_t)) return std::nullopt;
  std::uint32_t v = 0;
  std::memcpy(&v, payload.data(), sizeof v);
  return v;
}

// Parses one RTM_NEWLINK message body (after the nlmsghdr); nullopt for a malformed one.
std::optional<std::pair<std::string, LinkInfo>> parse_link(std::span<const std::uint8_t> body) {
  if (body.size() < NLMSG_ALIGN(sizeof(ifinfomsg))) return std::nullopt;
  ifinfomsg ifi{};
  std::memcpy(&ifi, body.data(), sizeof ifi);
  LinkInfo link;
  link.ifindex = ifi.ifi_index;
  link.type = ifi.ifi_type;
  link.flags = ifi.ifi_flags;
  std::string name;
  auto attrs = body.subspan(NLMSG_ALIGN(sizeof(ifinfomsg)));
  while (attrs.size() >= sizeof(rtattr)) {
    rtattr rta{};
    std::memcpy(&rta, attrs.data(), sizeof rta);
    if (rta.rta_len < sizeof(rtattr) || rta.rta_len > attrs.size()) return std::nullopt;
    const auto payload = attrs.subspan(RTA_LENGTH(0), rta.rta_len - RTA_LENGTH(0));
    auto as_string = [&] {
      std::string_view v(reinterpret_cast<const char*>(payload.data()), payload.size());
      return std::string(v.substr(0, v.find('\0')));
    };
    // sysfs prints these with "%d": a value of 2^31 or more reads back negative there.
    auto as_int = [&]() -> std::optional<std::int64_t> {
      if (auto v = rta_u32(payload)) return static_cast<std::int32_t>(*v);
      return std::nullopt;
    };
    switch (rta.rta_type) {
      case IFLA_IFNAME:
        name = as_string();
        break;
      case IFLA_ADDRESS:
        link.address = format_hw_address(payload);
        break;
      case IFLA_BROADCAST:
        link.broadcast = format_hw_address(payload);
        break;
      case IFLA_IFALIAS:
        link.ifalias = as_string();
        break;
      case IFLA_LINK:
        link.iflink = as_int();
        break;
      case IFLA_MTU:
        link.mtu = as_int();
        break;
      case IFLA_TXQLEN:
        link.txqlen = as_int();
        break;
      case IFLA_GROUP:
        link.group = as_int();
        break;
      case IFLA_CARRIER_CHANGES:
        link.carrier_changes = as_int();
        break;
      case IFLA_CARRIER_UP_COUNT:
        link.carrier_up = as_int();
        break;
      case IFLA_CARRIER_DOWN_COUNT:
        link.carrier_down = as_int();
        break;
      case IFLA_LINKMODE:
        if (!payload.empty()) link.link_mode = payload[0];
        break;
      case IFLA_CARRIER:
        if (!payload.empty()) link.carrier = payload[0] != 0 ? 1 : 0;
        break;
      case IFLA_OPERSTATE:
        if (!payload.empty()) link.operstate = payload[0];
        break;
      default:
        break;
    }
    attrs = attrs.subspan(std::min<std::size_t>(RTA_ALIGN(rta.rta_len), attrs.size()));
  }
  if (name.empty()) return std::nullopt;
  return std::pair{std::move(name), std::move(link)};
}

}  // namespace

Expected<bool> parse_link_messages(std::span<const std::uint8_t> buf, std::uint32_t seq,
                                   std::map<std::string, LinkInfo>& links) {
  while (buf.size() >= sizeof(nlmsghdr)) {
    nlmsghdr h{};
    std::memcpy(&h, buf.data(), sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > buf.size()) {
      return fail(Errc::internal, "malformed netlink message");
    }
    if (h.nlmsg_seq == seq) {
      if (h.nlmsg_type == NLMSG_DONE) return true;
      if (h.nlmsg_type == NLMSG_ERROR) return fail(Errc::internal, "netlink dump refused");
      if (h.nlmsg_type == RTM_NEWLINK) {
        auto link = parse_link(buf.subspan(NLMSG_HDRLEN, h.nlmsg_len - NLMSG_HDRLEN));
        if (!link) return fail(Errc::internal, "malformed RTM_NEWLINK message");
        links.insert_or_assign(std::move(link->first), std::move(link->second));
      }
    }
    buf = buf.subspan(std::min<std::size_t>(NLMSG_ALIGN(h.nlmsg_len), buf.size()));
  }
  return false;
}

LinkDumper::~LinkDumper() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<std::map<std::string, LinkInfo>> LinkDumper::dump() {
  if (fd_ < 0) {
    fd_ = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd_ < 0) return fail(Errc::unavailable, std::string("netlink: ") + std::strerror(errno));
    // A reply that never comes must not hang the collector past its deadline for long.
    timeval tv{.tv_sec = 1, .tv_usec = 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  struct {
    nlmsghdr h;
    ifinfomsg ifi;
  } req{};
  req.h.nlmsg_len = sizeof req;
  req.h.nlmsg_type = RTM_GETLINK;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
  req.h.nlmsg_seq = ++seq_;
  req.ifi.ifi_family = AF_UNSPEC;
  sockaddr_nl kernel{.nl_family = AF_NETLINK, .nl_pad = 0, .nl_pid = 0, .nl_groups = 0};
  if (::sendto(fd_, &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) < 0) {
    return reset(std::string("netlink send: ") + std::strerror(errno));
  }
  std::map<std::string, LinkInfo> links;
  std::vector<std::uint8_t> buf(32768);
  for (int i = 0; i < 4096; ++i) {  // bounded: a dump of thousands of links fits well within
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return reset(std::string("netlink recv: ") + std::strerror(errno));
    }
    auto done =
        parse_link_messages(std::span(buf.data(), static_cast<std::size_t>(n)), seq_, links);
    if (!done) return reset(done.error().message);
    if (*done) return links;
  }
  return reset("netlink dump did not end");
}

// Drops the socket (it may hold the rest of a dump) and reports `why`.
std::unexpected<Error> LinkDumper::reset(std::string why) {
  ::close(fd_);
  fd_ = -1;
  return std::unexpected(Error{Errc::unavailable, std::move(why)});
}

}  // namespace neco::exporter::rtnetlink
