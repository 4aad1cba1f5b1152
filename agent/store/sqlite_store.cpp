#include "agent/store/sqlite_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>

#include "agent/log/log.hpp"
#include "agent/store/watch_hub.hpp"

namespace neco::store {
namespace {

constexpr int64_t kSchemaVersion = 1;

using Clock = std::chrono::steady_clock;

// Thrown inside an operation and converted to an Expected at the public edge, after rollback.
struct OpFailure {
  Error error;
};

[[noreturn]] void throw_error(Errc code, std::string message) {
  throw OpFailure{Error{code, std::move(message)}};
}

const char* kSchema = R"sql(
CREATE TABLE kv (
  key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
  mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX kv_lease ON kv(lease) WHERE lease != 0;
CREATE TABLE events (
  rev INTEGER NOT NULL, seq INTEGER NOT NULL, type INTEGER NOT NULL, key BLOB NOT NULL,
  value BLOB, create_rev INTEGER, mod_rev INTEGER, version INTEGER, lease INTEGER,
  prev_value BLOB, prev_create_rev INTEGER, prev_mod_rev INTEGER, prev_version INTEGER,
  prev_lease INTEGER, PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL);
INSERT INTO meta(name, value) VALUES ('schema_version', 1), ('revision', 1),
  ('compact_revision', 0);
)sql";

constexpr std::string_view kKvColumns = "key, value, create_rev, mod_rev, version, lease";

// Every header revision in a response is the store revision after the operation.
void stamp(PutResponse& r, int64_t rev) {
  r.revision = rev;
}
void stamp(DeleteResponse& r, int64_t rev) {
  r.revision = rev;
}
void stamp(TxnResponse& r, int64_t rev) {
  r.revision = rev;
  for (auto& op : r.responses) {
    op.range.revision = rev;
    op.put.revision = rev;
    op.del.revision = rev;
    if (op.txn) {
      auto nested = std::make_shared<TxnResponse>(*op.txn);
      stamp(*nested, rev);
      op.txn = std::move(nested);
    }
  }
}
void stamp(int64_t& r, int64_t rev) {
  r = rev;
}

}  // namespace

struct SqliteStore::Impl {
  struct Lease {
    int64_t ttl = 0;
    Clock::time_point deadline;
  };

  // Collects one txn's writes: they all get `rev`, and the revision only advances if any.
  struct WriteCtx {
    int64_t rev = 0;
    std::vector<Event> events;      // with prev_kv always filled (history keeps it)
    std::set<std::string> touched;  // keys written so far: etcd allows one write per key per txn
  };

  // A cached prepared statement, reset when the wrapper goes out of scope.
  class Stmt {
   public:
    Stmt(Impl& impl, std::string_view sql) : impl_(impl) {
      auto it = impl.stmts.find(std::string(sql));
      if (it == impl.stmts.end()) {
        sqlite3_stmt* s = nullptr;
        if (sqlite3_prepare_v3(impl.db, sql.data(), static_cast<int>(sql.size()),
                               SQLITE_PREPARE_PERSISTENT, &s, nullptr) != SQLITE_OK) {
          impl.raise("prepare");
        }
        it = impl.stmts.emplace(std::string(sql), s).first;
      }
      s_ = it->second;
    }
    ~Stmt() {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;

    Stmt& bind(int i, int64_t v) {
      sqlite3_bind_int64(s_, i, v);
      return *this;
    }
    Stmt& bind(int i, std::string_view blob) {
      // Zero-length blobs must not bind as NULL: pass a non-null pointer.
      sqlite3_bind_blob64(s_, i, blob.empty() ? "" : blob.data(), blob.size(), SQLITE_TRANSIENT);
      return *this;
    }
    Stmt& bind_text(int i, std::string_view text) {
      sqlite3_bind_text64(s_, i, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
      return *this;
    }
    Stmt& bind_null(int i) {
      sqlite3_bind_null(s_, i);
      return *this;
    }
    // Advances one row; false when done.
    bool step() {
      int rc = sqlite3_step(s_);
      if (rc == SQLITE_ROW) return true;
      if (rc == SQLITE_DONE) return false;
      impl_.raise("step");
    }
    void run() {
      while (step()) {
      }
    }
    // Makes the statement reusable for another row within one scope.
    void reset() { sqlite3_reset(s_); }
    int64_t i64(int col) const { return sqlite3_column_int64(s_, col); }
    bool is_null(int col) const { return sqlite3_column_type(s_, col) == SQLITE_NULL; }
    std::string blob(int col) const {
      auto* p = static_cast<const char*>(sqlite3_column_blob(s_, col));
      int n = sqlite3_column_bytes(s_, col);
      return p ? std::string(p, static_cast<size_t>(n)) : std::string();
    }
    KeyValue kv(int first) const {
      return KeyValue{blob(first),    blob(first + 1), i64(first + 2),
                      i64(first + 3), i64(first + 4),  i64(first + 5)};
    }

   private:
    Impl& impl_;
    sqlite3_stmt* s_ = nullptr;
  };

  std::string path;
  SqliteOptions options;
  log::Logger logger{"store"};
  sqlite3* db = nullptr;
  std::unordered_map<std::string, sqlite3_stmt*> stmts;

  // Guards the connection, the cached revisions and the lease table; writers publish to the
  // hub while holding it so the event stream is in commit order.
  mutable std::mutex mu;
  std::condition_variable lease_cv;
  int64_t revision = 1;
  int64_t compact_rev = 0;
  std::map<int64_t, Lease> leases;
  std::mt19937_64 rng{std::random_device{}()};
  bool stopping = false;
  std::unique_ptr<WatchHub> hub;
  std::thread lease_thread;
  std::atomic<std::shared_ptr<const StatsHook>> stats;

  ~Impl() {
    for (auto& [sql, s] : stmts)
      sqlite3_finalize(s);
    if (db) sqlite3_close_v2(db);
  }

  [[noreturn]] void raise(std::string_view what) {
    int rc = sqlite3_extended_errcode(db);
    Errc code = (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? Errc::unavailable
                                                                           : Errc::internal;
    throw_error(code,
                fmt::format("Failed to {} in store '{}': {}", what, path, sqlite3_errmsg(db)));
  }

  void exec(const char* sql) {
    if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) raise("execute statement");
  }

  int64_t meta(std::string_view name) {
    Stmt s(*this, "SELECT value FROM meta WHERE name = ?1");
    s.bind_text(1, name);
    if (!s.step())
      throw_error(Errc::internal, fmt::format("store '{}' lacks meta '{}'", path, name));
    return s.i64(0);
  }
  void set_meta(std::string_view name, int64_t v) {
    Stmt s(*this, "UPDATE meta SET value = ?2 WHERE name = ?1");
    s.bind_text(1, name).bind(2, v).run();
  }

  // ---- reads -------------------------------------------------------------------------------

  static std::string where(const KeyRange& r) {
    if (r.range_end.empty()) return " WHERE key = ?1";
    if (r.range_end == std::string_view("\0", 1)) return " WHERE key >= ?1";
    return " WHERE key >= ?1 AND key < ?2";
  }
  static void bind_range(Stmt& s, const KeyRange& r) {
    s.bind(1, r.key);
    if (!r.range_end.empty() && r.range_end != std::string_view("\0", 1)) s.bind(2, r.range_end);
  }
  static void check_range(const KeyRange& r) {
    if (r.key.empty() && r.range_end.empty()) throw_error(Errc::invalid_argument, "empty key");
  }

  std::optional<KeyValue> read_key(const std::string& key) {
    Stmt s(*this, fmt::format("SELECT {} FROM kv WHERE key = ?1", kKvColumns));
    s.bind(1, key);
    if (!s.step()) return std::nullopt;
    return s.kv(0);
  }

  RangeResponse do_range(const RangeRequest& req) {
    check_range(req.range);
    RangeResponse out;
    {
      Stmt c(*this, "SELECT count(*) FROM kv" + where(req.range));
      bind_range(c, req.range);
      c.step();
      out.count = c.i64(0);
    }
    Stmt s(*this,
           fmt::format("SELECT {} FROM kv{} ORDER BY key LIMIT ?3", kKvColumns, where(req.range)));
    bind_range(s, req.range);
    s.bind(3, req.limit > 0 ? req.limit : int64_t{-1});
    while (s.step())
      out.kvs.push_back(s.kv(0));
    out.more = req.limit > 0 && out.count > req.limit;
    out.revision = revision;
    return out;
  }

  // ---- writes ------------------------------------------------------------------------------

  void touch(WriteCtx& ctx, const std::string& key) {
    if (!ctx.touched.insert(key).second) {
      throw_error(Errc::invalid_argument,
                  fmt::format("duplicate key '{}' given in txn request", key));
    }
  }

  bool lease_alive(int64_t id) const {
    auto it = leases.find(id);
    return it != leases.end() && it->second.deadline > Clock::now();
  }

  PutResponse do_put(const PutRequest& req, WriteCtx& ctx) {
    if (req.key.empty()) throw_error(Errc::invalid_argument, "empty key");
    if (req.lease != 0 && !lease_alive(req.lease)) {
      throw_error(Errc::not_found, fmt::format("lease {} not found", req.lease));
    }
    touch(ctx, req.key);
    auto prev = read_key(req.key);
    KeyValue kv{req.key,
                req.value,
                prev ? prev->create_revision : ctx.rev,
                ctx.rev,
                prev ? prev->version + 1 : 1,
                req.lease};
    Stmt s(*this,
           "INSERT OR REPLACE INTO kv(key, value, create_rev, mod_rev, version, lease) "
           "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    s.bind(1, kv.key).bind(2, kv.value).bind(3, kv.create_revision).bind(4, kv.mod_revision);
    s.bind(5, kv.version).bind(6, kv.lease).run();
    ctx.events.push_back(Event{EventType::put, kv, prev});
    PutResponse out;
    if (req.prev_kv) out.prev_kv = prev;
    return out;
  }

  DeleteResponse do_delete(const DeleteRequest& req, WriteCtx& ctx) {
    check_range(req.range);
    std::vector<KeyValue> doomed;
    {
      Stmt s(*this, fmt::format("SELECT {} FROM kv{} ORDER BY key", kKvColumns, where(req.range)));
      bind_range(s, req.range);
      while (s.step())
        doomed.push_back(s.kv(0));
    }
    for (const auto& kv : doomed) {
      touch(ctx, kv.key);
      Stmt d(*this, "DELETE FROM kv WHERE key = ?1");
      d.bind(1, kv.key).run();
      KeyValue tomb;
      tomb.key = kv.key;
      tomb.mod_revision = ctx.rev;
      ctx.events.push_back(Event{EventType::del, std::move(tomb), kv});
    }
    DeleteResponse out;
    out.deleted = static_cast<int64_t>(doomed.size());
    if (req.prev_kv) out.prev_kvs = std::move(doomed);
    return out;
  }

  bool holds(const Compare& c) {
    auto kv = read_key(c.key);
    if (!kv && c.target == CompareTarget::value) return false;
    KeyValue k = kv.value_or(KeyValue{});
    int cmp = 0;
    auto three_way = [](int64_t a, int64_t b) { return a < b ? -1 : (a > b ? 1 : 0); };
    switch (c.target) {
      case CompareTarget::version:
        cmp = three_way(k.version, c.number);
        break;
      case CompareTarget::create_revision:
        cmp = three_way(k.create_revision, c.number);
        break;
      case CompareTarget::mod_revision:
        cmp = three_way(k.mod_revision, c.number);
        break;
      case CompareTarget::lease:
        cmp = three_way(k.lease, c.number);
        break;
      case CompareTarget::value:
        cmp = k.value.compare(c.value);
        break;
    }
    switch (c.op) {
      case CompareOp::equal:
        return cmp == 0;
      case CompareOp::not_equal:
        return cmp != 0;
      case CompareOp::less:
        return cmp < 0;
      case CompareOp::greater:
        return cmp > 0;
    }
    return false;
  }

  TxnResponse do_txn(const Txn& txn, WriteCtx& ctx) {
    TxnResponse out;
    out.succeeded = std::all_of(txn.compares.begin(), txn.compares.end(),
                                [this](const Compare& c) { return holds(c); });
    for (const auto& op : out.succeeded ? txn.success : txn.failure) {
      OpResponse r;
      r.type = op.type;
      switch (op.type) {
        case Op::Type::range:
          r.range = do_range(op.range);
          break;
        case Op::Type::put:
          r.put = do_put(op.put, ctx);
          break;
        case Op::Type::delete_range:
          r.del = do_delete(op.del, ctx);
          break;
        case Op::Type::txn:
          if (!op.txn) throw_error(Errc::invalid_argument, "txn op without a txn");
          r.txn = std::make_shared<TxnResponse>(do_txn(*op.txn, ctx));
          break;
      }
      out.responses.push_back(std::move(r));
    }
    return out;
  }

  void record_events(const WriteCtx& ctx) {
    Stmt s(*this,
           "INSERT INTO events(rev, seq, type, key, value, create_rev, mod_rev, version, lease, "
           "prev_value, prev_create_rev, prev_mod_rev, prev_version, prev_lease) "
           "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
    int64_t seq = 0;
    for (const auto& ev : ctx.events) {
      s.bind(1, ctx.rev).bind(2, seq++).bind(3, ev.type == EventType::put ? 0 : 1);
      s.bind(4, ev.kv.key).bind(5, ev.kv.value).bind(6, ev.kv.create_revision);
      s.bind(7, ev.kv.mod_revision).bind(8, ev.kv.version).bind(9, ev.kv.lease);
      if (ev.prev_kv) {
        s.bind(10, ev.prev_kv->value).bind(11, ev.prev_kv->create_revision);
        s.bind(12, ev.prev_kv->mod_revision).bind(13, ev.prev_kv->version);
        s.bind(14, ev.prev_kv->lease);
      } else {
        for (int i = 10; i <= 14; ++i)
          s.bind_null(i);
      }
      s.run();
      s.reset();
    }
  }

  void drop_history_before(int64_t rev) {
    Stmt s(*this, "DELETE FROM events WHERE rev < ?1");
    s.bind(1, rev).run();
    set_meta("compact_revision", rev);
  }

  // Runs `body` in one SQLite transaction with `mu` held; commits, advances the revision if it
  // wrote any key, and publishes the events. On any failure everything is rolled back.
  template <class F>
  auto write(F&& body) -> Expected<std::invoke_result_t<F, WriteCtx&>> {
    WriteCtx ctx;
    ctx.rev = revision + 1;
    try {
      exec("BEGIN IMMEDIATE");
      try {
        auto result = body(ctx);
        int64_t new_compact = compact_rev;
        bool wrote = !ctx.events.empty();
        if (wrote) {
          record_events(ctx);
          set_meta("revision", ctx.rev);
          // Compact in batches of a tenth of the window so history trimming stays cheap.
          int64_t window = options.history_revisions;
          int64_t target = ctx.rev - window + 1;
          if (window > 0 && target - compact_rev >= std::max<int64_t>(1, window / 10)) {
            drop_history_before(target);
            new_compact = target;
          }
        }
        exec("COMMIT");
        if (wrote) {
          revision = ctx.rev;
          compact_rev = new_compact;
          hub->publish(ctx.rev, std::move(ctx.events));
        }
        stamp(result, revision);
        return result;
      } catch (...) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
        throw;
      }
    } catch (const OpFailure& f) {
      return std::unexpected(f.error);
    }
  }

  template <class F>
  auto read(F&& body) -> Expected<std::invoke_result_t<F>> {
    try {
      return body();
    } catch (const OpFailure& f) {
      return std::unexpected(f.error);
    }
  }

  Expected<int64_t> revoke_locked(int64_t id) {
    if (!leases.contains(id)) return fail(Errc::not_found, fmt::format("lease {} not found", id));
    auto r = write([&](WriteCtx& ctx) {
      std::vector<std::string> keys;
      {
        Stmt s(*this, "SELECT key FROM kv WHERE lease = ?1 ORDER BY key");
        s.bind(1, id);
        while (s.step())
          keys.push_back(s.blob(0));
      }
      for (auto& k : keys)
        do_delete(DeleteRequest{KeyRange::exact(k), false}, ctx);
      Stmt d(*this, "DELETE FROM leases WHERE id = ?1");
      d.bind(1, id).run();
      return int64_t{0};
    });
    if (r) leases.erase(id);
    return r;
  }

  void lease_loop() {
    std::unique_lock lock(mu);
    while (!stopping) {
      // Only future deadlines shorten the sleep: a lease whose revoke failed is retried after
      // the check interval instead of spinning.
      auto now = Clock::now();
      auto wake = now + options.lease_check_interval;
      for (auto& [id, l] : leases) {
        if (l.deadline > now) wake = std::min(wake, l.deadline);
      }
      lease_cv.wait_until(lock, wake);
      if (stopping) return;
      now = Clock::now();
      std::vector<int64_t> expired;
      for (auto& [id, l] : leases) {
        if (l.deadline <= now) expired.push_back(id);
      }
      for (auto id : expired) {
        if (auto r = revoke_locked(id); !r) {
          // Retried on the next pass; the lease stays expired for keep_alive meanwhile.
          logger.warning("Failed to revoke expired lease {}: {}", id, r.error().message);
        }
      }
    }
  }

  template <class R>
  R timed(std::string_view op, Clock::time_point start, R result) {
    if (auto hook = stats.load(); hook && *hook) {
      (*hook)(op, std::chrono::duration<double>(Clock::now() - start).count(), result.has_value());
    }
    return result;
  }
};

SqliteStore::SqliteStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteStore::~SqliteStore() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->lease_cv.notify_all();
  if (impl_->lease_thread.joinable()) impl_->lease_thread.join();
  impl_->hub.reset();
}

Expected<std::unique_ptr<SqliteStore>> SqliteStore::open(const std::string& path,
                                                         SqliteOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->path = path;
  impl->options = options;
  int rc =
      sqlite3_open_v2(path.c_str(), &impl->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string why = impl->db ? sqlite3_errmsg(impl->db) : sqlite3_errstr(rc);
    return fail(Errc::unavailable, fmt::format("Failed to open store '{}': {}", path, why));
  }
  sqlite3_extended_result_codes(impl->db, 1);
  sqlite3_busy_timeout(impl->db, static_cast<int>(options.busy_timeout.count()));
  try {
    {
      // journal_mode is the first statement to read the file, so it is where a file that is
      // not a database shows up.
      Impl::Stmt s(*impl, "PRAGMA journal_mode=WAL");
      if (!s.step() || s.blob(0) != "wal") {
        throw_error(Errc::unavailable,
                    fmt::format("Failed to open store '{}': cannot enable WAL mode", path));
      }
    }
    impl->exec("PRAGMA synchronous=FULL");
    impl->exec("BEGIN IMMEDIATE");
    try {
      impl->exec("CREATE TABLE IF NOT EXISTS meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL)");
      int64_t version = 0;
      {
        Impl::Stmt s(*impl, "SELECT value FROM meta WHERE name = 'schema_version'");
        if (s.step()) version = s.i64(0);
      }
      if (version == 0) {
        impl->exec(kSchema);
      } else if (version > kSchemaVersion) {
        throw_error(Errc::failed_precondition,
                    fmt::format("Failed to open store '{}': schema version {} is newer than "
                                "this binary's {}",
                                path, version, kSchemaVersion));
      }
      impl->exec("COMMIT");
    } catch (...) {
      sqlite3_exec(impl->db, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
    impl->revision = impl->meta("revision");
    impl->compact_rev = impl->meta("compact_revision");
    // Deadlines are not persisted: like etcd after a leader change, every lease gets its full
    // TTL again, so a restart never expires leases whose holders kept them alive.
    Impl::Stmt s(*impl, "SELECT id, ttl FROM leases");
    auto now = Clock::now();
    while (s.step()) {
      impl->leases[s.i64(0)] = Impl::Lease{s.i64(1), now + std::chrono::seconds(s.i64(1))};
    }
  } catch (const OpFailure& f) {
    Error e = f.error;
    if (e.message.find(path) == std::string::npos) {
      e.message = fmt::format("Failed to open store '{}': {}", path, e.message);
    }
    return std::unexpected(std::move(e));
  }
  impl->hub = std::make_unique<WatchHub>();
  auto* raw = impl.get();
  impl->lease_thread = std::thread([raw] { raw->lease_loop(); });
  return std::unique_ptr<SqliteStore>(new SqliteStore(std::move(impl)));
}

Expected<RangeResponse> SqliteStore::range(const RangeRequest& request) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  return impl_->timed("range", start, impl_->read([&] { return impl_->do_range(request); }));
}

Expected<PutResponse> SqliteStore::put(const PutRequest& request) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  return impl_->timed(
      "put", start, impl_->write([&](Impl::WriteCtx& ctx) { return impl_->do_put(request, ctx); }));
}

Expected<DeleteResponse> SqliteStore::delete_range(const DeleteRequest& request) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  return impl_->timed("delete_range", start, impl_->write([&](Impl::WriteCtx& ctx) {
    return impl_->do_delete(request, ctx);
  }));
}

Expected<TxnResponse> SqliteStore::txn(const Txn& txn) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  return impl_->timed("txn", start,
                      impl_->write([&](Impl::WriteCtx& ctx) { return impl_->do_txn(txn, ctx); }));
}

Expected<std::unique_ptr<Watch>> SqliteStore::watch(const WatchRequest& request,
                                                    WatchCallback callback) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  auto result = impl_->read([&]() -> std::unique_ptr<Watch> {
    Impl::check_range(request.range);
    WatchRequest req = request;
    if (req.start_revision <= 0) req.start_revision = impl_->revision + 1;
    std::vector<WatchResponse> replay;
    if (req.start_revision < impl_->compact_rev) {
      WatchResponse r;
      r.revision = impl_->revision;
      r.compact_revision = impl_->compact_rev;
      r.error = Error{Errc::compacted,
                      fmt::format("required revision {} has been compacted; compact revision {}",
                                  req.start_revision, impl_->compact_rev)};
      replay.push_back(std::move(r));
    } else if (req.start_revision <= impl_->revision) {
      Impl::Stmt s(*impl_,
                   "SELECT rev, type, key, value, create_rev, mod_rev, version, lease, "
                   "prev_value, prev_create_rev, prev_mod_rev, prev_version, prev_lease "
                   "FROM events WHERE rev >= ?1 ORDER BY rev, seq");
      s.bind(1, req.start_revision);
      while (s.step()) {
        std::string key = s.blob(2);
        if (!req.range.contains(key)) continue;
        int64_t rev = s.i64(0);
        if (replay.empty() || replay.back().revision != rev) {
          replay.emplace_back();
          replay.back().revision = rev;
        }
        Event ev;
        ev.type = s.i64(1) == 0 ? EventType::put : EventType::del;
        ev.kv = KeyValue{key, s.blob(3), s.i64(4), s.i64(5), s.i64(6), s.i64(7)};
        if (req.prev_kv && !s.is_null(9)) {
          ev.prev_kv = KeyValue{key, s.blob(8), s.i64(9), s.i64(10), s.i64(11), s.i64(12)};
        }
        replay.back().events.push_back(std::move(ev));
      }
    }
    return impl_->hub->register_watcher(req, std::move(callback), std::move(replay));
  });
  return impl_->timed("watch", start, std::move(result));
}

Expected<void> SqliteStore::compact(int64_t revision) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  auto& d = *impl_;
  Expected<void> result;
  if (revision > d.revision) {
    result = fail(Errc::invalid_argument,
                  fmt::format("required revision {} is a future revision (current {})", revision,
                              d.revision));
  } else if (revision <= d.compact_rev) {
    result = fail(Errc::compacted,
                  fmt::format("required revision {} has been compacted; compact revision {}",
                              revision, d.compact_rev));
  } else {
    auto r = d.write([&](Impl::WriteCtx&) {
      d.drop_history_before(revision);
      return int64_t{0};
    });
    if (r) {
      d.compact_rev = revision;
    } else {
      result = std::unexpected(r.error());
    }
  }
  return d.timed("compact", start, std::move(result));
}

Expected<LeaseGrant> SqliteStore::grant(int64_t ttl_seconds, int64_t id) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  auto& d = *impl_;
  auto result = [&]() -> Expected<LeaseGrant> {
    if (ttl_seconds <= 0) return fail(Errc::invalid_argument, "lease TTL must be positive");
    if (id < 0) return fail(Errc::invalid_argument, "lease id must not be negative");
    if (id != 0 && d.leases.contains(id)) {
      return fail(Errc::already_exists, fmt::format("lease {} already exists", id));
    }
    while (id == 0 || d.leases.contains(id)) {
      id = static_cast<int64_t>(d.rng() >> 1);
    }
    auto r = d.write([&](Impl::WriteCtx&) {
      Impl::Stmt s(d, "INSERT INTO leases(id, ttl) VALUES (?1, ?2)");
      s.bind(1, id).bind(2, ttl_seconds).run();
      return int64_t{0};
    });
    if (!r) return std::unexpected(r.error());
    d.leases[id] = Impl::Lease{ttl_seconds, Clock::now() + std::chrono::seconds(ttl_seconds)};
    d.lease_cv.notify_all();
    return LeaseGrant{id, ttl_seconds};
  }();
  return d.timed("lease_grant", start, std::move(result));
}

Expected<int64_t> SqliteStore::keep_alive(int64_t id) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  auto& d = *impl_;
  Expected<int64_t> result = fail(Errc::not_found, fmt::format("lease {} not found", id));
  if (d.lease_alive(id)) {
    auto& l = d.leases[id];
    l.deadline = Clock::now() + std::chrono::seconds(l.ttl);
    result = l.ttl;
  }
  return d.timed("lease_keep_alive", start, std::move(result));
}

Expected<int64_t> SqliteStore::revoke(int64_t id) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  return impl_->timed("lease_revoke", start, impl_->revoke_locked(id));
}

Expected<LeaseTimeToLive> SqliteStore::time_to_live(int64_t id) {
  auto start = Clock::now();
  std::lock_guard lock(impl_->mu);
  auto& d = *impl_;
  auto result = d.read([&]() -> LeaseTimeToLive {
    auto it = d.leases.find(id);
    if (it == d.leases.end()) throw_error(Errc::not_found, fmt::format("lease {} not found", id));
    LeaseTimeToLive out;
    out.id = id;
    out.granted_ttl = it->second.ttl;
    auto left =
        std::chrono::duration_cast<std::chrono::seconds>(it->second.deadline - Clock::now());
    out.ttl = left.count() < 0 ? -1 : left.count();
    Impl::Stmt s(d, "SELECT key FROM kv WHERE lease = ?1 ORDER BY key");
    s.bind(1, id);
    while (s.step())
      out.keys.push_back(s.blob(0));
    return out;
  });
  return d.timed("lease_time_to_live", start, std::move(result));
}

void SqliteStore::set_stats_hook(StatsHook hook) {
  impl_->stats.store(hook ? std::make_shared<const StatsHook>(std::move(hook)) : nullptr);
}

int64_t SqliteStore::revision() const {
  std::lock_guard lock(impl_->mu);
  return impl_->revision;
}

int64_t SqliteStore::compact_revision() const {
  std::lock_guard lock(impl_->mu);
  return impl_->compact_rev;
}

Expected<std::string> SqliteStore::integrity_check() {
  std::lock_guard lock(impl_->mu);
  return impl_->read([&] {
    Impl::Stmt s(*impl_, "PRAGMA integrity_check");
    return s.step() ? s.blob(0) : std::string("no result");
  });
}

}  // namespace neco::store
