// The embedded Store: one SQLite file in WAL mode. Every operation is one SQLite transaction, so
// a killed process never leaves half a txn behind. One process owns the file at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "agent/store/store.hpp"

namespace neco::store {

struct SqliteOptions {
  // Revisions of event history kept for watch replay; older history is compacted away
  // automatically (0 keeps everything until an explicit compact()).
  int64_t history_revisions = 10000;
  // How long a statement waits for a lock held by another connection (e.g. a backup tool).
  std::chrono::milliseconds busy_timeout{5000};
  // Upper bound on how late an expired lease is revoked.
  std::chrono::milliseconds lease_check_interval{200};
};

class SqliteStore final : public Store {
 public:
  // Opens (creating if needed) the store file at `path`; errors name the path.
  static Expected<std::unique_ptr<SqliteStore>> open(const std::string& path,
                                                     SqliteOptions options = {});
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  Expected<RangeResponse> range(const RangeRequest& request) override;
  Expected<PutResponse> put(const PutRequest& request) override;
  Expected<DeleteResponse> delete_range(const DeleteRequest& request) override;
  Expected<TxnResponse> txn(const Txn& txn) override;
  Expected<std::unique_ptr<Watch>> watch(const WatchRequest& request,
                                         WatchCallback callback) override;
  Expected<void> compact(int64_t revision) override;
  Expected<LeaseGrant> grant(int64_t ttl_seconds, int64_t id = 0) override;
  Expected<int64_t> keep_alive(int64_t id) override;
  Expected<int64_t> revoke(int64_t id) override;
  Expected<LeaseTimeToLive> time_to_live(int64_t id) override;
  void set_stats_hook(StatsHook hook) override;

  // The current revision and the compaction point (history before it is gone).
  int64_t revision() const;
  int64_t compact_revision() const;
  // Runs PRAGMA integrity_check; returns its first line ("ok" when healthy).
  Expected<std::string> integrity_check();

  struct Impl;

 private:
  explicit SqliteStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace neco::store
