// TFTP packets (RFC 1350) with option extension (RFC 2347) and the blksize (RFC 2348), timeout
// and tsize (RFC 2349) options: a bounds-checked parser that says precisely why it dropped a
// packet, a serializer, and the server side of option negotiation. Pure code: no sockets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::netboot::tftp {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

enum class Opcode : std::uint16_t { rrq = 1, wrq = 2, data = 3, ack = 4, error = 5, oack = 6 };

// Upper-case RFC name, e.g. "RRQ".
std::string_view to_string(Opcode op) noexcept;

// Transfer modes of RFC 1350 (matched case-insensitively on the wire).
enum class Mode : std::uint8_t { netascii, octet, mail };

// Lower-case wire name, e.g. "octet".
std::string_view to_string(Mode mode) noexcept;

// ERROR packet codes (RFC 1350 §5, RFC 2347 for 8).
enum class ErrorCode : std::uint16_t {
  not_defined = 0,  // see the message
  file_not_found = 1,
  access_violation = 2,
  disk_full = 3,
  illegal_operation = 4,
  unknown_tid = 5,
  file_exists = 6,
  no_such_user = 7,
  option_refused = 8,  // RFC 2347: option negotiation refused
};

// The option limits of RFC 2348 / 2349.
inline constexpr std::uint16_t kDefaultBlksize = 512;
inline constexpr std::uint16_t kMinBlksize = 8;
inline constexpr std::uint16_t kMaxBlksize = 65464;
inline constexpr unsigned kMinTimeout = 1;
inline constexpr unsigned kMaxTimeout = 255;
inline constexpr std::size_t kDataHeaderSize = 4;  // opcode + block number

// Why the parser dropped a packet: one value per counter the server keeps.
enum class ParseErrc : std::uint8_t {
  truncated,            // shorter than its opcode's fixed part (2 bytes, 4 for DATA/ACK/ERROR)
  too_long,             // a request over ParseLimits::max_request_size, or anything over max_size
  bad_opcode,           // opcode not 1..6
  unterminated_string,  // filename, mode or an option name/value without its NUL
  empty_filename,       // RRQ/WRQ with an empty filename
  bad_mode,             // mode not netascii, octet or mail
  bad_option,           // an option with an empty name, or a name without a value
  duplicate_option,     // the same option twice (names compare case-insensitively)
  bad_option_value,     // blksize not a number >= 8, timeout not 1..255, tsize not a number
};

// Stable lower_snake name of a reason, used as a metric label.
std::string_view to_string(ParseErrc reason) noexcept;

struct ParseError {
  ParseErrc reason = ParseErrc::truncated;
  std::string message;  // names the field or option and the values found
};

// The agent-wide error type for callers that do not count by reason.
Error to_error(const ParseError& e);

template <class T>
using ParseResult = std::expected<T, ParseError>;

struct ParseLimits {
  // RFC 2347 §"Packet Formats": a request with its options must fit in 512 octets. Firmware
  // never sends more, and the cap bounds the work done per request.
  std::size_t max_request_size = 512;
  // The largest DATA packet: the 4-byte header plus the largest blksize.
  std::size_t max_size = kDataHeaderSize + kMaxBlksize;
};

// One option of a request or OACK: the name as sent (its case kept), the value string.
struct Option {
  std::string name;
  std::string value;
  friend bool operator==(const Option&, const Option&) = default;
};

// RRQ or WRQ.
struct Request {
  Opcode opcode = Opcode::rrq;  // rrq or wrq
  std::string filename;
  Mode mode = Mode::octet;
  std::vector<Option> options;  // in the order received
  friend bool operator==(const Request&, const Request&) = default;

  // The value of an option, its name matched case-insensitively.
  std::optional<std::string_view> option(std::string_view name) const;
};

struct Data {
  std::uint16_t block = 0;
  Bytes payload;
  friend bool operator==(const Data&, const Data&) = default;
};

struct Ack {
  std::uint16_t block = 0;
  friend bool operator==(const Ack&, const Ack&) = default;
};

struct ErrorPacket {
  std::uint16_t code = 0;  // an ErrorCode; other values are kept as received
  std::string message;
  friend bool operator==(const ErrorPacket&, const ErrorPacket&) = default;
};

struct OptionAck {
  std::vector<Option> options;
  friend bool operator==(const OptionAck&, const OptionAck&) = default;
};

using Packet = std::variant<Request, Data, Ack, ErrorPacket, OptionAck>;

// The opcode a packet serializes with.
Opcode opcode_of(const Packet& packet);

// Parse one UDP payload. Strings must end in NUL, except an ERROR's message: a peer that
// forgot it still means "stop", so the rest of the packet is taken as the message. NUL padding
// after a request's or OACK's last string, and an ACK's bytes after the block number, are
// ignored. Known options (blksize, timeout, tsize) must have
// valid values; unknown ones are kept as they are (the server ignores them, RFC 2347).
ParseResult<Packet> parse(ByteView bytes, const ParseLimits& limits = {});

// Encode a packet. Strings are written up to their first NUL, which cannot be sent.
Bytes serialize(const Packet& packet);

// Writes a DATA header (opcode 3, block) into out[0..4): the server reads file blocks straight
// into the bytes after it.
void write_data_header(std::span<std::uint8_t, kDataHeaderSize> out, std::uint16_t block);

// What the server grants.
struct NegotiationLimits {
  // 1500-byte Ethernet MTU minus the IPv4 (20), UDP (8) and TFTP (4) headers: the largest
  // block that is never fragmented on an ordinary link (firmware often cannot reassemble).
  std::uint16_t max_blksize = 1468;
  // Largest client `timeout` accepted (seconds). RFC 2349 lets the server only echo or omit the
  // option, so a larger one is left out of the OACK and the server's own timeout applies: a
  // request must not hold a transfer slot for (retries + 1) × 255 seconds.
  unsigned max_timeout = kMaxTimeout;
};

struct Negotiation {
  std::uint16_t blksize = kDefaultBlksize;
  std::optional<unsigned> timeout_seconds;  // the client's retransmission timeout, if it asked
  std::vector<Option> reply;                // the OACK's options; empty: answer with DATA 1
};

// The server side of RFC 2347: blksize is granted up to limits.max_blksize, timeout echoed
// (when within limits.max_timeout),
// tsize answered with file_size (omitted when unknown), unknown options ignored. The reply
// keeps the client's order and spelling of the option names. Fails like parse() on an invalid
// value of a known option.
ParseResult<Negotiation> negotiate(const Request& request, const NegotiationLimits& limits,
                                   std::optional<std::uint64_t> file_size);

}  // namespace neco::netboot::tftp
