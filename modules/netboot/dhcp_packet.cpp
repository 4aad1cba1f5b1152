#include "modules/netboot/dhcp_packet.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace neco::netboot {

namespace {

constexpr std::array<std::uint8_t, 4> kMagic = {99, 130, 83, 99};

// Header field offsets (RFC 2131 §2, figure 1).
constexpr std::size_t kOffHtype = 1;
constexpr std::size_t kOffHlen = 2;
constexpr std::size_t kOffHops = 3;
constexpr std::size_t kOffXid = 4;
constexpr std::size_t kOffSecs = 8;
constexpr std::size_t kOffFlags = 10;
constexpr std::size_t kOffCiaddr = 12;
constexpr std::size_t kOffYiaddr = 16;
constexpr std::size_t kOffSiaddr = 20;
constexpr std::size_t kOffGiaddr = 24;
constexpr std::size_t kOffChaddr = 28;
constexpr std::size_t kOffSname = 44;
constexpr std::size_t kOffFile = 108;
constexpr std::size_t kOffMagic = 236;
constexpr std::size_t kOffOptions = 240;

// Option 52's values (RFC 2132 §9.3).
constexpr std::uint8_t kOverloadFile = 1;
constexpr std::uint8_t kOverloadSname = 2;

constexpr std::size_t kMaxOptionChunk = 255;

std::uint16_t get16(ByteView b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

std::uint32_t get32(ByteView b, std::size_t at) {
  return (std::uint32_t{b[at]} << 24) | (std::uint32_t{b[at + 1]} << 16) |
         (std::uint32_t{b[at + 2]} << 8) | std::uint32_t{b[at + 3]};
}

Ipv4 get_ip(ByteView b, std::size_t at) {
  return {b[at], b[at + 1], b[at + 2], b[at + 3]};
}

void put16(Bytes& out, std::size_t at, std::uint16_t v) {
  out[at] = static_cast<std::uint8_t>(v >> 8);
  out[at + 1] = static_cast<std::uint8_t>(v);
}

void put32(Bytes& out, std::size_t at, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out[at + i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}

void put_ip(Bytes& out, std::size_t at, const Ipv4& ip) {
  std::copy(ip.begin(), ip.end(), out.begin() + static_cast<std::ptrdiff_t>(at));
}

// A NUL-terminated string in a fixed field; the whole field when it has no NUL.
std::string field_string(ByteView b, std::size_t at, std::size_t size) {
  const auto field = b.subspan(at, size);
  const auto nul = std::find(field.begin(), field.end(), std::uint8_t{0});
  return std::string(field.begin(), nul);
}

// One option instance as found on the wire, before RFC 3396 concatenation.
struct Fragment {
  std::uint8_t code;
  std::size_t offset;  // of the value, in the whole packet
  std::uint8_t length;
};

ParseError error(ParseErrc reason, std::string message) {
  return ParseError{reason, std::move(message)};
}

// Collect the options of one area [begin, end) of the packet. PAD is skipped, END stops the
// walk (what follows is padding), and an area may also end without END: many clients and
// relays omit it when the options fill the packet, and nothing is ambiguous then.
std::optional<ParseError> walk_options(ByteView b, std::size_t begin, std::size_t end,
                                       std::string_view area, std::vector<Fragment>& out) {
  std::size_t i = begin;
  while (i < end) {
    const std::uint8_t code = b[i];
    if (code == opt::pad) {
      ++i;
      continue;
    }
    if (code == opt::end) return std::nullopt;
    if (i + 1 >= end) {
      return error(
          ParseErrc::option_overrun,
          fmt::format("option {} at offset {} in the {} area has no length byte", code, i, area));
    }
    const std::uint8_t length = b[i + 1];
    if (i + 2 + length > end) {
      return error(ParseErrc::option_overrun,
                   fmt::format("option {} at offset {} in the {} area has length {} but only {} "
                               "bytes remain",
                               code, i, area, length, end - i - 2));
    }
    out.push_back({code, i + 2, length});
    i += 2 + std::size_t{length};
  }
  return std::nullopt;
}

// Length rules of the options the accessors interpret: a value outside them makes the packet
// malformed rather than letting an accessor guess.
struct LengthRule {
  std::uint8_t code;
  std::string_view name;
  std::size_t min;
  std::size_t max;
  std::size_t multiple;
};

constexpr LengthRule kLengthRules[] = {
    {opt::subnet_mask, "subnet mask", 4, 4, 1},
    {opt::router, "router", 4, std::size_t{255} * 4, 4},
    {opt::dns_servers, "DNS servers", 4, std::size_t{255} * 4, 4},
    {opt::requested_ip, "requested IP", 4, 4, 1},
    {opt::lease_time, "lease time", 4, 4, 1},
    {opt::server_id, "server identifier", 4, 4, 1},
    {opt::max_message_size, "maximum message size", 2, 2, 1},
    {opt::renewal_time, "renewal (T1) time", 4, 4, 1},
    {opt::rebinding_time, "rebinding (T2) time", 4, 4, 1},
    {opt::client_id, "client identifier", 2, SIZE_MAX, 1},
    {opt::client_arch, "client system architecture", 2, SIZE_MAX, 2},
    {opt::client_machine_id, "client machine identifier", 1, SIZE_MAX, 1},
};

std::optional<ParseError> check_lengths(const Options& options) {
  for (const auto& rule : kLengthRules) {
    const auto value = options.get(rule.code);
    if (!value) continue;
    const std::size_t n = value->size();
    if (n < rule.min || n > rule.max || n % rule.multiple != 0) {
      std::string expected = rule.min == rule.max ? fmt::format("{}", rule.min)
                             : rule.multiple > 1
                                 ? fmt::format("a multiple of {} from {}", rule.multiple, rule.min)
                                 : fmt::format("at least {}", rule.min);
      return error(ParseErrc::bad_option, fmt::format("option {} ({}) has length {}, expected {}",
                                                      rule.code, rule.name, n, expected));
    }
  }
  return std::nullopt;
}

}  // namespace

std::string to_string(const Ipv4& ip) {
  return fmt::format("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
}

std::string_view to_string(MessageType type) noexcept {
  switch (type) {
    case MessageType::discover:
      return "DISCOVER";
    case MessageType::offer:
      return "OFFER";
    case MessageType::request:
      return "REQUEST";
    case MessageType::decline:
      return "DECLINE";
    case MessageType::ack:
      return "ACK";
    case MessageType::nak:
      return "NAK";
    case MessageType::release:
      return "RELEASE";
    case MessageType::inform:
      return "INFORM";
  }
  return "UNKNOWN";
}

std::string_view to_string(ParseErrc reason) noexcept {
  switch (reason) {
    case ParseErrc::truncated_header:
      return "truncated_header";
    case ParseErrc::too_long:
      return "too_long";
    case ParseErrc::bad_op:
      return "bad_op";
    case ParseErrc::bad_hlen:
      return "bad_hlen";
    case ParseErrc::bad_magic:
      return "bad_magic";
    case ParseErrc::option_overrun:
      return "option_overrun";
    case ParseErrc::bad_overload:
      return "bad_overload";
    case ParseErrc::missing_message_type:
      return "missing_message_type";
    case ParseErrc::duplicate_message_type:
      return "duplicate_message_type";
    case ParseErrc::bad_message_type:
      return "bad_message_type";
    case ParseErrc::bad_option:
      return "bad_option";
  }
  return "unknown";
}

Error to_error(const ParseError& e) {
  return Error{Errc::invalid_argument,
               fmt::format("malformed DHCP packet ({}): {}", to_string(e.reason), e.message)};
}

// --- Options ---

namespace {

template <class Entries>
auto lower_bound_code(Entries& entries, std::uint8_t code) {
  return std::lower_bound(entries.begin(), entries.end(), code,
                          [](const auto& e, std::uint8_t c) { return e.first < c; });
}

}  // namespace

std::optional<ByteView> Options::get(std::uint8_t code) const {
  const auto it = lower_bound_code(entries_, code);
  if (it == entries_.end() || it->first != code) return std::nullopt;
  return ByteView(it->second);
}

void Options::set(std::uint8_t code, ByteView value) {
  if (code == opt::pad || code == opt::end) return;
  const auto it = lower_bound_code(entries_, code);
  if (it != entries_.end() && it->first == code) {
    it->second.assign(value.begin(), value.end());
  } else {
    entries_.emplace(it, code, Bytes(value.begin(), value.end()));
  }
}

void Options::append(std::uint8_t code, ByteView value) {
  if (code == opt::pad || code == opt::end) return;
  const auto it = lower_bound_code(entries_, code);
  if (it != entries_.end() && it->first == code) {
    it->second.insert(it->second.end(), value.begin(), value.end());
  } else {
    entries_.emplace(it, code, Bytes(value.begin(), value.end()));
  }
}

void Options::erase(std::uint8_t code) {
  const auto it = lower_bound_code(entries_, code);
  if (it != entries_.end() && it->first == code) entries_.erase(it);
}

// --- Packet accessors ---

void Packet::set_broadcast(bool on) {
  flags = on ? static_cast<std::uint16_t>(flags | kBroadcastFlag)
             : static_cast<std::uint16_t>(flags & ~kBroadcastFlag);
}

ByteView Packet::hardware_address() const {
  return ByteView(chaddr.data(), std::min<std::size_t>(hlen, chaddr.size()));
}

std::string Packet::hardware_address_string() const {
  std::string out;
  for (const auto b : hardware_address()) {
    if (!out.empty()) out += ':';
    out += fmt::format("{:02x}", b);
  }
  return out;
}

std::optional<MessageType> Packet::message_type() const {
  const auto v = options.get(opt::message_type);
  if (!v || v->size() != 1 || (*v)[0] < 1 || (*v)[0] > 8) return std::nullopt;
  return static_cast<MessageType>((*v)[0]);
}

Bytes Packet::client_key() const {
  if (const auto id = client_id()) return Bytes(id->begin(), id->end());
  const auto hw = hardware_address();
  Bytes key;
  key.reserve(1 + hw.size());
  key.push_back(htype);
  key.insert(key.end(), hw.begin(), hw.end());
  return key;
}

std::optional<std::uint16_t> Packet::max_message_size() const {
  const auto v = options.get(opt::max_message_size);
  if (!v || v->size() != 2) return std::nullopt;
  return get16(*v, 0);
}

std::vector<std::uint16_t> Packet::client_arch() const {
  std::vector<std::uint16_t> out;
  const auto v = options.get(opt::client_arch);
  if (!v) return out;
  for (std::size_t i = 0; i + 1 < v->size(); i += 2)
    out.push_back(get16(*v, i));
  return out;
}

std::vector<std::string_view> Packet::user_classes() const {
  std::vector<std::string_view> out;
  const auto v = options.get(opt::user_class);
  if (!v || v->empty()) return out;
  const auto as_text = [](ByteView b) {
    return std::string_view(reinterpret_cast<const char*>(b.data()), b.size());
  };
  // RFC 3004: a sequence of (length ≥ 1, data) entries that covers the value exactly.
  std::size_t i = 0;
  while (i < v->size()) {
    const std::size_t n = (*v)[i];
    if (n == 0 || i + 1 + n > v->size()) {
      out.assign(1, as_text(*v));  // not RFC 3004: the plain form ("iPXE")
      return out;
    }
    out.push_back(as_text(v->subspan(i + 1, n)));
    i += 1 + n;
  }
  return out;
}

bool Packet::has_user_class(std::string_view name) const {
  const auto classes = user_classes();
  return std::find(classes.begin(), classes.end(), name) != classes.end();
}

std::optional<Ipv4> Packet::link_selection() const {
  const auto info = relay_agent_info();
  if (!info) return std::nullopt;
  const auto subs = parse_suboptions(*info);
  if (!subs) return std::nullopt;
  for (const auto& s : *subs) {
    if (s.code == relay_sub::link_selection && s.data.size() == 4) return get_ip(s.data, 0);
  }
  return std::nullopt;
}

std::optional<Ipv4> Packet::ipv4_option(std::uint8_t code) const {
  const auto v = options.get(code);
  if (!v || v->size() != 4) return std::nullopt;
  return get_ip(*v, 0);
}

std::vector<Ipv4> Packet::ipv4_list_option(std::uint8_t code) const {
  std::vector<Ipv4> out;
  const auto v = options.get(code);
  if (!v) return out;
  for (std::size_t i = 0; i + 3 < v->size(); i += 4)
    out.push_back(get_ip(*v, i));
  return out;
}

std::optional<std::uint32_t> Packet::u32_option(std::uint8_t code) const {
  const auto v = options.get(code);
  if (!v || v->size() != 4) return std::nullopt;
  return get32(*v, 0);
}

std::optional<std::string_view> Packet::string_option(std::uint8_t code) const {
  const auto v = options.get(code);
  if (!v) return std::nullopt;
  std::string_view s(reinterpret_cast<const char*>(v->data()), v->size());
  // RFC 2132 strings carry no NUL, but some clients terminate them anyway.
  while (!s.empty() && s.back() == '\0')
    s.remove_suffix(1);
  return s;
}

void Packet::set_message_type(MessageType type) {
  const std::uint8_t v = static_cast<std::uint8_t>(type);
  options.set(opt::message_type, ByteView(&v, 1));
}

void Packet::set_ipv4_option(std::uint8_t code, const Ipv4& ip) {
  options.set(code, ip);
}

void Packet::set_ipv4_list_option(std::uint8_t code, std::span<const Ipv4> ips) {
  Bytes v;
  v.reserve(ips.size() * 4);
  for (const auto& ip : ips)
    v.insert(v.end(), ip.begin(), ip.end());
  options.set(code, v);
}

void Packet::set_u32_option(std::uint8_t code, std::uint32_t value) {
  const std::array<std::uint8_t, 4> v = {
      static_cast<std::uint8_t>(value >> 24), static_cast<std::uint8_t>(value >> 16),
      static_cast<std::uint8_t>(value >> 8), static_cast<std::uint8_t>(value)};
  options.set(code, v);
}

void Packet::set_u16_option(std::uint8_t code, std::uint16_t value) {
  const std::array<std::uint8_t, 2> v = {static_cast<std::uint8_t>(value >> 8),
                                         static_cast<std::uint8_t>(value)};
  options.set(code, v);
}

void Packet::set_string_option(std::uint8_t code, std::string_view value) {
  options.set(code, ByteView(reinterpret_cast<const std::uint8_t*>(value.data()), value.size()));
}

// --- parse / serialize ---

std::optional<std::vector<SubOption>> parse_suboptions(ByteView data) {
  std::vector<SubOption> out;
  std::size_t i = 0;
  while (i < data.size()) {
    if (i + 1 >= data.size()) return std::nullopt;
    const std::size_t n = data[i + 1];
    if (i + 2 + n > data.size()) return std::nullopt;
    out.push_back({data[i], data.subspan(i + 2, n)});
    i += 2 + n;
  }
  return out;
}

ParseResult<Packet> parse(ByteView b, const ParseLimits& limits) {
  if (b.size() > limits.max_size) {
    return std::unexpected(
        error(ParseErrc::too_long,
              fmt::format("{} bytes, more than the limit of {}", b.size(), limits.max_size)));
  }
  if (b.size() < Packet::kMinSize) {
    return std::unexpected(error(ParseErrc::truncated_header,
                                 fmt::format("{} bytes, shorter than the {}-byte header and "
                                             "magic cookie",
                                             b.size(), Packet::kMinSize)));
  }
  Packet p;
  if (b[0] != 1 && b[0] != 2) {
    return std::unexpected(
        error(ParseErrc::bad_op, fmt::format("op is {}, expected 1 (request) or 2 (reply)", b[0])));
  }
  p.op = static_cast<Op>(b[0]);
  p.htype = b[kOffHtype];
  p.hlen = b[kOffHlen];
  if (p.hlen > p.chaddr.size()) {
    return std::unexpected(error(
        ParseErrc::bad_hlen, fmt::format("hlen is {}, more than the 16 bytes of chaddr", p.hlen)));
  }
  if (!std::equal(kMagic.begin(), kMagic.end(), b.begin() + kOffMagic)) {
    return std::unexpected(
        error(ParseErrc::bad_magic,
              fmt::format("magic cookie is {}.{}.{}.{}, expected 99.130.83.99", b[kOffMagic],
                          b[kOffMagic + 1], b[kOffMagic + 2], b[kOffMagic + 3])));
  }
  p.hops = b[kOffHops];
  p.xid = get32(b, kOffXid);
  p.secs = get16(b, kOffSecs);
  p.flags = get16(b, kOffFlags);
  p.ciaddr = get_ip(b, kOffCiaddr);
  p.yiaddr = get_ip(b, kOffYiaddr);
  p.siaddr = get_ip(b, kOffSiaddr);
  p.giaddr = get_ip(b, kOffGiaddr);
  std::copy_n(b.begin() + kOffChaddr, p.chaddr.size(), p.chaddr.begin());

  // Every option instance of every area, in RFC 3396's concatenation order: the options
  // field, then file, then sname (RFC 3396 §5, RFC 2131 §4.1).
  std::vector<Fragment> fragments;
  if (auto e = walk_options(b, kOffOptions, b.size(), "options", fragments)) {
    return std::unexpected(std::move(*e));
  }
  std::uint8_t overload = 0;
  std::size_t overload_count = 0;
  for (const auto& f : fragments) {
    if (f.code != opt::overload) continue;
    ++overload_count;
    if (f.length != 1 || overload_count > 1 || b[f.offset] < 1 || b[f.offset] > 3) {
      return std::unexpected(error(ParseErrc::bad_overload,
                                   "option 52 (overload) must appear once with one byte 1, 2 "
                                   "or 3"));
    }
    overload = b[f.offset];
  }
  const std::size_t main_count = fragments.size();
  if (overload & kOverloadFile) {
    if (auto e = walk_options(b, kOffFile, kOffFile + Packet::kFileSize, "file", fragments)) {
      return std::unexpected(std::move(*e));
    }
  } else {
    p.file = field_string(b, kOffFile, Packet::kFileSize);
  }
  if (overload & kOverloadSname) {
    if (auto e = walk_options(b, kOffSname, kOffSname + Packet::kSnameSize, "sname", fragments)) {
      return std::unexpected(std::move(*e));
    }
  } else {
    p.sname = field_string(b, kOffSname, Packet::kSnameSize);
  }
  for (std::size_t i = main_count; i < fragments.size(); ++i) {
    if (fragments[i].code == opt::overload) {
      return std::unexpected(error(ParseErrc::bad_overload,
                                   "option 52 (overload) inside an overloaded sname/file field"));
    }
  }

  const auto type_count = std::count_if(fragments.begin(), fragments.end(), [](const Fragment& f) {
    return f.code == opt::message_type;
  });
  if (type_count == 0) {
    return std::unexpected(
        error(ParseErrc::missing_message_type, "no option 53 (DHCP message type)"));
  }
  if (type_count > 1) {
    return std::unexpected(
        error(ParseErrc::duplicate_message_type,
              fmt::format("option 53 (DHCP message type) appears {} times", type_count)));
  }

  // Concatenate instances of the same code (RFC 3396), keeping their order of appearance.
  std::stable_sort(fragments.begin(), fragments.end(),
                   [](const Fragment& x, const Fragment& y) { return x.code < y.code; });
  for (const auto& f : fragments) {
    if (f.code == opt::overload) continue;  // consumed: serialize never overloads
    p.options.append(f.code, b.subspan(f.offset, f.length));
  }

  const auto type = *p.options.get(opt::message_type);
  if (type.size() != 1 || type[0] < 1 || type[0] > 8) {
    return std::unexpected(error(
        ParseErrc::bad_message_type,
        type.size() != 1
            ? fmt::format("option 53 (DHCP message type) has length {}, expected 1", type.size())
            : fmt::format("option 53 (DHCP message type) is {}, expected 1..8", type[0])));
  }
  if (auto e = check_lengths(p.options)) return std::unexpected(std::move(*e));
  return p;
}

namespace {

void emit_option(Bytes& out, std::uint8_t code, const Bytes& value) {
  if (value.empty()) {
    out.push_back(code);
    out.push_back(0);
    return;
  }
  for (std::size_t at = 0; at < value.size(); at += kMaxOptionChunk) {
    const std::size_t n = std::min(kMaxOptionChunk, value.size() - at);
    out.push_back(code);
    out.push_back(static_cast<std::uint8_t>(n));
    out.insert(out.end(), value.begin() + static_cast<std::ptrdiff_t>(at),
               value.begin() + static_cast<std::ptrdiff_t>(at + n));
  }
}

}  // namespace

Bytes serialize(const Packet& p) {
  std::size_t options_size = 1;  // END
  for (const auto& [code, value] : p.options.entries()) {
    options_size += value.size() + 2 * std::max<std::size_t>(1, (value.size() + 254) / 255);
  }
  Bytes out(kOffOptions, 0);
  out.reserve(std::max(Packet::kBootpMinSize, kOffOptions + options_size));
  out[0] = static_cast<std::uint8_t>(p.op);
  out[kOffHtype] = p.htype;
  out[kOffHlen] = p.hlen;
  out[kOffHops] = p.hops;
  put32(out, kOffXid, p.xid);
  put16(out, kOffSecs, p.secs);
  put16(out, kOffFlags, p.flags);
  put_ip(out, kOffCiaddr, p.ciaddr);
  put_ip(out, kOffYiaddr, p.yiaddr);
  put_ip(out, kOffSiaddr, p.siaddr);
  put_ip(out, kOffGiaddr, p.giaddr);
  std::copy(p.chaddr.begin(), p.chaddr.end(), out.begin() + kOffChaddr);
  std::copy_n(p.sname.begin(), std::min(p.sname.size(), Packet::kSnameSize),
              out.begin() + kOffSname);
  std::copy_n(p.file.begin(), std::min(p.file.size(), Packet::kFileSize), out.begin() + kOffFile);
  std::copy(kMagic.begin(), kMagic.end(), out.begin() + kOffMagic);

  // 53 first (what every implementation looks at first), 82 last (RFC 3046 §2.1), the rest
  // by code: the bytes depend only on the content, not on how the packet was built.
  const auto& entries = p.options.entries();
  for (const auto& [code, value] : entries) {
    if (code == opt::message_type) emit_option(out, code, value);
  }
  for (const auto& [code, value] : entries) {
    if (code != opt::message_type && code != opt::relay_agent_info) emit_option(out, code, value);
  }
  for (const auto& [code, value] : entries) {
    if (code == opt::relay_agent_info) emit_option(out, code, value);
  }
  out.push_back(opt::end);
  if (out.size() < Packet::kBootpMinSize) out.resize(Packet::kBootpMinSize, 0);
  return out;
}

}  // namespace neco::netboot
