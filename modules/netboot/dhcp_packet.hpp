// DHCPv4 messages (RFC 2131/2132): a bounds-checked parser that says precisely why it dropped
// a packet, a deterministic serializer, and typed accessors for the options a boot server
// reads and writes. Pure code: no sockets, no allocation beyond what the input's size bounds.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::netboot {

using Ipv4 = std::array<std::uint8_t, 4>;
using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

// Dotted quad, e.g. "10.0.0.1".
std::string to_string(const Ipv4& ip);

// Option codes the codec interprets or orders specially.
namespace opt {
inline constexpr std::uint8_t pad = 0;
inline constexpr std::uint8_t subnet_mask = 1;
inline constexpr std::uint8_t router = 3;
inline constexpr std::uint8_t dns_servers = 6;
inline constexpr std::uint8_t hostname = 12;
inline constexpr std::uint8_t domain_name = 15;
inline constexpr std::uint8_t vendor_specific = 43;
inline constexpr std::uint8_t requested_ip = 50;
inline constexpr std::uint8_t lease_time = 51;
inline constexpr std::uint8_t overload = 52;
inline constexpr std::uint8_t message_type = 53;
inline constexpr std::uint8_t server_id = 54;
inline constexpr std::uint8_t parameter_request_list = 55;
inline constexpr std::uint8_t max_message_size = 57;
inline constexpr std::uint8_t renewal_time = 58;    // T1
inline constexpr std::uint8_t rebinding_time = 59;  // T2
inline constexpr std::uint8_t vendor_class = 60;
inline constexpr std::uint8_t client_id = 61;
inline constexpr std::uint8_t tftp_server_name = 66;
inline constexpr std::uint8_t bootfile_name = 67;
inline constexpr std::uint8_t user_class = 77;
inline constexpr std::uint8_t relay_agent_info = 82;
inline constexpr std::uint8_t client_arch = 93;
inline constexpr std::uint8_t client_ndi = 94;
inline constexpr std::uint8_t client_machine_id = 97;
inline constexpr std::uint8_t ipxe_encapsulated = 175;
inline constexpr std::uint8_t end = 255;
}  // namespace opt

// Relay agent information sub-options (RFC 3046, RFC 3527).
namespace relay_sub {
inline constexpr std::uint8_t circuit_id = 1;
inline constexpr std::uint8_t remote_id = 2;
inline constexpr std::uint8_t link_selection = 5;
}  // namespace relay_sub

enum class Op : std::uint8_t { boot_request = 1, boot_reply = 2 };

// RFC 2132 §9.6. Other values (FORCERENEW, leasequery, …) are never sent to a boot server
// by a client and are rejected by the parser.
enum class MessageType : std::uint8_t {
  discover = 1,
  offer = 2,
  request = 3,
  decline = 4,
  ack = 5,
  nak = 6,
  release = 7,
  inform = 8,
};

// Upper-case RFC name, e.g. "DISCOVER".
std::string_view to_string(MessageType type) noexcept;

// Why the parser dropped a packet: one value per counter the server keeps.
enum class ParseErrc : std::uint8_t {
  truncated_header,        // shorter than the fixed header plus the magic cookie (240 bytes)
  too_long,                // longer than ParseLimits::max_size
  bad_op,                  // op is neither BOOTREQUEST (1) nor BOOTREPLY (2)
  bad_hlen,                // hardware address length above the 16 bytes chaddr holds
  bad_magic,               // not the DHCP magic cookie 99.130.83.99 (plain BOOTP or garbage)
  option_overrun,          // an option's length byte (or the length byte itself) runs past its area
  bad_overload,            // option 52 malformed, or present inside sname/file
  missing_message_type,    // no option 53
  duplicate_message_type,  // option 53 more than once
  bad_message_type,        // option 53 not one byte, or not a DHCP message type 1..8
  bad_option,              // a typed option with an impossible length (e.g. option 50 of 3 bytes)
};

// Stable lower_snake name of a reason, used as a metric label.
std::string_view to_string(ParseErrc reason) noexcept;

struct ParseError {
  ParseErrc reason = ParseErrc::truncated_header;
  std::string message;  // names the offset or option and the values found
};

// The agent-wide error type for callers that do not count by reason.
Error to_error(const ParseError& e);

template <class T>
using ParseResult = std::expected<T, ParseError>;

struct ParseLimits {
  // 1500-byte Ethernet MTU minus the IPv4 (20) and UDP (8) headers: the largest message that
  // arrives unfragmented on an ordinary link. Clients must not exceed 576 bytes unless the
  // server told them otherwise (option 57 goes the other way), firmware never does, and a
  // larger datagram is reassembled fragments — a shape of flood, not of a boot request.
  // Capping it also bounds the work done per packet.
  std::size_t max_size = 1472;
};

// One code/length/value item inside an encapsulating option (82, 175).
struct SubOption {
  std::uint8_t code = 0;
  ByteView data;
};

// The options of one message: each code once, with its value after RFC 3396 concatenation,
// kept sorted by code so lookups are binary searches and serialization order is fixed.
class Options {
 public:
  // Value of a code, or nullopt when absent. The span stays valid until the next mutation.
  std::optional<ByteView> get(std::uint8_t code) const;
  bool has(std::uint8_t code) const { return get(code).has_value(); }
  // Set (replace) a value; PAD and END are not options and are ignored.
  void set(std::uint8_t code, ByteView value);
  // Append to an existing value (RFC 3396 concatenation) or create it.
  void append(std::uint8_t code, ByteView value);
  void erase(std::uint8_t code);
  std::size_t size() const { return entries_.size(); }
  // Entries in code order.
  const std::vector<std::pair<std::uint8_t, Bytes>>& entries() const { return entries_; }
  friend bool operator==(const Options&, const Options&) = default;

 private:
  std::vector<std::pair<std::uint8_t, Bytes>> entries_;
};

// One DHCP message. Header fields are public; options go through typed accessors.
struct Packet {
  static constexpr std::size_t kHeaderSize = 236;  // fixed BOOTP header, up to `file`
  static constexpr std::size_t kMinSize = 240;     // header + magic cookie
  static constexpr std::size_t kBootpMinSize = 300;
  static constexpr std::size_t kSnameSize = 64;
  static constexpr std::size_t kFileSize = 128;
  static constexpr std::uint16_t kBroadcastFlag = 0x8000;

  Op op = Op::boot_request;
  std::uint8_t htype = 1;  // 1 = Ethernet
  std::uint8_t hlen = 6;
  std::uint8_t hops = 0;
  std::uint32_t xid = 0;
  std::uint16_t secs = 0;
  std::uint16_t flags = 0;  // only kBroadcastFlag is defined; other bits are kept as received
  Ipv4 ciaddr{};
  Ipv4 yiaddr{};
  Ipv4 siaddr{};  // "next server": the TFTP server for a boot file in `file`
  Ipv4 giaddr{};
  std::array<std::uint8_t, 16> chaddr{};
  // Up to the first NUL. Empty when the field carried options (overload); serialize truncates
  // to 64 / 128 bytes.
  std::string sname;
  std::string file;
  Options options;

  friend bool operator==(const Packet&, const Packet&) = default;

  bool broadcast() const { return (flags & kBroadcastFlag) != 0; }
  void set_broadcast(bool on);
  // chaddr's first hlen bytes (at most 16).
  ByteView hardware_address() const;
  // "aa:bb:cc:dd:ee:ff" of hardware_address().
  std::string hardware_address_string() const;

  // --- typed reads; nullopt when absent. Parsed packets have checked lengths. ---
  std::optional<MessageType> message_type() const;                                     // 53
  std::optional<Ipv4> requested_ip() const { return ipv4_option(opt::requested_ip); }  // 50
  std::optional<Ipv4> server_id() const { return ipv4_option(opt::server_id); }        // 54
  std::optional<std::uint32_t> lease_time() const { return u32_option(opt::lease_time); }
  std::optional<std::uint32_t> renewal_time() const { return u32_option(opt::renewal_time); }
  std::optional<std::uint32_t> rebinding_time() const { return u32_option(opt::rebinding_time); }
  std::optional<ByteView> client_id() const { return options.get(opt::client_id); }  // 61
  // The client's identity for leases: option 61 when present, else htype followed by the
  // hardware address. Most clients put exactly htype+MAC in option 61, so both keys agree.
  Bytes client_key() const;
  std::optional<ByteView> parameter_request_list() const {
    return options.get(opt::parameter_request_list);
  }
  std::optional<std::uint16_t> max_message_size() const;  // 57
  std::optional<std::string_view> vendor_class() const { return string_option(opt::vendor_class); }
  // Option 93: the client's architectures, most preferred first (RFC 4578).
  std::vector<std::uint16_t> client_arch() const;
  // Option 97: the type byte (0 = GUID) followed by the identifier.
  std::optional<ByteView> client_machine_id() const { return options.get(opt::client_machine_id); }
  // Option 77 in RFC 3004 form (length-prefixed entries), or — when the value is not
  // well-formed RFC 3004 — the whole value as one entry, which is how iPXE sends "iPXE".
  std::vector<std::string_view> user_classes() const;
  bool has_user_class(std::string_view name) const;
  // Option 175: iPXE's encapsulated options, raw. Its presence means the client runs iPXE.
  std::optional<ByteView> ipxe_options() const { return options.get(opt::ipxe_encapsulated); }
  // Option 82, raw: a server echoes it unchanged in its reply.
  std::optional<ByteView> relay_agent_info() const { return options.get(opt::relay_agent_info); }
  // Sub-option 5 of option 82 (RFC 3527): the subnet to allocate from instead of giaddr's.
  std::optional<Ipv4> link_selection() const;
  std::optional<Ipv4> subnet_mask() const { return ipv4_option(opt::subnet_mask); }     // 1
  std::vector<Ipv4> routers() const { return ipv4_list_option(opt::router); }           // 3
  std::vector<Ipv4> dns_servers() const { return ipv4_list_option(opt::dns_servers); }  // 6
  std::optional<std::string_view> domain_name() const { return string_option(opt::domain_name); }
  std::optional<std::string_view> hostname() const { return string_option(opt::hostname); }
  std::optional<std::string_view> tftp_server_name() const {
    return string_option(opt::tftp_server_name);
  }
  std::optional<std::string_view> bootfile_name() const {
    return string_option(opt::bootfile_name);
  }

  // --- typed writes, for building replies ---
  void set_message_type(MessageType type);
  void set_ipv4_option(std::uint8_t code, const Ipv4& ip);
  void set_ipv4_list_option(std::uint8_t code, std::span<const Ipv4> ips);
  void set_u32_option(std::uint8_t code, std::uint32_t value);
  void set_u16_option(std::uint8_t code, std::uint16_t value);
  void set_string_option(std::uint8_t code, std::string_view value);

  // Generic reads the typed ones are built on.
  std::optional<Ipv4> ipv4_option(std::uint8_t code) const;
  std::vector<Ipv4> ipv4_list_option(std::uint8_t code) const;
  std::optional<std::uint32_t> u32_option(std::uint8_t code) const;
  std::optional<std::string_view> string_option(std::uint8_t code) const;
};

// Parse one UDP payload. On success the options are concatenated (RFC 3396), sname/file
// options are folded in when option 52 says so (RFC 2132 §9.3; option 52 itself is consumed),
// and the typed options have valid lengths.
ParseResult<Packet> parse(ByteView bytes, const ParseLimits& limits = {});

// Encode a message: header, cookie, option 53 first, the rest by ascending code with option
// 82 last (RFC 3046 §2.1), values over 255 bytes split into consecutive instances (RFC 3396),
// END, then zero padding up to the 300-byte BOOTP minimum. Does not overload sname/file.
Bytes serialize(const Packet& packet);

// The sub-options of an encapsulating option (82, 175): code/length/value triplets, every
// code including 0 and 255 taken as a triplet. Nullopt when one runs past the end.
std::optional<std::vector<SubOption>> parse_suboptions(ByteView data);

}  // namespace neco::netboot
