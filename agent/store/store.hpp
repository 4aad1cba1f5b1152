// The Store interface: a key-value store with etcd v3 semantics (revisions, ranges, txns with
// compares, watches from a revision, leases). SQLite implements it now; an etcd v3 JSON-gateway
// backend implements it later with identical behaviour, checked by one conformance suite.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::store {

// One key as etcd reports it. Keys and values are arbitrary bytes.
struct KeyValue {
  std::string key;
  std::string value;
  int64_t create_revision = 0;  // revision of the put that created the key
  int64_t mod_revision = 0;     // revision of the last write to the key
  int64_t version = 0;          // number of puts since creation (1 after create)
  int64_t lease = 0;            // attached lease id, 0 for none

  bool operator==(const KeyValue&) const = default;
};

// The range_end that selects every key starting with `prefix` (etcd's GetPrefixRangeEnd).
std::string prefix_end(std::string_view prefix);

// Selects keys like etcd: an empty range_end means exactly `key`; otherwise [key, range_end);
// range_end "\0" (one zero byte) means every key >= key.
struct KeyRange {
  std::string key;
  std::string range_end;

  static KeyRange exact(std::string key) { return {std::move(key), {}}; }
  static KeyRange prefix(std::string prefix) {
    auto end = prefix_end(prefix);
    return {std::move(prefix), std::move(end)};
  }
  static KeyRange all() { return {std::string(1, '\0'), std::string(1, '\0')}; }

  // Whether `k` falls in this range (exact match when range_end is empty).
  bool contains(std::string_view k) const;
};

struct RangeRequest {
  KeyRange range;
  int64_t limit = 0;  // at most this many kvs, 0 for no limit
};

struct RangeResponse {
  std::vector<KeyValue> kvs;  // sorted by key
  int64_t count = 0;          // number of keys in the range, ignoring limit
  bool more = false;          // whether limit cut the result short
  int64_t revision = 0;       // store revision the read saw
};

struct PutRequest {
  std::string key;
  std::string value;
  int64_t lease = 0;     // attach to this lease (must exist), 0 for none
  bool prev_kv = false;  // return the key as it was before the put
};

struct PutResponse {
  int64_t revision = 0;
  std::optional<KeyValue> prev_kv;
};

struct DeleteRequest {
  KeyRange range;
  bool prev_kv = false;  // return the deleted keys
};

struct DeleteResponse {
  int64_t deleted = 0;
  std::vector<KeyValue> prev_kvs;
  int64_t revision = 0;
};

// What a compare looks at on its key; a missing key has every number 0 and no value, so a
// value compare on a missing key is false (as in etcd).
enum class CompareTarget { version, create_revision, mod_revision, value, lease };
enum class CompareOp { equal, not_equal, less, greater };

struct Compare {
  std::string key;
  CompareTarget target = CompareTarget::version;
  CompareOp op = CompareOp::equal;
  int64_t number = 0;  // for every target but value
  std::string value;   // for CompareTarget::value

  static Compare version(std::string key, CompareOp op, int64_t v) {
    return {std::move(key), CompareTarget::version, op, v, {}};
  }
  static Compare create_revision(std::string key, CompareOp op, int64_t v) {
    return {std::move(key), CompareTarget::create_revision, op, v, {}};
  }
  static Compare mod_revision(std::string key, CompareOp op, int64_t v) {
    return {std::move(key), CompareTarget::mod_revision, op, v, {}};
  }
  static Compare lease(std::string key, CompareOp op, int64_t v) {
    return {std::move(key), CompareTarget::lease, op, v, {}};
  }
  static Compare value_of(std::string key, CompareOp op, std::string v) {
    return {std::move(key), CompareTarget::value, op, 0, std::move(v)};
  }
};

struct Txn;
struct TxnResponse;

// One operation of a txn branch. A nested txn (etcd >= 3.3 request_txn) lets a caller guard a
// whole txn behind an extra compare, which is how leader fencing is built.
struct Op {
  enum class Type { range, put, delete_range, txn };
  Type type = Type::range;
  RangeRequest range;
  PutRequest put;
  DeleteRequest del;
  std::shared_ptr<const Txn> txn;

  static Op make_range(RangeRequest r) {
    Op op;
    op.type = Type::range;
    op.range = std::move(r);
    return op;
  }
  static Op make_put(std::string key, std::string value, int64_t lease = 0) {
    Op op;
    op.type = Type::put;
    op.put = PutRequest{std::move(key), std::move(value), lease, false};
    return op;
  }
  static Op make_delete(KeyRange range) {
    Op op;
    op.type = Type::delete_range;
    op.del.range = std::move(range);
    return op;
  }
  static Op make_txn(Txn t);
};

struct OpResponse {
  Op::Type type = Op::Type::range;
  RangeResponse range;
  PutResponse put;
  DeleteResponse del;
  std::shared_ptr<const TxnResponse> txn;
};

// If every compare holds, the success ops run, else the failure ops; all atomically, as one
// revision when anything is written. A key may be written at most once per txn (as in etcd).
struct Txn {
  std::vector<Compare> compares;
  std::vector<Op> success;
  std::vector<Op> failure;
};

struct TxnResponse {
  bool succeeded = false;
  std::vector<OpResponse> responses;  // one per op of the branch that ran
  int64_t revision = 0;               // store revision after the txn
};

inline Op Op::make_txn(Txn t) {
  Op op;
  op.type = Type::txn;
  op.txn = std::make_shared<const Txn>(std::move(t));
  return op;
}

enum class EventType { put, del };

struct Event {
  EventType type = EventType::put;
  KeyValue kv;  // for a delete: key and mod_revision (the deletion revision) only
  std::optional<KeyValue> prev_kv;  // only when the watch asked for it and the key existed
};

// What a watch callback receives: the events of one revision, or a final error.
struct WatchResponse {
  std::vector<Event> events;
  int64_t revision = 0;          // revision of these events (or the store revision on error)
  std::optional<Error> error;    // set on the last response only; the watch has ended
  int64_t compact_revision = 0;  // with Errc::compacted: the oldest revision still watchable
};

using WatchCallback = std::function<void(const WatchResponse&)>;

struct WatchRequest {
  KeyRange range;
  int64_t start_revision = 0;  // 0: from the next write; <= current replays history first
  bool prev_kv = false;        // fill Event::prev_kv
};

// A live watch. Destroying it cancels; once cancel() returns no callback runs any more (a
// callback may cancel its own watch).
class Watch {
 public:
  virtual ~Watch() = default;
  // Stops delivery; idempotent.
  virtual void cancel() = 0;
};

struct LeaseGrant {
  int64_t id = 0;
  int64_t ttl = 0;  // seconds
};

struct LeaseTimeToLive {
  int64_t id = 0;
  int64_t ttl = 0;          // remaining seconds (truncated, as etcd)
  int64_t granted_ttl = 0;  // seconds asked for at grant
  std::vector<std::string> keys;
};

// Called after every store operation with its name ("range", "put", "txn", ...), its duration
// and whether it succeeded, so the core can time operations without the store knowing metrics.
using StatsHook = std::function<void(std::string_view op, double seconds, bool ok)>;

// Every method is synchronous, thread-safe and may block: call it from a worker, not the
// event loop.
class Store {
 public:
  virtual ~Store() = default;

  // Reads the keys of a range at the current revision.
  virtual Expected<RangeResponse> range(const RangeRequest& request) = 0;
  // Writes one key (one new revision).
  virtual Expected<PutResponse> put(const PutRequest& request) = 0;
  // Deletes every key of a range (one new revision if anything was deleted).
  virtual Expected<DeleteResponse> delete_range(const DeleteRequest& request) = 0;
  // Runs a compare-and-swap transaction atomically (one new revision if it wrote anything).
  virtual Expected<TxnResponse> txn(const Txn& txn) = 0;
  // Streams the events of a range from a revision on a store thread (one watch's callbacks never
  // overlap; callbacks of different watches may run at the same time on some backends).
  virtual Expected<std::unique_ptr<Watch>> watch(const WatchRequest& request,
                                                 WatchCallback callback) = 0;
  // Forgets history before `revision`; watches from earlier then fail with Errc::compacted.
  virtual Expected<void> compact(int64_t revision) = 0;

  // Creates a lease; keys attached to it are deleted when it expires or is revoked.
  virtual Expected<LeaseGrant> grant(int64_t ttl_seconds, int64_t id = 0) = 0;
  // Restarts a lease's TTL; Errc::not_found once it expired or was revoked.
  virtual Expected<int64_t> keep_alive(int64_t id) = 0;
  // Deletes a lease and its keys (one revision); returns the store revision after.
  virtual Expected<int64_t> revoke(int64_t id) = 0;
  // Reports a lease's remaining TTL and attached keys.
  virtual Expected<LeaseTimeToLive> time_to_live(int64_t id) = 0;

  // Installs the per-operation timing hook (empty to remove); set it before sharing the store.
  virtual void set_stats_hook(StatsHook hook) = 0;

  // Convenience: the value of one key, Errc::not_found if absent.
  Expected<KeyValue> get(const std::string& key);
  // Convenience: put without prev_kv; returns the new revision.
  Expected<int64_t> put_value(std::string key, std::string value, int64_t lease = 0);
};

}  // namespace neco::store
