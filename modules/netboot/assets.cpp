// The asset store: metadata in the Store, content-addressed bytes on local disk, chunked
// uploads, and the replication thread that pulls missing bytes from other controllers. See
// assets.hpp for the layout and the threading rules.
#include "modules/netboot/assets.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <random>
#include <utility>

#include "agent/log/log.hpp"
#include "agent/metrics/registry.hpp"
#include "modules/netboot/json_fields.hpp"
#include "modules/netboot/sha256.hpp"

namespace neco::netboot {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using store::Compare;
using store::CompareOp;
using store::KeyValue;
using store::Op;

const log::Logger& logger() {
  static const log::Logger l("netboot.assets");
  return l;
}

constexpr std::size_t kMaxNameLength = 128;
constexpr std::size_t kMaxContentTypeLength = 255;
constexpr std::size_t kIoChunk = 1U << 20;
constexpr const char* kDefaultContentType = "application/octet-stream";

std::int64_t to_unix(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string errno_text(int err) {
  return std::strerror(err);  // NOLINT(concurrency-mt-unsafe): messages only
}

std::uint32_t random_u32() {
  thread_local std::mt19937 rng{std::random_device{}()};
  return static_cast<std::uint32_t>(rng());
}

// An owned file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  // Closes now; returns the close() error (0 when fine).
  int reset() {
    int err = 0;
    if (fd_ >= 0 && ::close(fd_) != 0) err = errno;
    fd_ = -1;
    return err;
  }

 private:
  int fd_;
};

Expected<void> write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    const auto n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Errc::internal,
                  fmt::format("cannot write '{}': {}", path.string(), errno_text(errno)));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

Expected<void> fsync_path(const fs::path& path, bool directory) {
  Fd fd(::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC));
  if (!fd || ::fsync(fd.get()) != 0) {
    return fail(Errc::internal,
                fmt::format("cannot fsync '{}': {}", path.string(), errno_text(errno)));
  }
  return {};
}

struct Digest {
  std::uint64_t size = 0;
  std::string sha256;
};

Expected<Digest> hash_file(const fs::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    return fail(Errc::internal,
                fmt::format("cannot open '{}': {}", path.string(), errno_text(errno)));
  }
  Sha256 sha;
  Digest d;
  std::string buf(kIoChunk, '\0');
  while (true) {
    const auto n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(Errc::internal,
                  fmt::format("cannot read '{}': {}", path.string(), errno_text(errno)));
    }
    if (n == 0) break;
    sha.update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    d.size += static_cast<std::uint64_t>(n);
  }
  d.sha256 = sha.hex();
  return d;
}

Error corrupt(const std::string& key, const Error& e) {
  return Error{Errc::internal, fmt::format("corrupt record at '{}': {}", key, e.message)};
}

Expected<AssetInfo> decode_asset(const KeyValue& kv) {
  auto j = json_fields::parse(kv.value, "asset record");
  if (!j) return std::unexpected(corrupt(kv.key, j.error()));
  auto a = asset_from_json(*j);
  if (!a) return std::unexpected(corrupt(kv.key, a.error()));
  a->mod_revision = kv.mod_revision;
  return a;
}

Expected<std::string> decode_server(const KeyValue& kv) {
  auto j = json_fields::parse(kv.value, "server record");
  if (!j) return std::unexpected(corrupt(kv.key, j.error()));
  if (auto ok = json_fields::check_object(*j, "server record", {"url"}); !ok) {
    return std::unexpected(corrupt(kv.key, ok.error()));
  }
  auto url = json_fields::require_string(*j, "server record", "url");
  if (!url) return std::unexpected(corrupt(kv.key, url.error()));
  return url;
}

Expected<void> validate_content_type(std::string_view ct) {
  if (ct.size() > kMaxContentTypeLength) {
    return fail(Errc::invalid_argument,
                fmt::format("content_type: longer than {} characters", kMaxContentTypeLength));
  }
  // It becomes a Content-Type header of the boot server: visible ASCII and spaces only.
  for (const char c : ct) {
    if (c < 0x20 || c > 0x7e) {
      return fail(Errc::invalid_argument,
                  "content_type: only printable ASCII is allowed (it becomes an HTTP header)");
    }
  }
  return {};
}

void curl_global() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

}  // namespace

Expected<void> validate_asset_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) {
    return fail(
        Errc::invalid_argument,
        fmt::format("asset name '{}': must be 1 to {} characters long", name, kMaxNameLength));
  }
  if (name.front() == '.') {
    return fail(Errc::invalid_argument,
                fmt::format("asset name '{}': must not start with '.'", name));
  }
  for (const char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) {
      return fail(Errc::invalid_argument,
                  fmt::format("asset name '{}': only letters, digits, '.', '_' and '-' are "
                              "allowed",
                              name));
    }
  }
  return {};
}

json to_json(const AssetInfo& a) {
  return json{{"name", a.name},       {"sha256", a.sha256},
              {"size", a.size},       {"content_type", a.content_type},
              {"created", a.created}, {"who", a.who},
              {"holders", a.holders}};
}

Expected<AssetInfo> asset_from_json(const json& j) {
  constexpr std::string_view what = "asset";
  if (auto ok = json_fields::check_object(
          j, what, {"name", "sha256", "size", "content_type", "created", "who", "holders"});
      !ok) {
    return std::unexpected(ok.error());
  }
  AssetInfo a;
  auto name = json_fields::require_string(j, what, "name");
  if (!name) return std::unexpected(name.error());
  a.name = std::move(*name);
  auto sha = json_fields::require_string(j, what, "sha256");
  if (!sha) return std::unexpected(sha.error());
  if (!is_sha256_hex(*sha)) {
    return fail(Errc::invalid_argument, "asset.sha256: not 64 lowercase hex digits");
  }
  a.sha256 = std::move(*sha);
  const auto size = j.find("size");
  if (size == j.end() || !size->is_number_unsigned()) {
    return fail(Errc::invalid_argument, "asset.size: must be a non-negative integer");
  }
  a.size = size->get<std::uint64_t>();
  auto ct = json_fields::get_string(j, what, "content_type");
  if (!ct) return std::unexpected(ct.error());
  a.content_type = ct->value_or(kDefaultContentType);
  auto created = json_fields::get_i64(j, what, "created");
  if (!created) return std::unexpected(created.error());
  a.created = created->value_or(0);
  auto who = json_fields::get_string(j, what, "who");
  if (!who) return std::unexpected(who.error());
  a.who = who->value_or("");
  if (const auto h = j.find("holders"); h != j.end() && !h->is_null()) {
    if (!h->is_array()) return fail(Errc::invalid_argument, "asset.holders: must be an array");
    for (const auto& e : *h) {
      if (!e.is_string()) {
        return fail(Errc::invalid_argument, "asset.holders: must hold controller names");
      }
      a.holders.push_back(e.get<std::string>());
    }
  }
  return a;
}

// ---- The cache

struct AssetStore::Cache {
  mutable std::mutex mu;
  std::map<std::string, AssetInfo, std::less<>> assets;
  std::int64_t assets_revision = 0;                         // the store revision `assets` reflects
  std::map<std::string, std::string, std::less<>> servers;  // controller -> boot server URL
  std::int64_t servers_revision = 0;
};

AssetStore::AssetStore(store::Store& store, Options options)
    : store_(store),
      options_(std::move(options)),
      prefix_(options_.prefix),
      dir_(options_.dir),
      cache_(std::make_unique<Cache>()) {}

AssetStore::~AssetStore() {
  stop();
}

std::string AssetStore::asset_key(std::string_view name) const {
  return prefix_ + "assets/" + std::string(name);
}

std::string AssetStore::server_key(std::string_view controller) const {
  return prefix_ + "servers/" + std::string(controller);
}

std::chrono::system_clock::time_point AssetStore::now() const {
  return options_.clock ? options_.clock() : std::chrono::system_clock::now();
}

Expected<store::TxnResponse> AssetStore::run(const store::Txn& txn) {
  return options_.txn ? options_.txn(txn) : store_.txn(txn);
}

fs::path AssetStore::blob_path(std::string_view sha256) const {
  return dir_ / std::string(sha256);
}

fs::path AssetStore::upload_path(std::string_view name) const {
  return dir_ / "uploads" / std::string(name);
}

fs::path AssetStore::temp_path(std::string_view what) const {
  return dir_ / "tmp" / fmt::format("{}-{:08x}", what, random_u32());
}

Expected<void> AssetStore::ensure_dirs() {
  if (options_.self.empty()) {
    return fail(Errc::invalid_argument, "asset store: the controller name (self) is empty");
  }
  if (dir_.empty()) return fail(Errc::invalid_argument, "asset store: no local directory");
  for (const auto& d : {dir_, dir_ / "uploads", dir_ / "tmp"}) {
    std::error_code ec;
    fs::create_directories(d, ec);
    if (ec) {
      return fail(Errc::internal, fmt::format("cannot create '{}': {}", d.string(), ec.message()));
    }
  }
  return {};
}

void AssetStore::pin(const std::string& sha256) {
  std::lock_guard lock(pins_mu_);
  ++pins_[sha256];
}

void AssetStore::unpin(const std::string& sha256) {
  std::lock_guard lock(pins_mu_);
  if (auto it = pins_.find(sha256); it != pins_.end() && --it->second <= 0) pins_.erase(it);
}

// ---- Loading and watching the metadata

Expected<std::vector<AssetInfo>> AssetStore::load_assets() {
  const auto prefix = prefix_ + "assets/";
  auto r = store_.range({store::KeyRange::prefix(prefix), 0});
  if (!r) return std::unexpected(r.error());
  std::vector<AssetInfo> out;
  std::map<std::string, AssetInfo, std::less<>> fresh;
  for (const auto& kv : r->kvs) {
    auto a = decode_asset(kv);
    if (!a) {
      logger().warning("Skipping asset record: {}", a.error().message);
      continue;
    }
    fresh.emplace(a->name, *a);
    out.push_back(std::move(*a));
  }
  std::lock_guard lock(cache_->mu);
  if (r->revision >= cache_->assets_revision) {
    cache_->assets = std::move(fresh);
    cache_->assets_revision = r->revision;
  }
  return out;
}

Expected<void> AssetStore::load_servers() {
  const auto prefix = prefix_ + "servers/";
  auto r = store_.range({store::KeyRange::prefix(prefix), 0});
  if (!r) return std::unexpected(r.error());
  std::map<std::string, std::string, std::less<>> fresh;
  for (const auto& kv : r->kvs) {
    auto url = decode_server(kv);
    if (!url) {
      logger().warning("Skipping boot server record: {}", url.error().message);
      continue;
    }
    fresh.emplace(kv.key.substr(prefix.size()), std::move(*url));
  }
  std::lock_guard lock(cache_->mu);
  if (r->revision >= cache_->servers_revision) {
    cache_->servers = std::move(fresh);
    cache_->servers_revision = r->revision;
  }
  return {};
}

void AssetStore::on_watch(bool assets, const store::WatchResponse& response) {
  if (response.error) {
    logger().warning("The {} watch ended: {}; reloading", assets ? "asset" : "boot server",
                     response.error->message);
    std::lock_guard lock(loop_mu_);
    rewatch_ = true;
    loop_cv_.notify_all();
    return;
  }
  {
    std::lock_guard lock(cache_->mu);
    auto& revision = assets ? cache_->assets_revision : cache_->servers_revision;
    if (response.revision <= revision) return;  // a reload already saw these events
    const auto prefix = prefix_ + (assets ? "assets/" : "servers/");
    for (const auto& ev : response.events) {
      const auto id = ev.kv.key.substr(std::min(prefix.size(), ev.kv.key.size()));
      if (ev.type == store::EventType::del) {
        if (assets) {
          cache_->assets.erase(id);
        } else {
          cache_->servers.erase(id);
        }
        continue;
      }
      if (assets) {
        auto a = decode_asset(ev.kv);
        if (!a) {
          logger().warning("Skipping asset record: {}", a.error().message);
          cache_->assets.erase(id);
          continue;
        }
        cache_->assets.insert_or_assign(id, std::move(*a));
      } else {
        auto url = decode_server(ev.kv);
        if (!url) {
          logger().warning("Skipping boot server record: {}", url.error().message);
          cache_->servers.erase(id);
          continue;
        }
        cache_->servers.insert_or_assign(id, std::move(*url));
      }
    }
    revision = response.revision;
  }
  std::lock_guard lock(loop_mu_);
  dirty_ = true;
  loop_cv_.notify_all();
}

Expected<void> AssetStore::start_watches() {
  assets_watch_.reset();
  servers_watch_.reset();
  // Each load installs the state at its revision; each watch continues from the next one.
  if (auto a = load_assets(); !a) return std::unexpected(a.error());
  if (auto s = load_servers(); !s) return std::unexpected(s.error());
  std::int64_t assets_rev = 0;
  std::int64_t servers_rev = 0;
  {
    std::lock_guard lock(cache_->mu);
    assets_rev = cache_->assets_revision;
    servers_rev = cache_->servers_revision;
  }
  auto aw = store_.watch({store::KeyRange::prefix(prefix_ + "assets/"), assets_rev + 1, false},
                         [this](const store::WatchResponse& r) { on_watch(true, r); });
  if (!aw) return std::unexpected(aw.error());
  auto sw = store_.watch({store::KeyRange::prefix(prefix_ + "servers/"), servers_rev + 1, false},
                         [this](const store::WatchResponse& r) { on_watch(false, r); });
  if (!sw) return std::unexpected(sw.error());
  assets_watch_ = std::move(*aw);
  servers_watch_ = std::move(*sw);
  return {};
}

// ---- Life cycle

Expected<void> AssetStore::start() {
  if (started_) return {};
  if (auto ok = ensure_dirs(); !ok) return ok;
  // Leftovers of a crash mid-commit or mid-download are never referenced: clear them.
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_ / "tmp", ec)) {
    fs::remove(e.path(), ec);
  }
  if (auto ok = start_watches(); !ok) {
    assets_watch_.reset();
    servers_watch_.reset();
    return ok;
  }
  if (options_.metrics != nullptr) declare_metrics();
  {
    std::lock_guard lock(loop_mu_);
    stopping_ = false;
    dirty_ = true;  // sync at once
  }
  abort_ = false;
  thread_ = std::thread([this] { loop(); });
  started_ = true;
  return {};
}

void AssetStore::stop() {
  {
    std::lock_guard lock(loop_mu_);
    stopping_ = true;
    loop_cv_.notify_all();
  }
  abort_ = true;
  if (thread_.joinable()) thread_.join();
  assets_watch_.reset();
  servers_watch_.reset();
  collector_.reset();
  started_ = false;
}

// The replication thread. A dedicated thread rather than the worker pool: a pull can take
// minutes (hundreds of MiB), which would hold a bounded pool slot far past any deadline the
// pool's callers use; here it waits on a condition variable and stop() aborts a download
// through curl's progress callback.
void AssetStore::loop() {
  using Clock = std::chrono::steady_clock;
  auto next = Clock::now() + options_.resync_interval;
  auto failure_delay = options_.backoff_min;
  bool rewatch = false;
  while (true) {
    {
      std::unique_lock lock(loop_mu_);
      loop_cv_.wait_until(lock, next, [&] { return stopping_ || dirty_ || rewatch_; });
      if (stopping_) return;
      rewatch = rewatch || rewatch_;
      rewatch_ = false;
      dirty_ = false;
    }
    bool ok = true;
    if (rewatch) {
      if (auto w = start_watches(); !w) {
        logger().warning("Failed to watch the asset metadata: {}; retrying", w.error().message);
        ok = false;
      } else {
        rewatch = false;
      }
    }
    auto r = sync_once();
    if (!r) {
      logger().warning("Failed to sync the assets: {}", r.error().message);
      ok = false;
    }
    if (ok) {
      failure_delay = options_.backoff_min;
      next = Clock::now() + options_.resync_interval;
      // Wake for the earliest asset whose retry is due.
      std::lock_guard lock(sync_mu_);
      for (const auto& [name, b] : backoff_)
        next = std::min(next, b.next);
    } else {
      next = Clock::now() + failure_delay;
      failure_delay = std::min(failure_delay * 2, options_.backoff_max);
    }
  }
}

Expected<void> AssetStore::advertise(std::string url) {
  while (!url.empty() && url.back() == '/')
    url.pop_back();
  if (!url.starts_with("http://") && !url.starts_with("https://")) {
    return fail(Errc::invalid_argument,
                fmt::format("boot server URL '{}': must start with http:// or https://", url));
  }
  for (const char c : url) {
    if (c <= 0x20 || c > 0x7e) {
      return fail(Errc::invalid_argument,
                  fmt::format("boot server URL '{}': spaces and control characters are not "
                              "allowed",
                              url));
    }
  }
  if (options_.self.empty()) {
    return fail(Errc::invalid_argument, "asset store: the controller name (self) is empty");
  }
  const auto key = server_key(options_.self);
  const auto value = json{{"url", url}}.dump();
  store::Txn txn;
  // Unchanged: write nothing (no watch event on every controller at each restart).
  txn.compares.push_back(Compare::value_of(key, CompareOp::equal, value));
  txn.failure.push_back(Op::make_put(key, value));
  auto r = run(txn);
  if (!r) return std::unexpected(r.error());
  return {};
}

// ---- Uploads

Expected<UploadAppend> AssetStore::append_upload(std::string_view name, std::uint64_t offset,
                                                 std::string_view data) {
  if (auto ok = validate_asset_name(name); !ok) return std::unexpected(ok.error());
  if (auto ok = ensure_dirs(); !ok) return std::unexpected(ok.error());
  const auto path = upload_path(name);
  std::lock_guard lock(uploads_mu_);
  std::error_code ec;
  const bool exists = fs::exists(path, ec);
  const std::uint64_t size = exists ? fs::file_size(path, ec) : 0;
  if (ec) {
    return fail(Errc::internal, fmt::format("cannot stat '{}': {}", path.string(), ec.message()));
  }
  if (offset != size) return UploadAppend{false, size};
  if (size + data.size() > options_.max_asset_bytes) {
    return fail(Errc::invalid_argument, fmt::format("asset '{}': larger than the limit of {} bytes",
                                                    name, options_.max_asset_bytes));
  }
  if (!exists) {
    std::size_t in_progress = 0;
    for (const auto& e : fs::directory_iterator(dir_ / "uploads", ec)) {
      (void)e;
      ++in_progress;
    }
    if (in_progress >= options_.max_uploads) {
      return fail(Errc::unavailable,
                  fmt::format("{} uploads are in progress (the limit): finish or discard one, or "
                              "wait until idle ones expire",
                              in_progress));
    }
  }
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!fd) {
    return fail(Errc::internal,
                fmt::format("cannot open '{}': {}", path.string(), errno_text(errno)));
  }
  if (auto ok = write_all(fd.get(), data, path); !ok) {
    // Leave the upload as it was, so the client's retry at the same offset fits.
    (void)!::ftruncate(fd.get(), static_cast<off_t>(size));
    return std::unexpected(ok.error());
  }
  if (const int err = fd.reset(); err != 0) {
    return fail(Errc::internal,
                fmt::format("cannot write '{}': {}", path.string(), errno_text(err)));
  }
  return UploadAppend{true, size + data.size()};
}

Expected<std::uint64_t> AssetStore::upload_offset(std::string_view name) {
  if (auto ok = validate_asset_name(name); !ok) return std::unexpected(ok.error());
  std::lock_guard lock(uploads_mu_);
  std::error_code ec;
  const auto size = fs::file_size(upload_path(name), ec);
  if (ec) return fail(Errc::not_found, fmt::format("no upload of '{}' is in progress", name));
  return size;
}

Expected<void> AssetStore::discard_upload(std::string_view name) {
  if (auto ok = validate_asset_name(name); !ok) return std::unexpected(ok.error());
  std::lock_guard lock(uploads_mu_);
  std::error_code ec;
  if (!fs::remove(upload_path(name), ec)) {
    return fail(Errc::not_found, fmt::format("no upload of '{}' is in progress", name));
  }
  return {};
}

std::size_t AssetStore::expire_uploads() {
  std::lock_guard lock(uploads_mu_);
  std::size_t removed = 0;
  std::error_code ec;
  const auto cutoff = fs::file_time_type::clock::now() - options_.upload_idle;
  for (const auto& e : fs::directory_iterator(dir_ / "uploads", ec)) {
    std::error_code e2;
    const auto mtime = e.last_write_time(e2);
    if (!e2 && mtime < cutoff && fs::remove(e.path(), e2)) {
      logger().info("Discarded the idle upload of '{}'", e.path().filename().string());
      ++removed;
    }
  }
  stats_.uploads_expired += removed;
  return removed;
}

Expected<AssetInfo> AssetStore::commit_upload(std::string_view name, std::string_view sha256,
                                              std::uint64_t size, std::string_view content_type,
                                              std::string_view who) {
  if (auto ok = validate_asset_name(name); !ok) return std::unexpected(ok.error());
  if (!is_sha256_hex(sha256)) {
    return fail(Errc::invalid_argument,
                fmt::format("sha256 '{}': must be 64 lowercase hex digits", sha256));
  }
  if (auto ok = validate_content_type(content_type); !ok) return std::unexpected(ok.error());
  if (auto ok = ensure_dirs(); !ok) return std::unexpected(ok.error());

  // Take the upload out of uploads/ so no append changes it while it is hashed.
  const auto temp = temp_path("commit");
  {
    std::lock_guard lock(uploads_mu_);
    std::error_code ec;
    fs::rename(upload_path(name), temp, ec);
    if (ec) {
      if (ec == std::errc::no_such_file_or_directory) {
        return fail(Errc::not_found,
                    fmt::format("no upload of '{}' is in progress: PUT its bytes to "
                                "assets/{}/upload?offset=0 first",
                                name, name));
      }
      return fail(Errc::internal,
                  fmt::format("cannot take the upload of '{}': {}", name, ec.message()));
    }
  }
  const auto discard = [&] {
    std::error_code ec;
    fs::remove(temp, ec);
  };
  auto digest = hash_file(temp);
  if (!digest) {
    discard();
    return std::unexpected(digest.error());
  }
  if (digest->size != size || digest->sha256 != sha256) {
    discard();
    ++stats_.commit_rejects;
    return fail(Errc::invalid_argument,
                fmt::format("asset '{}': the uploaded bytes are {} bytes with SHA-256 {}, but the "
                            "commit says {} bytes with SHA-256 {}; the upload was discarded, "
                            "upload it again",
                            name, digest->size, digest->sha256, size, sha256));
  }
  if (auto ok = fsync_path(temp, false); !ok) {
    discard();
    return std::unexpected(ok.error());
  }
  const std::string sha(sha256);
  pin(sha);
  if (auto ok = publish(temp, sha); !ok) {
    unpin(sha);
    discard();
    return std::unexpected(ok.error());
  }

  const auto key = asset_key(name);
  Expected<AssetInfo> result = fail(
      Errc::unavailable,
      fmt::format("could not commit asset '{}': its record kept changing underneath; retry", name));
  for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
    auto kv = store_.get(key);
    if (!kv && kv.error().code != Errc::not_found) {
      result = std::unexpected(kv.error());
      break;
    }
    json before = nullptr;
    std::int64_t rev = 0;
    if (kv) {
      rev = kv->mod_revision;
      auto j = json_fields::parse(kv->value, "asset record");
      before = j ? std::move(*j) : json(kv->value);
    }
    const auto t = now();
    AssetInfo info;
    info.name = std::string(name);
    info.sha256 = sha;
    info.size = size;
    info.content_type = content_type.empty() ? kDefaultContentType : std::string(content_type);
    info.created = to_unix(t);
    info.who = std::string(who);
    info.holders = {options_.self};
    store::Txn txn;
    txn.compares.push_back(Compare::mod_revision(key, CompareOp::equal, rev));
    txn.success.push_back(Op::make_put(key, to_json(info).dump()));
    add_audit_entry(txn, prefix_ + "audit/", t, who, "put_asset", "", std::move(before),
                    to_json(info));
    auto r = run(txn);
    if (!r) {
      result = std::unexpected(r.error());
      break;
    }
    if (r->succeeded) {
      info.mod_revision = r->revision;
      result = std::move(info);
      break;
    }
  }
  // On failure the file stays unreferenced (unless another asset has the same bytes) and the
  // next GC pass removes it.
  unpin(sha);
  if (result) {
    ++stats_.commits;
    logger().info("Committed asset '{}' ({} bytes, sha256 {}) for {}", name, size, sha, who);
  }
  return result;
}

Expected<void> AssetStore::publish(const fs::path& temp, std::string_view sha256) {
  std::error_code ec;
  fs::rename(temp, blob_path(sha256), ec);
  if (ec) {
    return fail(Errc::internal,
                fmt::format("cannot move '{}' into place: {}", temp.string(), ec.message()));
  }
  return fsync_path(dir_, true);
}

// ---- Metadata

Expected<std::vector<AssetInfo>> AssetStore::list() {
  return load_assets();
}

Expected<AssetInfo> AssetStore::get(std::string_view name) {
  if (auto ok = validate_asset_name(name); !ok) return std::unexpected(ok.error());
  auto kv = store_.get(asset_key(name));
  if (!kv) {
    if (kv.error().code == Errc::not_found) {
      return fail(Errc::not_found, fmt::format("no asset '{}'", name));
    }
    return std::unexpected(kv.error());
  }
  return decode_asset(*kv);
}

Expected<void> AssetStore::remove(std::string_view name, std::string_view who) {
  if (auto ok = validate_asset_name(name); !ok) return std::unexpected(ok.error());
  const auto key = asset_key(name);
  for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
    auto kv = store_.get(key);
    if (!kv) {
      if (kv.error().code == Errc::not_found) {
        return fail(Errc::not_found, fmt::format("no asset '{}'", name));
      }
      return std::unexpected(kv.error());
    }
    auto j = json_fields::parse(kv->value, "asset record");
    store::Txn txn;
    txn.compares.push_back(Compare::mod_revision(key, CompareOp::equal, kv->mod_revision));
    txn.success.push_back(Op::make_delete(store::KeyRange::exact(key)));
    add_audit_entry(txn, prefix_ + "audit/", now(), who, "delete_asset", "",
                    j ? std::move(*j) : json(kv->value), nullptr);
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) {
      logger().info("Deleted asset '{}' for {}", name, who);
      return {};
    }
  }
  return fail(Errc::unavailable,
              fmt::format("could not delete asset '{}': its record kept changing; retry", name));
}

// ---- Replication

Expected<std::size_t> AssetStore::gc_once() {
  // Held across the read and the deletions: a commit unpins only after its txn, so either its
  // pin or its record is seen here.
  std::lock_guard lock(pins_mu_);
  auto r = store_.range({store::KeyRange::prefix(prefix_ + "assets/"), 0});
  if (!r) return std::unexpected(r.error());
  std::set<std::string, std::less<>> keep;
  for (const auto& kv : r->kvs) {
    auto a = decode_asset(kv);
    if (!a) {
      // Which file it names is unknown: delete nothing rather than something in use.
      return fail(Errc::internal, fmt::format("GC skipped: {}", a.error().message));
    }
    keep.insert(a->sha256);
  }
  for (const auto& [sha, n] : pins_)
    keep.insert(sha);
  std::size_t removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const auto file = e.path().filename().string();
    std::error_code e2;
    if (!is_sha256_hex(file) || !e.is_regular_file(e2) || keep.contains(file)) continue;
    if (fs::remove(e.path(), e2)) {
      logger().info("Removed unreferenced asset file {}", file);
      ++removed;
    }
  }
  if (ec && ec != std::errc::no_such_file_or_directory) {
    return fail(Errc::internal, fmt::format("cannot list '{}': {}", dir_.string(), ec.message()));
  }
  stats_.gc_removed += removed;
  return removed;
}

Expected<bool> AssetStore::add_self_as_holder(std::string_view name, std::string_view sha256) {
  const auto key = asset_key(name);
  for (int attempt = 0; attempt < options_.max_attempts; ++attempt) {
    auto kv = store_.get(key);
    if (!kv) {
      if (kv.error().code == Errc::not_found) return false;  // deleted meanwhile
      return std::unexpected(kv.error());
    }
    auto a = decode_asset(*kv);
    if (!a) return std::unexpected(a.error());
    if (a->sha256 != sha256) return false;  // replaced meanwhile: the next sync handles it
    if (std::find(a->holders.begin(), a->holders.end(), options_.self) != a->holders.end()) {
      return true;
    }
    a->holders.push_back(options_.self);
    store::Txn txn;
    txn.compares.push_back(Compare::mod_revision(key, CompareOp::equal, kv->mod_revision));
    txn.success.push_back(Op::make_put(key, to_json(*a).dump()));
    auto r = run(txn);
    if (!r) return std::unexpected(r.error());
    if (r->succeeded) return true;
  }
  return fail(Errc::unavailable,
              fmt::format("could not add {} to the holders of '{}': the record kept changing",
                          options_.self, name));
}

namespace {

struct Download {
  int fd = -1;
  const fs::path* path = nullptr;
  Sha256 sha;
  std::uint64_t bytes = 0;
  std::uint64_t limit = 0;
  bool too_big = false;
  std::string write_error;
  const std::atomic<bool>* abort = nullptr;
};

std::size_t download_write(char* data, std::size_t size, std::size_t n, void* user) {
  auto* d = static_cast<Download*>(user);
  const std::size_t len = size * n;
  if (d->bytes + len > d->limit) {
    d->too_big = true;
    return 0;
  }
  if (auto ok = write_all(d->fd, std::string_view(data, len), *d->path); !ok) {
    d->write_error = ok.error().message;
    return 0;
  }
  d->sha.update(std::string_view(data, len));
  d->bytes += len;
  return len;
}

int download_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<Download*>(user)->abort->load() ? 1 : 0;
}

}  // namespace

Expected<void> AssetStore::pull(const AssetInfo& info) {
  std::vector<std::pair<std::string, std::string>> sources;  // holder, url
  {
    std::lock_guard lock(cache_->mu);
    for (const auto& h : info.holders) {
      if (h == options_.self) continue;
      if (auto it = cache_->servers.find(h); it != cache_->servers.end()) {
        sources.emplace_back(h, it->second + "/boot/assets/" + info.name);
      }
    }
  }
  if (sources.empty()) {
    std::string holders;
    for (const auto& h : info.holders)
      holders += (holders.empty() ? "" : ", ") + h;
    return fail(Errc::unavailable,
                fmt::format("no holder of '{}' has advertised a boot server URL (holders: {})",
                            info.name, holders.empty() ? "none" : holders));
  }
  curl_global();
  std::vector<std::string> errors;
  for (const auto& [holder, url] : sources) {
    if (abort_) return fail(Errc::cancelled, "the asset store is stopping");
    const auto temp = temp_path("pull");
    Fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) {
      return fail(Errc::internal,
                  fmt::format("cannot create '{}': {}", temp.string(), errno_text(errno)));
    }
    Download d;
    d.fd = fd.get();
    d.path = &temp;
    d.limit = info.size;
    d.abort = &abort_;
    std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) return fail(Errc::internal, "cannot initialise libcurl");
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    // Controllers reach each other directly; a proxy from the environment must not interfere.
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 3L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
    curl_easy_setopt(
        c, CURLOPT_TIMEOUT_MS,
        static_cast<long>(
            std::chrono::duration_cast<std::chrono::milliseconds>(options_.pull_timeout).count()));
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.pull_stall.count()));
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, download_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &d);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, download_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &d);
    const CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    std::string problem;
    bool bad_bytes = false;
    if (d.too_big) {
      problem = fmt::format("sent more than the {} bytes the asset has", info.size);
      bad_bytes = true;
    } else if (!d.write_error.empty()) {
      problem = d.write_error;
    } else if (rc != CURLE_OK) {
      problem = rc == CURLE_ABORTED_BY_CALLBACK ? "aborted: the asset store is stopping"
                                                : curl_easy_strerror(rc);
    } else if (status != 200) {
      problem = fmt::format("answered HTTP {}", status);
    } else if (d.bytes != info.size) {
      problem = fmt::format("sent {} bytes, the asset has {}", d.bytes, info.size);
      bad_bytes = true;
    } else if (const auto got = d.sha.hex(); got != info.sha256) {
      problem = fmt::format("sent bytes with SHA-256 {}, the asset has {}", got, info.sha256);
      bad_bytes = true;
    }
    if (problem.empty() && ::fsync(fd.get()) != 0) problem = "fsync: " + errno_text(errno);
    if (const int err = fd.reset(); problem.empty() && err != 0) {
      problem = "close: " + errno_text(err);
    }
    if (problem.empty()) {
      pin(info.sha256);
      auto ok = publish(temp, info.sha256);
      unpin(info.sha256);
      if (ok) {
        ++stats_.pulls;
        stats_.pulled_bytes += info.size;
        logger().info("Pulled asset '{}' ({} bytes) from {}", info.name, info.size, holder);
        return {};
      }
      problem = ok.error().message;
    }
    std::error_code ec;
    fs::remove(temp, ec);
    ++stats_.pull_failures;
    if (bad_bytes) ++stats_.pull_corrupt;
    errors.push_back(fmt::format("{} ({}): {}", holder, url, problem));
    if (rc == CURLE_ABORTED_BY_CALLBACK) break;
  }
  std::string all;
  for (const auto& e : errors)
    all += (all.empty() ? "" : "; ") + e;
  return fail(Errc::unavailable, fmt::format("could not pull '{}': {}", info.name, all));
}

Expected<SyncReport> AssetStore::sync_once() {
  std::lock_guard lock(sync_mu_);
  ++stats_.sync_runs;
  if (auto ok = ensure_dirs(); !ok) {
    ++stats_.sync_failures;
    return std::unexpected(ok.error());
  }
  auto assets = load_assets();
  if (!assets) {
    ++stats_.sync_failures;
    return std::unexpected(assets.error());
  }
  SyncReport report;
  report.assets = assets->size();
  if (auto s = load_servers(); !s) {
    report.errors.push_back("boot servers: " + s.error().message);  // the cached ones serve
  }
  const auto steady = std::chrono::steady_clock::now();
  std::set<std::string, std::less<>> names;
  for (const auto& a : *assets) {
    names.insert(a.name);
    const bool here =
        std::find(a.holders.begin(), a.holders.end(), options_.self) != a.holders.end();
    std::error_code ec;
    if (fs::exists(blob_path(a.sha256), ec)) {
      if (here) continue;
      auto added = add_self_as_holder(a.name, a.sha256);
      if (!added) {
        ++report.failed;
        report.errors.push_back(added.error().message);
      } else if (*added) {
        ++report.adopted;
      }
      continue;
    }
    auto& b = backoff_[a.name];
    if (b.delay.count() > 0 && steady < b.next) {
      ++report.deferred;
      continue;
    }
    auto ok = pull(a);
    if (ok) {
      backoff_.erase(a.name);
      ++report.pulled;
      if (auto added = add_self_as_holder(a.name, a.sha256); !added) {
        ++report.failed;
        report.errors.push_back(added.error().message);
      }
      continue;
    }
    ++report.failed;
    report.errors.push_back(ok.error().message);
    b.delay =
        b.delay.count() == 0 ? options_.backoff_min : std::min(b.delay * 2, options_.backoff_max);
    b.next = steady + b.delay;
    logger().warning("Failed to pull asset '{}' (retry in {} ms): {}", a.name, b.delay.count(),
                     ok.error().message);
  }
  std::erase_if(backoff_, [&](const auto& e) { return !names.contains(e.first); });
  if (auto removed = gc_once(); removed) {
    report.removed = *removed;
  } else {
    report.errors.push_back(removed.error().message);
  }
  expire_uploads();
  if (report.failed > 0) ++stats_.sync_failures;
  return report;
}

// ---- Serving

std::optional<AssetInfo> AssetStore::cached(std::string_view name) const {
  std::lock_guard lock(cache_->mu);
  const auto it = cache_->assets.find(name);
  if (it == cache_->assets.end()) return std::nullopt;
  return it->second;
}

std::optional<fs::path> AssetStore::local_path(std::string_view name) const {
  std::string sha;
  {
    std::lock_guard lock(cache_->mu);
    const auto it = cache_->assets.find(name);
    if (it == cache_->assets.end()) return std::nullopt;
    sha = it->second.sha256;
  }
  auto path = blob_path(sha);
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  return path;
}

std::optional<std::string> AssetStore::redirect_url(std::string_view name) const {
  std::lock_guard lock(cache_->mu);
  const auto it = cache_->assets.find(name);
  if (it == cache_->assets.end()) return std::nullopt;
  std::error_code ec;
  if (fs::is_regular_file(blob_path(it->second.sha256), ec)) return std::nullopt;
  for (const auto& h : it->second.holders) {
    if (h == options_.self) continue;
    if (auto s = cache_->servers.find(h); s != cache_->servers.end()) {
      return s->second + "/boot/assets/" + it->second.name;
    }
  }
  return std::nullopt;
}

// ---- Metrics

void AssetStore::declare_metrics() {
  collector_ = std::make_unique<metrics::CollectorHandle>(
      options_.metrics->add_collector([this](std::vector<metrics::MetricFamily>& out) {
        std::size_t count = 0;
        std::size_t local = 0;
        double bytes = 0;
        double local_bytes = 0;
        {
          std::lock_guard lock(cache_->mu);
          for (const auto& [name, a] : cache_->assets) {
            ++count;
            bytes += static_cast<double>(a.size);
            std::error_code ec;
            if (fs::is_regular_file(blob_path(a.sha256), ec)) {
              ++local;
              local_bytes += static_cast<double>(a.size);
            }
          }
        }
        auto family = [&](const char* name, const char* help, metrics::MetricType type,
                          double value, const char* unit = "") {
          auto& f = out.emplace_back();
          f.name = name;
          f.help = help;
          f.type = type;
          f.unit = unit;
          f.add(value);
        };
        const auto gauge = metrics::MetricType::gauge;
        const auto counter = metrics::MetricType::counter;
        const auto load = [](const std::atomic<std::uint64_t>& v) {
          return static_cast<double>(v.load(std::memory_order_relaxed));
        };
        family("neco_netboot_assets", "Boot assets in the store", gauge,
               static_cast<double>(count));
        family("neco_netboot_assets_bytes", "Total size of the boot assets in the store", gauge,
               bytes, "bytes");
        family("neco_netboot_assets_local", "Boot assets whose bytes this controller holds", gauge,
               static_cast<double>(local));
        family("neco_netboot_assets_local_bytes",
               "Total size of the boot assets this controller holds", gauge, local_bytes, "bytes");
        family("neco_netboot_assets_missing",
               "Boot assets this controller has not pulled yet (served by redirect)", gauge,
               static_cast<double>(count - local));
        family("neco_netboot_asset_pulls_total", "Assets downloaded, verified and published",
               counter, load(stats_.pulls));
        family("neco_netboot_asset_pull_failures_total",
               "Asset downloads that failed (any reason; retried with backoff)", counter,
               load(stats_.pull_failures));
        family("neco_netboot_asset_pull_corrupt_total",
               "Asset downloads refused for a wrong size or SHA-256", counter,
               load(stats_.pull_corrupt));
        family("neco_netboot_asset_pulled_bytes_total", "Bytes of published asset downloads",
               counter, load(stats_.pulled_bytes));
        family("neco_netboot_asset_sync_runs_total", "Replication passes", counter,
               load(stats_.sync_runs));
        family("neco_netboot_asset_sync_failures_total",
               "Replication passes with at least one failure", counter, load(stats_.sync_failures));
        family("neco_netboot_asset_commits_total", "Uploads published as assets", counter,
               load(stats_.commits));
        family("neco_netboot_asset_commit_rejects_total",
               "Commits refused because the upload's size or SHA-256 did not match", counter,
               load(stats_.commit_rejects));
        family("neco_netboot_asset_uploads_expired_total", "Idle uploads discarded", counter,
               load(stats_.uploads_expired));
        family("neco_netboot_asset_gc_removed_total", "Unreferenced asset files removed", counter,
               load(stats_.gc_removed));
      }));
}

}  // namespace neco::netboot
