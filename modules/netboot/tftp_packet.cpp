#include "modules/netboot/tftp_packet.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

namespace neco::netboot::tftp {

namespace {

constexpr std::size_t kOpcodeSize = 2;

ParseError error(ParseErrc reason, std::string message) {
  return ParseError{reason, std::move(message)};
}

std::uint16_t get16(ByteView b, std::size_t at) {
  return static_cast<std::uint16_t>((b[at] << 8) | b[at + 1]);
}

void put16(Bytes& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

// A string up to its first NUL, then the NUL (a string cannot carry one).
void put_string(Bytes& out, std::string_view s) {
  s = s.substr(0, s.find('\0'));
  out.insert(out.end(), s.begin(), s.end());
  out.push_back(0);
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(),
                                            [](char x, char y) { return lower(x) == lower(y); });
}

// Printable form of a value for messages: at most 32 characters, control bytes escaped.
std::string quoted(std::string_view s) {
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < 32; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 32) out += "...";
  out += "'";
  return out;
}

// Reads NUL-terminated strings one after the other.
class StringReader {
 public:
  StringReader(ByteView bytes, std::size_t at) : bytes_(bytes), at_(at) {}
  bool done() const { return at_ >= bytes_.size(); }
  // Only NUL bytes remain: padding some clients add after the last string.
  bool rest_is_padding() const {
    const auto rest = bytes_.subspan(at_);
    return std::all_of(rest.begin(), rest.end(), [](std::uint8_t b) { return b == 0; });
  }
  std::size_t offset() const { return at_; }
  // The next string, or nullopt when it has no NUL before the end.
  std::optional<std::string> next() {
    const auto rest = bytes_.subspan(at_);
    const auto nul = std::find(rest.begin(), rest.end(), std::uint8_t{0});
    if (nul == rest.end()) return std::nullopt;
    std::string s(rest.begin(), nul);
    at_ += s.size() + 1;
    return s;
  }

 private:
  ByteView bytes_;
  std::size_t at_;
};

ParseError unterminated(std::string_view what, std::size_t offset) {
  return error(ParseErrc::unterminated_string,
               fmt::format("{} at offset {} has no terminating NUL", what, offset));
}

// Decimal digits only; saturates instead of overflowing. Nullopt when empty or not a number.
std::optional<std::uint64_t> parse_decimal(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) {
      v = std::numeric_limits<std::uint64_t>::max();
    } else {
      v = v * 10 + digit;
    }
  }
  return v;
}

// The values of the options the server interprets; nullopt when absent.
struct KnownOptions {
  std::optional<std::uint64_t> blksize;
  std::optional<std::uint64_t> timeout;
  std::optional<std::uint64_t> tsize;
};

ParseResult<KnownOptions> check_known_options(const std::vector<Option>& options) {
  KnownOptions known;
  for (const auto& o : options) {
    const auto value = parse_decimal(o.value);
    if (iequals(o.name, "blksize")) {
      if (!value || *value < kMinBlksize) {
        return std::unexpected(error(ParseErrc::bad_option_value,
                                     fmt::format("option blksize is {}, expected a number from {}",
                                                 quoted(o.value), kMinBlksize)));
      }
      known.blksize = value;
    } else if (iequals(o.name, "timeout")) {
      if (!value || *value < kMinTimeout || *value > kMaxTimeout) {
        return std::unexpected(error(ParseErrc::bad_option_value,
                                     fmt::format("option timeout is {}, expected {}..{} seconds",
                                                 quoted(o.value), kMinTimeout, kMaxTimeout)));
      }
      known.timeout = value;
    } else if (iequals(o.name, "tsize")) {
      if (!value) {
        return std::unexpected(
            error(ParseErrc::bad_option_value,
                  fmt::format("option tsize is {}, expected a number", quoted(o.value))));
      }
      known.tsize = value;
    }
  }
  return known;
}

// Name/value pairs up to the end of the packet.
ParseResult<std::vector<Option>> parse_options(StringReader& reader) {
  std::vector<Option> options;
  while (!reader.done()) {
    if (reader.rest_is_padding()) break;
    const std::size_t name_at = reader.offset();
    auto name = reader.next();
    if (!name) return std::unexpected(unterminated("option name", name_at));
    if (name->empty()) {
      return std::unexpected(
          error(ParseErrc::bad_option, fmt::format("empty option name at offset {}", name_at)));
    }
    if (reader.done()) {
      return std::unexpected(
          error(ParseErrc::bad_option, fmt::format("option {} has no value", quoted(*name))));
    }
    const std::size_t value_at = reader.offset();
    auto value = reader.next();
    if (!value) {
      return std::unexpected(
          unterminated(fmt::format("value of option {}", quoted(*name)), value_at));
    }
    for (const auto& seen : options) {
      if (iequals(seen.name, *name)) {
        return std::unexpected(error(ParseErrc::duplicate_option,
                                     fmt::format("option {} appears twice (as {} and {})",
                                                 quoted(*name), quoted(seen.name), quoted(*name))));
      }
    }
    options.push_back({std::move(*name), std::move(*value)});
  }
  return options;
}

ParseResult<Packet> parse_request(ByteView bytes, Opcode op) {
  StringReader reader(bytes, kOpcodeSize);
  auto filename = reader.next();
  if (!filename) return std::unexpected(unterminated("filename", kOpcodeSize));
  if (filename->empty()) {
    return std::unexpected(
        error(ParseErrc::empty_filename, fmt::format("{} with an empty filename", to_string(op))));
  }
  const std::size_t mode_at = reader.offset();
  auto mode_text = reader.next();
  if (!mode_text) return std::unexpected(unterminated("mode", mode_at));
  Request request;
  request.opcode = op;
  request.filename = std::move(*filename);
  if (iequals(*mode_text, "octet")) {
    request.mode = Mode::octet;
  } else if (iequals(*mode_text, "netascii")) {
    request.mode = Mode::netascii;
  } else if (iequals(*mode_text, "mail")) {
    request.mode = Mode::mail;
  } else {
    return std::unexpected(
        error(ParseErrc::bad_mode,
              fmt::format("mode {}, expected netascii, octet or mail", quoted(*mode_text))));
  }
  auto options = parse_options(reader);
  if (!options) return std::unexpected(std::move(options.error()));
  if (auto known = check_known_options(*options); !known) {
    return std::unexpected(std::move(known.error()));
  }
  request.options = std::move(*options);
  return request;
}

}  // namespace

std::string_view to_string(Opcode op) noexcept {
  switch (op) {
    case Opcode::rrq:
      return "RRQ";
    case Opcode::wrq:
      return "WRQ";
    case Opcode::data:
      return "DATA";
    case Opcode::ack:
      return "ACK";
    case Opcode::error:
      return "ERROR";
    case Opcode::oack:
      return "OACK";
  }
  return "UNKNOWN";
}

std::string_view to_string(Mode mode) noexcept {
  switch (mode) {
    case Mode::netascii:
      return "netascii";
    case Mode::octet:
      return "octet";
    case Mode::mail:
      return "mail";
  }
  return "unknown";
}

std::string_view to_string(ParseErrc reason) noexcept {
  switch (reason) {
    case ParseErrc::truncated:
      return "truncated";
    case ParseErrc::too_long:
      return "too_long";
    case ParseErrc::bad_opcode:
      return "bad_opcode";
    case ParseErrc::unterminated_string:
      return "unterminated_string";
    case ParseErrc::empty_filename:
      return "empty_filename";
    case ParseErrc::bad_mode:
      return "bad_mode";
    case ParseErrc::bad_option:
      return "bad_option";
    case ParseErrc::duplicate_option:
      return "duplicate_option";
    case ParseErrc::bad_option_value:
      return "bad_option_value";
  }
  return "unknown";
}

Error to_error(const ParseError& e) {
  return Error{Errc::invalid_argument,
               fmt::format("malformed TFTP packet ({}): {}", to_string(e.reason), e.message)};
}

std::optional<std::string_view> Request::option(std::string_view name) const {
  for (const auto& o : options) {
    if (iequals(o.name, name)) return std::string_view(o.value);
  }
  return std::nullopt;
}

Opcode opcode_of(const Packet& packet) {
  struct Visitor {
    Opcode operator()(const Request& r) const { return r.opcode; }
    Opcode operator()(const Data&) const { return Opcode::data; }
    Opcode operator()(const Ack&) const { return Opcode::ack; }
    Opcode operator()(const ErrorPacket&) const { return Opcode::error; }
    Opcode operator()(const OptionAck&) const { return Opcode::oack; }
  };
  return std::visit(Visitor{}, packet);
}

ParseResult<Packet> parse(ByteView bytes, const ParseLimits& limits) {
  if (bytes.size() < kOpcodeSize) {
    return std::unexpected(error(ParseErrc::truncated,
                                 fmt::format("{} bytes, too short for an opcode", bytes.size())));
  }
  if (bytes.size() > limits.max_size) {
    return std::unexpected(error(
        ParseErrc::too_long, fmt::format("{} bytes, more than {}", bytes.size(), limits.max_size)));
  }
  const std::uint16_t raw = get16(bytes, 0);
  if (raw < static_cast<std::uint16_t>(Opcode::rrq) ||
      raw > static_cast<std::uint16_t>(Opcode::oack)) {
    return std::unexpected(
        error(ParseErrc::bad_opcode, fmt::format("opcode {}, expected 1 (RRQ) to 6 (OACK)", raw)));
  }
  const auto op = static_cast<Opcode>(raw);
  const auto need_header = [&]() -> std::optional<ParseError> {
    if (bytes.size() >= kDataHeaderSize) return std::nullopt;
    return error(ParseErrc::truncated, fmt::format("{} of {} bytes, expected at least {}",
                                                   to_string(op), bytes.size(), kDataHeaderSize));
  };
  switch (op) {
    case Opcode::rrq:
    case Opcode::wrq:
      if (bytes.size() > limits.max_request_size) {
        return std::unexpected(
            error(ParseErrc::too_long, fmt::format("{} of {} bytes, more than {}", to_string(op),
                                                   bytes.size(), limits.max_request_size)));
      }
      return parse_request(bytes, op);
    case Opcode::data: {
      if (auto e = need_header()) return std::unexpected(std::move(*e));
      const auto payload = bytes.subspan(kDataHeaderSize);
      return Data{get16(bytes, 2), Bytes(payload.begin(), payload.end())};
    }
    case Opcode::ack:
      if (auto e = need_header()) return std::unexpected(std::move(*e));
      return Ack{get16(bytes, 2)};
    case Opcode::error: {
      if (auto e = need_header()) return std::unexpected(std::move(*e));
      const auto rest = bytes.subspan(kDataHeaderSize);
      const auto nul = std::find(rest.begin(), rest.end(), std::uint8_t{0});
      return ErrorPacket{get16(bytes, 2), std::string(rest.begin(), nul)};
    }
    case Opcode::oack: {
      StringReader reader(bytes, kOpcodeSize);
      auto options = parse_options(reader);
      if (!options) return std::unexpected(std::move(options.error()));
      if (auto known = check_known_options(*options); !known) {
        return std::unexpected(std::move(known.error()));
      }
      return OptionAck{std::move(*options)};
    }
  }
  return std::unexpected(error(ParseErrc::bad_opcode, fmt::format("opcode {}", raw)));
}

Bytes serialize(const Packet& packet) {
  Bytes out;
  put16(out, static_cast<std::uint16_t>(opcode_of(packet)));
  struct Visitor {
    Bytes& out;
    void operator()(const Request& r) const {
      put_string(out, r.filename);
      put_string(out, to_string(r.mode));
      for (const auto& o : r.options) {
        put_string(out, o.name);
        put_string(out, o.value);
      }
    }
    void operator()(const Data& d) const {
      put16(out, d.block);
      out.insert(out.end(), d.payload.begin(), d.payload.end());
    }
    void operator()(const Ack& a) const { put16(out, a.block); }
    void operator()(const ErrorPacket& e) const {
      put16(out, e.code);
      put_string(out, e.message);
    }
    void operator()(const OptionAck& o) const {
      for (const auto& opt : o.options) {
        put_string(out, opt.name);
        put_string(out, opt.value);
      }
    }
  };
  std::visit(Visitor{out}, packet);
  return out;
}

void write_data_header(std::span<std::uint8_t, kDataHeaderSize> out, std::uint16_t block) {
  out[0] = 0;
  out[1] = static_cast<std::uint8_t>(Opcode::data);
  out[2] = static_cast<std::uint8_t>(block >> 8);
  out[3] = static_cast<std::uint8_t>(block);
}

ParseResult<Negotiation> negotiate(const Request& request, const NegotiationLimits& limits,
                                   std::optional<std::uint64_t> file_size) {
  auto known = check_known_options(request.options);
  if (!known) return std::unexpected(std::move(known.error()));
  Negotiation n;
  const std::uint64_t max_blksize =
      std::clamp<std::uint64_t>(limits.max_blksize, kMinBlksize, kMaxBlksize);
  for (const auto& o : request.options) {
    if (iequals(o.name, "blksize")) {
      n.blksize = static_cast<std::uint16_t>(std::min(*known->blksize, max_blksize));
      n.reply.push_back({o.name, std::to_string(n.blksize)});
    } else if (iequals(o.name, "timeout") && *known->timeout <= limits.max_timeout) {
      n.timeout_seconds = static_cast<unsigned>(*known->timeout);
      n.reply.push_back({o.name, std::to_string(*n.timeout_seconds)});
    } else if (iequals(o.name, "tsize") && file_size) {
      n.reply.push_back({o.name, std::to_string(*file_size)});
    }
  }
  return n;
}

}  // namespace neco::netboot::tftp
