// The netboot asset store: named boot files (kernels, initrds, iPXE binaries, any file) that
// every controller's boot server can hand out. Metadata lives in the shared store; the bytes
// live in a local directory on each controller, content-addressed by SHA-256, and are copied
// between controllers by a background pull from a controller that already has them. While a
// controller has not pulled an asset yet, its boot server redirects to one that has.
//
// Key layout under the prefix (default "/neco/netboot/", shared with the inventory):
//   assets/<name>        AssetInfo JSON: name, sha256, size, content_type, created, who, holders
//   servers/<controller> {"url": "http://10.0.0.1:10080"}: a controller's boot server
//   audit/...            commits and deletes, in the inventory's audit format (same txn)
//
// Local directory layout (<module state dir>/assets):
//   <sha256>             the bytes of every asset this controller holds (fsync'd, then renamed)
//   uploads/<name>       an upload in progress, grown chunk by chunk; discarded when idle
//   tmp/                 files being hashed or downloaded, never visible under their sha256
//
// Uploads are chunked because the admin API bounds request bodies to about 1 MiB while boot
// images are hundreds of MiB: append_upload() grows uploads/<name> at an exact offset (so a
// client can resume after a broken connection), commit_upload() verifies the size and SHA-256
// the client announces and only then publishes the asset.
//
// Thread safety: every method may be called from any thread. The upload, commit, list, delete,
// sync and advertise methods block (files, store, network): call them from a worker. The
// serving lookups (local_path, redirect_url) read an in-memory copy of the metadata kept fresh
// by a store watch, so a boot server can call them per request.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/store/store.hpp"
#include "agent/util/error.hpp"
#include "modules/netboot/inventory.hpp"

namespace neco {
class ModuleRoutes;
class WorkerPool;
namespace metrics {
class Registry;
class CollectorHandle;
}  // namespace metrics
}  // namespace neco

namespace neco::netboot {

// invalid_argument unless `name` is 1-128 of [A-Za-z0-9._-] and does not start with '.'.
Expected<void> validate_asset_name(std::string_view name);

// One asset's metadata as stored under assets/<name>.
struct AssetInfo {
  std::string name;
  std::string sha256;  // lowercase hex of the content's SHA-256
  std::uint64_t size = 0;
  std::string content_type;
  std::int64_t created = 0;          // unix seconds of the commit
  std::string who;                   // who committed it
  std::vector<std::string> holders;  // controllers that have the bytes
  std::int64_t mod_revision = 0;     // the key's mod revision (not part of the JSON)

  bool operator==(const AssetInfo&) const = default;
};
nlohmann::json to_json(const AssetInfo& info);
// Strict: unknown keys and wrong types are errors naming the key.
Expected<AssetInfo> asset_from_json(const nlohmann::json& j);

struct AssetStoreOptions {
  std::string prefix = "/neco/netboot/";
  std::string self;           // this controller's name (holders, servers/<self>); required
  std::filesystem::path dir;  // local directory of the bytes (<state dir>/assets); required
  TxnRunner txn;              // empty: store.txn (assets are not leader-only writes)
  std::function<std::chrono::system_clock::time_point()> clock;  // empty: system_clock::now
  metrics::Registry* metrics = nullptr;        // where start() declares the metrics; null: none
  std::uint64_t max_asset_bytes = 4ULL << 30;  // largest upload / pull accepted
  std::size_t max_uploads = 8;                 // uploads in progress at once
  std::chrono::seconds upload_idle = std::chrono::minutes(15);      // idle uploads are discarded
  std::chrono::seconds resync_interval = std::chrono::seconds(30);  // safety-net sync period
  std::chrono::seconds pull_timeout = std::chrono::minutes(30);     // one whole download
  std::chrono::seconds pull_stall = std::chrono::seconds(60);  // below 1 KiB/s this long: give up
  std::chrono::milliseconds backoff_min{1000};    // first retry delay of a failing asset
  std::chrono::milliseconds backoff_max{300000};  // cap of the doubling retry delay
  int max_attempts = 20;  // rounds of read-compute-txn under contention before giving up
};

// What one append_upload() did: accepted, or refused because `offset` was not where the upload
// stands; `offset` is then the size the upload has (where the client must continue).
struct UploadAppend {
  bool accepted = false;
  std::uint64_t offset = 0;  // the upload's size after the call
};

// What one sync_once() did.
struct SyncReport {
  std::size_t assets = 0;           // assets in the store
  std::size_t pulled = 0;           // downloaded, verified and published here
  std::size_t adopted = 0;          // already here, self added to their holders
  std::size_t failed = 0;           // pulls or holder updates that failed (retried later)
  std::size_t deferred = 0;         // skipped because their retry backoff has not passed yet
  std::size_t removed = 0;          // unreferenced local files the GC pass removed
  std::vector<std::string> errors;  // one line per failure
};

// Counters for metrics and tests (relaxed atomics).
struct AssetStats {
  std::atomic<std::uint64_t> pulls{0};            // downloads published
  std::atomic<std::uint64_t> pull_failures{0};    // downloads that failed (any reason)
  std::atomic<std::uint64_t> pull_corrupt{0};     // of those: wrong size or SHA-256
  std::atomic<std::uint64_t> pulled_bytes{0};     // bytes of published downloads
  std::atomic<std::uint64_t> sync_runs{0};        // sync_once() calls
  std::atomic<std::uint64_t> sync_failures{0};    // sync_once() calls with any failure
  std::atomic<std::uint64_t> commits{0};          // uploads published
  std::atomic<std::uint64_t> commit_rejects{0};   // commits refused for size/hash mismatch
  std::atomic<std::uint64_t> uploads_expired{0};  // idle uploads discarded
  std::atomic<std::uint64_t> gc_removed{0};       // unreferenced files removed
};

class AssetStore {
 public:
  using Options = AssetStoreOptions;

  // `store` must outlive the asset store. Nothing happens before start() (or a first call).
  AssetStore(store::Store& store, Options options);
  ~AssetStore();
  AssetStore(const AssetStore&) = delete;
  AssetStore& operator=(const AssetStore&) = delete;

  // Creates the directories, loads the metadata, watches it, declares the metrics and starts
  // the replication thread (sync at once, after every change, every resync_interval). Blocks
  // briefly on the store.
  Expected<void> start();
  // Ends the thread and the watches promptly (a download in progress is aborted); idempotent.
  void stop();

  // Publishes this controller's boot server URL under servers/<self> (http:// or https://).
  Expected<void> advertise(std::string url);

  // ---- Uploads

  // Appends `data` at `offset` to the upload of `name` (offset 0 starts one). A wrong offset
  // changes nothing and reports the upload's size. invalid_argument for a bad name or growing
  // past max_asset_bytes, unavailable when max_uploads uploads are in progress.
  Expected<UploadAppend> append_upload(std::string_view name, std::uint64_t offset,
                                       std::string_view data);
  // The upload's current size; not_found when none is in progress.
  Expected<std::uint64_t> upload_offset(std::string_view name);
  // Verifies the upload against `size` and `sha256` (64 lowercase hex), stores the bytes and
  // publishes the asset with holders = [self], replacing one of the same name, audited. A
  // mismatch is invalid_argument naming both values; the upload is discarded and nothing else
  // changes. not_found when no upload is in progress.
  Expected<AssetInfo> commit_upload(std::string_view name, std::string_view sha256,
                                    std::uint64_t size, std::string_view content_type,
                                    std::string_view who);
  // Drops the upload of `name` (a client starting over); not_found when there is none.
  Expected<void> discard_upload(std::string_view name);
  // Discards upload files idle longer than upload_idle; returns how many.
  std::size_t expire_uploads();

  // ---- Metadata

  // Every asset, sorted by name (read from the store).
  Expected<std::vector<AssetInfo>> list();
  // One asset; not_found if unknown.
  Expected<AssetInfo> get(std::string_view name);
  // Removes an asset (audited); its file goes at the next GC pass. not_found if unknown.
  Expected<void> remove(std::string_view name, std::string_view who);

  // ---- Replication

  // Pulls every asset missing here from a holder, adds self to holders where the bytes are
  // here, then runs a GC pass and expires idle uploads. Failures are in the report (and
  // counted); an error only when the store cannot be read.
  Expected<SyncReport> sync_once();
  // Removes local files that no asset references; returns how many.
  Expected<std::size_t> gc_once();

  // ---- Serving (in-memory, cheap)

  // The file of `name` when its bytes are here.
  std::optional<std::filesystem::path> local_path(std::string_view name) const;
  // `<holder url>/boot/assets/<name>` of a holder other than self with an advertised URL, when
  // the bytes are not here yet.
  std::optional<std::string> redirect_url(std::string_view name) const;
  // The cached metadata of `name` (content type and size for the boot server).
  std::optional<AssetInfo> cached(std::string_view name) const;

  const AssetStats& stats() const { return stats_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::string asset_key(std::string_view name) const;
  std::string server_key(std::string_view controller) const;

 private:
  struct Cache;
  struct Backoff {
    std::chrono::steady_clock::time_point next;
    std::chrono::milliseconds delay{0};
  };

  std::chrono::system_clock::time_point now() const;
  Expected<store::TxnResponse> run(const store::Txn& txn);
  Expected<void> ensure_dirs();
  std::filesystem::path blob_path(std::string_view sha256) const;
  std::filesystem::path upload_path(std::string_view name) const;
  std::filesystem::path temp_path(std::string_view what) const;
  // Reads assets/ (or servers/) and installs it in the cache when it is not older than it.
  Expected<std::vector<AssetInfo>> load_assets();
  Expected<void> load_servers();
  Expected<void> start_watches();
  void on_watch(bool assets, const store::WatchResponse& response);
  // Moves a verified temp file to <dir>/<sha256> (durably); the sha256 must be pinned.
  Expected<void> publish(const std::filesystem::path& temp, std::string_view sha256);
  Expected<void> pull(const AssetInfo& info);
  Expected<bool> add_self_as_holder(std::string_view name, std::string_view sha256);
  void pin(const std::string& sha256);
  void unpin(const std::string& sha256);
  void declare_metrics();
  void loop();

  store::Store& store_;
  Options options_;
  std::string prefix_;
  std::filesystem::path dir_;
  AssetStats stats_;

  std::unique_ptr<Cache> cache_;  // metadata and servers, guarded by its own mutex

  std::mutex uploads_mu_;  // serialises upload file changes (append, take for commit, expire)
  std::mutex pins_mu_;     // guards pins_; held by GC across its store read and deletions
  std::map<std::string, int> pins_;  // sha256 of files being published (GC keeps them)

  std::mutex sync_mu_;                      // one sync_once at a time (thread, routes, tests)
  std::map<std::string, Backoff> backoff_;  // by asset name; guarded by sync_mu_

  std::mutex loop_mu_;  // guards the flags below
  std::condition_variable loop_cv_;
  bool stopping_ = false;
  bool dirty_ = false;              // a watch saw a change
  bool rewatch_ = false;            // a watch ended with an error: reload and watch again
  std::atomic<bool> abort_{false};  // aborts a download in progress (stop)
  std::unique_ptr<store::Watch> assets_watch_;
  std::unique_ptr<store::Watch> servers_watch_;
  std::thread thread_;
  std::unique_ptr<metrics::CollectorHandle> collector_;
  bool started_ = false;
};

// The admin routes under /v1/netboot/: GET assets, GET assets/{name}, PUT
// assets/{name}/upload?offset=N (raw bytes), GET assets/{name}/upload (the offset), DELETE
// assets/{name}/upload (start over), POST
// assets/{name} ({"sha256","size","content_type"}: commit), DELETE assets/{name}. The routes are
// declared before start: `assets` and `workers` are asked at request time (503 while either is
// null); the handlers keep the returned shared_ptr while their worker runs.
void add_asset_routes(ModuleRoutes& routes,
                      const std::function<std::shared_ptr<AssetStore>()>& assets,
                      const std::function<WorkerPool*()>& workers);

}  // namespace neco::netboot
