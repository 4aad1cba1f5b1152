#include "agent/store/etcd_codec.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <stdexcept>

namespace neco::store::etcd {
namespace {

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

constexpr std::array<int8_t, 256> make_decode_table() {
  std::array<int8_t, 256> t{};
  for (auto& v : t)
    v = -1;
  for (size_t i = 0; i < kAlphabet.size(); ++i)
    t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}
constexpr auto kDecode = make_decode_table();

[[noreturn]] void malformed(std::string what) {
  throw std::runtime_error(std::move(what));
}

// The bytes of a base64 field, "" when absent (the gateway omits empty values).
std::string bytes_field(const Json& object, std::string_view name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return {};
  if (!it->is_string()) malformed(fmt::format("field '{}' is not a string", name));
  auto decoded = base64_decode(it->get_ref<const std::string&>());
  if (!decoded) malformed(fmt::format("field '{}' is not base64", name));
  return std::move(*decoded);
}

bool bool_field(const Json& object, std::string_view name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return false;
  if (!it->is_boolean()) malformed(fmt::format("field '{}' is not a boolean", name));
  return it->get<bool>();
}

const Json& array_field(const Json& object, std::string_view name) {
  static const Json empty = Json::array();
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return empty;
  if (!it->is_array()) malformed(fmt::format("field '{}' is not an array", name));
  return *it;
}

void put_key_range(Json& j, const KeyRange& range) {
  // etcd refuses an empty key even with a range_end, where SqliteStore reads "from the start".
  // No key is empty, so "\0" selects exactly the same keys.
  const bool open_start = range.key.empty() && !range.range_end.empty();
  j["key"] = base64_encode(open_start ? std::string_view("\0", 1) : std::string_view(range.key));
  if (!range.range_end.empty()) j["range_end"] = base64_encode(range.range_end);
}

std::string int_string(int64_t v) {
  return std::to_string(v);
}

Json encode_compare(const Compare& c) {
  Json j = Json::object();
  j["key"] = base64_encode(c.key);
  switch (c.op) {
    case CompareOp::equal:
      j["result"] = "EQUAL";
      break;
    case CompareOp::not_equal:
      j["result"] = "NOT_EQUAL";
      break;
    case CompareOp::less:
      j["result"] = "LESS";
      break;
    case CompareOp::greater:
      j["result"] = "GREATER";
      break;
  }
  switch (c.target) {
    case CompareTarget::version:
      j["target"] = "VERSION";
      j["version"] = int_string(c.number);
      break;
    case CompareTarget::create_revision:
      j["target"] = "CREATE";
      j["create_revision"] = int_string(c.number);
      break;
    case CompareTarget::mod_revision:
      j["target"] = "MOD";
      j["mod_revision"] = int_string(c.number);
      break;
    case CompareTarget::value:
      j["target"] = "VALUE";
      j["value"] = base64_encode(c.value);
      break;
    case CompareTarget::lease:
      j["target"] = "LEASE";
      j["lease"] = int_string(c.number);
      break;
  }
  return j;
}

Json encode_op(const Op& op) {
  Json j = Json::object();
  switch (op.type) {
    case Op::Type::range:
      j["request_range"] = encode_range(op.range);
      break;
    case Op::Type::put:
      j["request_put"] = encode_put(op.put);
      break;
    case Op::Type::delete_range:
      j["request_delete_range"] = encode_delete(op.del);
      break;
    case Op::Type::txn:
      if (!op.txn) throw std::invalid_argument("txn op without a txn");
      j["request_txn"] = encode_txn(*op.txn);
      break;
  }
  return j;
}

Json encode_ops(const std::vector<Op>& ops) {
  Json out = Json::array();
  for (const auto& op : ops)
    out.push_back(encode_op(op));
  return out;
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16 |
                       static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                       static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[n >> 18];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  const size_t rest = bytes.size() - i;
  if (rest > 0) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) n |= static_cast<uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += kAlphabet[n >> 18];
    out += kAlphabet[(n >> 12) & 63];
    out += rest == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    const size_t pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=') : 0;
    if (pad == 1 && text[i + 2] == '=') return std::nullopt;  // "x=y=" is not padding
    uint32_t n = 0;
    for (size_t k = 0; k < 4 - pad; ++k) {
      const int8_t v = kDecode[static_cast<unsigned char>(text[i + k])];
      if (v < 0) return std::nullopt;
      n |= static_cast<uint32_t>(v) << (18 - 6 * k);
    }
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

int64_t int_field(const Json& object, std::string_view name) {
  auto it = object.find(name);
  if (it == object.end() || it->is_null()) return 0;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    int64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec == std::errc() && end == s.data() + s.size()) return v;
  }
  malformed(fmt::format("field '{}' is not an int64", name));
}

int64_t header_revision(const Json& response) {
  auto it = response.find("header");
  return it == response.end() ? 0 : int_field(*it, "revision");
}

Json encode_range(const RangeRequest& request) {
  Json j = Json::object();
  put_key_range(j, request.range);
  if (request.limit > 0) j["limit"] = int_string(request.limit);
  return j;
}

Json encode_put(const PutRequest& request) {
  Json j = Json::object();
  j["key"] = base64_encode(request.key);
  j["value"] = base64_encode(request.value);
  if (request.lease != 0) j["lease"] = int_string(request.lease);
  if (request.prev_kv) j["prev_kv"] = true;
  return j;
}

Json encode_delete(const DeleteRequest& request) {
  Json j = Json::object();
  put_key_range(j, request.range);
  if (request.prev_kv) j["prev_kv"] = true;
  return j;
}

Json encode_txn(const Txn& txn) {
  Json j = Json::object();
  Json compares = Json::array();
  for (const auto& c : txn.compares)
    compares.push_back(encode_compare(c));
  j["compare"] = std::move(compares);
  j["success"] = encode_ops(txn.success);
  j["failure"] = encode_ops(txn.failure);
  return j;
}

Json encode_watch_create(const WatchRequest& request, int64_t start_revision) {
  Json create = Json::object();
  put_key_range(create, request.range);
  create["start_revision"] = int_string(start_revision);
  // Periodic empty responses when nothing happens: they prove the stream is alive and move the
  // resume revision of quiet watches forward (see EtcdOptions::watch_idle_timeout).
  create["progress_notify"] = true;
  if (request.prev_kv) create["prev_kv"] = true;
  Json j = Json::object();
  j["create_request"] = std::move(create);
  return j;
}

KeyValue decode_kv(const Json& kv) {
  if (!kv.is_object()) malformed("key-value is not an object");
  return KeyValue{bytes_field(kv, "key"),           bytes_field(kv, "value"),
                  int_field(kv, "create_revision"), int_field(kv, "mod_revision"),
                  int_field(kv, "version"),         int_field(kv, "lease")};
}

RangeResponse decode_range(const Json& response) {
  RangeResponse out;
  for (const auto& kv : array_field(response, "kvs"))
    out.kvs.push_back(decode_kv(kv));
  out.count = int_field(response, "count");
  out.more = bool_field(response, "more");
  out.revision = header_revision(response);
  return out;
}

PutResponse decode_put(const Json& response) {
  PutResponse out;
  out.revision = header_revision(response);
  if (auto it = response.find("prev_kv"); it != response.end()) out.prev_kv = decode_kv(*it);
  return out;
}

DeleteResponse decode_delete(const Json& response) {
  DeleteResponse out;
  out.deleted = int_field(response, "deleted");
  for (const auto& kv : array_field(response, "prev_kvs"))
    out.prev_kvs.push_back(decode_kv(kv));
  out.revision = header_revision(response);
  return out;
}

TxnResponse decode_txn(const Json& response, int64_t revision) {
  TxnResponse out;
  out.succeeded = bool_field(response, "succeeded");
  out.revision = revision;
  for (const auto& r : array_field(response, "responses")) {
    OpResponse op;
    if (auto it = r.find("response_range"); it != r.end()) {
      op.type = Op::Type::range;
      op.range = decode_range(*it);
      op.range.revision = revision;
    } else if (it = r.find("response_put"); it != r.end()) {
      op.type = Op::Type::put;
      op.put = decode_put(*it);
      op.put.revision = revision;
    } else if (it = r.find("response_delete_range"); it != r.end()) {
      op.type = Op::Type::delete_range;
      op.del = decode_delete(*it);
      op.del.revision = revision;
    } else if (it = r.find("response_txn"); it != r.end()) {
      op.type = Op::Type::txn;
      op.txn = std::make_shared<const TxnResponse>(decode_txn(*it, revision));
    } else {
      malformed("txn response op of unknown type");
    }
    out.responses.push_back(std::move(op));
  }
  return out;
}

std::vector<WatchResponse> decode_watch_events(const Json& result, bool prev_kv) {
  std::vector<WatchResponse> out;
  for (const auto& e : array_field(result, "events")) {
    Event ev;
    // The type is an enum: a name by default, a number if the gateway was told EnumsAsInts;
    // PUT is its zero value and therefore absent.
    auto type = e.find("type");
    if (type == e.end() || type->is_null() || *type == "PUT" || *type == 0) {
      ev.type = EventType::put;
    } else if (*type == "DELETE" || *type == 1) {
      ev.type = EventType::del;
    } else {
      malformed(fmt::format("unknown event type {}", type->dump()));
    }
    ev.kv = decode_kv(e.at("kv"));
    if (auto prev = e.find("prev_kv"); prev_kv && prev != e.end()) ev.prev_kv = decode_kv(*prev);
    if (out.empty() || out.back().revision != ev.kv.mod_revision) {
      out.emplace_back();
      out.back().revision = ev.kv.mod_revision;
    }
    out.back().events.push_back(std::move(ev));
  }
  return out;
}

Errc errc_from_grpc(int code, std::string_view message) {
  // etcd shares codes between errors the store contract keeps apart: OutOfRange is both
  // "compacted" and "future revision", FailedPrecondition covers "lease already exists".
  if (message.find("compacted") != std::string_view::npos) return Errc::compacted;
  if (message.find("future revision") != std::string_view::npos) return Errc::invalid_argument;
  if (message.find("already exists") != std::string_view::npos) return Errc::already_exists;
  switch (code) {
    case 3:  // INVALID_ARGUMENT
      return Errc::invalid_argument;
    case 4:  // DEADLINE_EXCEEDED
      return Errc::deadline_exceeded;
    case 5:  // NOT_FOUND
      return Errc::not_found;
    case 6:  // ALREADY_EXISTS
      return Errc::already_exists;
    case 8:   // RESOURCE_EXHAUSTED: "too many requests", "database space exceeded"
    case 14:  // UNAVAILABLE: "no leader", "request timed out", "leader changed"
      return Errc::unavailable;
    case 9:  // FAILED_PRECONDITION
      return Errc::failed_precondition;
    case 7:   // PERMISSION_DENIED
    case 16:  // UNAUTHENTICATED
      return Errc::permission_denied;
    case 11:  // OUT_OF_RANGE
      return Errc::compacted;
    default:
      return Errc::internal;
  }
}

Error decode_error(std::string_view op, long http_status, std::string_view body) {
  int code = -1;
  std::string message;
  try {
    auto j = Json::parse(body);
    if (j.is_object()) {
      auto err = j.find("error");
      if (err != j.end() && err->is_object()) {
        // A stream's error: {"error":{"grpc_code":14,"http_code":503,"message":...}}.
        code = err->value("grpc_code", -1);
        message = err->value("message", "");
      } else {
        code = j.value("code", -1);
        message = j.value("message", "");
        if (message.empty() && err != j.end() && err->is_string()) message = *err;
      }
    }
  } catch (const Json::exception&) {
    // Not JSON (a proxy's page, a truncated body): the status and the text say enough.
  }
  if (message.empty()) {
    constexpr size_t kMaxBody = 200;
    message = body.empty() ? fmt::format("HTTP status {}", http_status)
                           : fmt::format("HTTP status {}: {}", http_status,
                                         body.substr(0, std::min(body.size(), kMaxBody)));
  }
  if (code < 0) {
    switch (http_status) {
      case 400:
        code = 3;
        break;
      case 404:
        code = 5;
        break;
      case 503:
        code = 14;
        break;
      case 504:
        code = 4;
        break;
      default:
        code = 2;  // UNKNOWN
    }
  }
  return Error{errc_from_grpc(code, message), fmt::format("Failed to {}: {}", op, message)};
}

std::vector<std::string> JsonObjectSplitter::feed(std::string_view bytes) {
  std::vector<std::string> out;
  for (char c : bytes) {
    if (depth_ == 0) {
      // Between objects only separators (newlines) come; nothing there is worth keeping.
      if (c == '{') {
        buffer_.assign(1, c);
        depth_ = 1;
      }
      continue;
    }
    buffer_ += c;
    if (in_string_) {
      if (escaped_) {
        escaped_ = false;
      } else if (c == '\\') {
        escaped_ = true;
      } else if (c == '"') {
        in_string_ = false;
      }
    } else if (c == '"') {
      in_string_ = true;
    } else if (c == '{' || c == '[') {
      ++depth_;
    } else if ((c == '}' || c == ']') && --depth_ == 0) {
      out.push_back(std::move(buffer_));
      buffer_.clear();
    }
  }
  return out;
}

}  // namespace neco::store::etcd
