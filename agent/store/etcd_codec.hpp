// The wire format of etcd's v3 JSON gateway (grpc-gateway over the v3 protobufs), kept apart
// from the transport in etcd_store.cpp so it can be tested without a server.
//
// Gateway rules the codec follows: keys and values are base64; int64 fields are JSON strings
// (numbers are accepted too); fields holding their zero value are omitted (a failed txn has no
// "succeeded", an empty range no "kvs", a delete event no "type" only when it is a PUT...).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/store/store.hpp"
#include "agent/util/error.hpp"

namespace neco::store::etcd {

using Json = nlohmann::json;

std::string base64_encode(std::string_view bytes);
// nullopt when `text` is not canonical padded base64.
std::optional<std::string> base64_decode(std::string_view text);

// The int64 field `name` of `object` (string or number), 0 when absent; throws
// std::runtime_error when it is neither.
int64_t int_field(const Json& object, std::string_view name);
// The revision of a response's "header", 0 when absent.
int64_t header_revision(const Json& response);

// Request bodies for /v3/kv/range, /v3/kv/put, /v3/kv/deleterange and /v3/kv/txn.
Json encode_range(const RangeRequest& request);
Json encode_put(const PutRequest& request);
Json encode_delete(const DeleteRequest& request);
// Throws std::invalid_argument for an Op::Type::txn op without a txn.
Json encode_txn(const Txn& txn);
// The first message of a /v3/watch stream: create a watch from `start_revision` (> 0).
Json encode_watch_create(const WatchRequest& request, int64_t start_revision);

// Response decoders; they throw (std::runtime_error or nlohmann::json::exception) on a body
// that does not have the expected shape.
KeyValue decode_kv(const Json& kv);
RangeResponse decode_range(const Json& response);
PutResponse decode_put(const Json& response);
DeleteResponse decode_delete(const Json& response);
// Every revision in the result (nested ones too) is `revision`: etcd leaves the headers of
// nested responses empty, and the store contract says "the revision after the txn".
TxnResponse decode_txn(const Json& response, int64_t revision);
// The "events" of one watch message, split into one WatchResponse per revision (a catch-up
// message carries many revisions; etcd never splits one revision over messages unless asked to
// fragment, which this client never does).
std::vector<WatchResponse> decode_watch_events(const Json& result, bool prev_kv);

// Maps a gRPC status code (with etcd's message, which disambiguates shared codes) to an Errc.
Errc errc_from_grpc(int code, std::string_view message);
// The Error of a non-200 gateway answer: {"error","code","message"} (or a streamed
// {"error":{"grpc_code","message"}}); the message is "Failed to <op>: <etcd's message>".
Error decode_error(std::string_view op, long http_status, std::string_view body);

// Cuts a byte stream into complete top-level JSON objects. The gateway writes one object per
// line, but a write callback may end anywhere, so this tracks nesting and strings instead of
// trusting newlines.
class JsonObjectSplitter {
 public:
  // Appends `bytes` and returns every object completed by them, in order.
  std::vector<std::string> feed(std::string_view bytes);
  // Bytes of an unfinished object held back.
  size_t pending() const { return buffer_.size(); }

 private:
  std::string buffer_;  // the unfinished object, from its '{'
  int depth_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
};

}  // namespace neco::store::etcd
