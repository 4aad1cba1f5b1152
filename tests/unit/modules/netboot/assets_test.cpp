// The asset store on a real SQLite store in temp dirs: names, the chunked upload protocol,
// commits that must change nothing when the bytes do not match, replace, delete and GC, idle
// uploads; and replication between two asset stores sharing one store, the holder serving its
// bytes through a real HTTP server on 127.0.0.1.
#include "modules/netboot/assets.hpp"

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <curl/curl.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "agent/http/server.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/module/context.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "agent/store/sqlite_store.hpp"
#include "modules/netboot/inventory.hpp"
#include "modules/netboot/sha256.hpp"
#include "tests/support/test_support.hpp"

using namespace neco;
using namespace neco::netboot;
namespace fs = std::filesystem;

namespace {

std::string sha_of(std::string_view data) {
  Sha256 s;
  s.update(data);
  return s.hex();
}

std::string random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out)
    c = static_cast<char>(rng() & 0xff);
  return out;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Files named by a SHA-256 in an asset directory.
std::size_t blob_count(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (is_sha256_hex(e.path().filename().string())) ++n;
  }
  return n;
}

AssetStoreOptions options(const fs::path& dir, std::string self) {
  AssetStoreOptions o;
  o.self = std::move(self);
  o.dir = dir;
  o.backoff_min = std::chrono::milliseconds(1);
  o.backoff_max = std::chrono::milliseconds(2);
  o.pull_timeout = std::chrono::seconds(20);
  return o;
}

struct Fixture {
  neco::testing::TempDir tmp;
  std::unique_ptr<store::SqliteStore> store;

  Fixture() {
    auto s = store::SqliteStore::open(tmp.file("store.db"));
    if (!s) FAIL("open: " << s.error().message);
    store = std::move(*s);
  }
  std::unique_ptr<AssetStore> make(const std::string& self, const AssetStoreOptions& o = {}) {
    auto base = options(tmp / self, self);
    base.max_uploads = o.max_uploads;
    base.max_asset_bytes = o.max_asset_bytes;
    base.metrics = o.metrics;
    return std::make_unique<AssetStore>(*store, std::move(base));
  }
  std::vector<AuditEntry> audit(const std::string& action) {
    Inventory inv(*store);
    AuditQuery q;
    q.limit = 0;
    q.action = action;
    auto r = inv.audit(q);
    if (!r) FAIL("audit: " << r.error().message);
    return *r;
  }
};

// Uploads `data` in chunks of `chunk` bytes and commits it.
AssetInfo put(AssetStore& a, const std::string& name, const std::string& data,
              std::size_t chunk = 1000) {
  std::uint64_t off = 0;
  do {
    const auto n = std::min<std::size_t>(chunk, data.size() - off);
    auto r = a.append_upload(name, off, std::string_view(data).substr(off, n));
    if (!r || !r->accepted) FAIL("append at " << off);
    off = r->offset;
  } while (off < data.size());
  auto info = a.commit_upload(name, sha_of(data), data.size(), "application/octet-stream", "test");
  if (!info) FAIL("commit: " << info.error().message);
  return *info;
}

// A boot server stand-in: serves /boot/assets/{name} from an asset store's local_path, or
// corrupted bytes of the same length when `corrupt` is set.
struct HolderServer {
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::optional<http::Server> server;
  std::thread thread;
  std::atomic<bool> corrupt{false};
  std::atomic<int> requests{0};
  std::string url;

  explicit HolderServer(AssetStore& assets) {
    auto router = std::make_shared<http::Router>();
    auto ok = router->add(
        "/boot/assets/{name}", "asset bytes",
        [this, &assets](http::Request& req) -> boost::asio::awaitable<http::Response> {
          ++requests;
          const auto path = assets.local_path(req.path_param("name").value_or(""));
          if (!path) {
            co_return http::Response::error(http::Status::not_found, "not_found", "no bytes");
          }
          http::Response r;
          r.content_type = "application/octet-stream";
          r.body = read_all(*path);
          if (corrupt && !r.body.empty()) r.body[r.body.size() / 2] ^= 0x5a;
          co_return r;
        });
    REQUIRE(ok);
    server.emplace(io, http::ServerLimits{}, log::Logger("http.test"));
    server->set_router(router);
    auto ep = server->listen_tcp("127.0.0.1", 0);
    REQUIRE(ep);
    url = "http://127.0.0.1:" + std::to_string(ep->port());
    server->start();
    thread = std::thread([this] { io.run(); });
  }
  ~HolderServer() {
    server->stop(std::chrono::milliseconds(0));
    neco::testing::wait_for([&] { return server->stopped(); }, std::chrono::seconds(5));
    work.reset();
    io.stop();
    thread.join();
    server.reset();
  }
  HolderServer(const HolderServer&) = delete;
  HolderServer& operator=(const HolderServer&) = delete;
};

}  // namespace

TEST_CASE("Asset names", "[netboot][assets]") {
  for (const auto* ok : {"vmlinuz", "initrd-6.1.img", "ipxe.efi", "A_b-C.9", "x"}) {
    INFO(ok);
    CHECK(validate_asset_name(ok));
  }
  CHECK(validate_asset_name(std::string(128, 'a')));
  for (const auto& bad : {std::string(), std::string(129, 'a'), std::string(".hidden"),
                          std::string("a/b"), std::string(".."), std::string("sp ace"),
                          std::string("uni\xc3\xa9"), std::string("nul\0x", 5)}) {
    INFO(bad);
    const auto r = validate_asset_name(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message.find("asset name") != std::string::npos);
  }
}

TEST_CASE("Asset metadata round-trips and is read strictly", "[netboot][assets]") {
  AssetInfo a;
  a.name = "k";
  a.sha256 = sha_of("x");
  a.size = 1;
  a.content_type = "text/plain";
  a.created = 5;
  a.who = "me";
  a.holders = {"c1", "c2"};
  auto back = asset_from_json(to_json(a));
  REQUIRE(back);
  CHECK(*back == a);
  auto j = to_json(a);
  j["extra"] = 1;
  CHECK_FALSE(asset_from_json(j));
  j = to_json(a);
  j["sha256"] = "ABC";
  CHECK_FALSE(asset_from_json(j));
  j = to_json(a);
  j["size"] = -1;
  CHECK_FALSE(asset_from_json(j));
}

TEST_CASE("Chunked upload: offsets, resume, commit", "[netboot][assets]") {
  Fixture f;
  auto a = f.make("c1");
  const std::string data = "hello, boot world";

  auto r = a->append_upload("kernel", 0, data.substr(0, 6));
  REQUIRE(r);
  CHECK(r->accepted);
  CHECK(r->offset == 6);
  // A repeated chunk (a client that lost the answer) is refused with where to continue.
  r = a->append_upload("kernel", 0, data.substr(0, 6));
  REQUIRE(r);
  CHECK_FALSE(r->accepted);
  CHECK(r->offset == 6);
  r = a->append_upload("kernel", 9, "zzz");
  REQUIRE(r);
  CHECK_FALSE(r->accepted);
  CHECK(r->offset == 6);
  auto off = a->upload_offset("kernel");
  REQUIRE(off);
  CHECK(*off == 6);
  r = a->append_upload("kernel", 6, data.substr(6));
  REQUIRE(r);
  CHECK(r->accepted);
  CHECK(r->offset == data.size());

  CHECK(a->upload_offset("other").error().code == Errc::not_found);
  CHECK(a->append_upload("../x", 0, "a").error().code == Errc::invalid_argument);

  auto info = a->commit_upload("kernel", sha_of(data), data.size(), "", "alice");
  REQUIRE(info);
  CHECK(info->holders == std::vector<std::string>{"c1"});
  CHECK(info->content_type == "application/octet-stream");
  CHECK(info->who == "alice");
  auto got = a->get("kernel");
  REQUIRE(got);
  CHECK(got->sha256 == sha_of(data));
  CHECK(got->size == data.size());
  CHECK(read_all(f.tmp / "c1" / sha_of(data)) == data);
  // The upload is gone; a second commit has nothing to commit.
  CHECK(a->upload_offset("kernel").error().code == Errc::not_found);
  CHECK(a->commit_upload("kernel", sha_of(data), data.size(), "", "alice").error().code ==
        Errc::not_found);

  const auto audit = f.audit("put_asset");
  REQUIRE(audit.size() == 1);
  CHECK(audit[0].who == "alice");
  CHECK(audit[0].before.is_null());
  CHECK(audit[0].after.at("sha256") == sha_of(data));

  // The serving lookups read the cache, which sync_once refreshes (the thread is not running).
  CHECK_FALSE(a->local_path("kernel"));
  REQUIRE(a->sync_once());
  auto path = a->local_path("kernel");
  REQUIRE(path);
  CHECK(read_all(*path) == data);
  CHECK_FALSE(a->redirect_url("kernel"));
}

TEST_CASE("A commit whose size or hash does not match changes nothing", "[netboot][assets]") {
  Fixture f;
  auto a = f.make("c1");
  const std::string old_data = "the old kernel";
  put(*a, "kernel", old_data);
  const auto before = a->get("kernel");
  REQUIRE(before);

  const std::string data = "the new kernel!";
  SECTION("hash") {
    REQUIRE(a->append_upload("kernel", 0, data));
    const auto wrong = sha_of("something else");
    auto r = a->commit_upload("kernel", wrong, data.size(), "", "bob");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message.find(wrong) != std::string::npos);
    CHECK(r.error().message.find(sha_of(data)) != std::string::npos);
  }
  SECTION("size") {
    REQUIRE(a->append_upload("kernel", 0, data));
    auto r = a->commit_upload("kernel", sha_of(data), data.size() + 1, "", "bob");
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message.find(sha_of(data)) != std::string::npos);
  }
  SECTION("malformed commit") {
    REQUIRE(a->append_upload("kernel", 0, data));
    CHECK(a->commit_upload("kernel", "abc", data.size(), "", "bob").error().code ==
          Errc::invalid_argument);
    CHECK(a->commit_upload("kernel", sha_of(data), data.size(), "text/plain\r\nX: y", "bob")
              .error()
              .code == Errc::invalid_argument);
    // Refused before the upload was touched: it is still there.
    CHECK(a->upload_offset("kernel"));
    REQUIRE(a->discard_upload("kernel"));
  }
  // The asset, the files and the audit log are as before; the upload is discarded.
  auto after = a->get("kernel");
  REQUIRE(after);
  CHECK(*after == *before);
  CHECK(blob_count(f.tmp / "c1") == 1);
  CHECK(fs::is_empty(f.tmp / "c1" / "tmp"));
  CHECK(a->upload_offset("kernel").error().code == Errc::not_found);
  CHECK(f.audit("put_asset").size() == 1);
}

TEST_CASE("Replace, delete and GC", "[netboot][assets]") {
  Fixture f;
  auto a = f.make("c1");
  const std::string v1 = "kernel v1";
  const std::string v2 = "kernel v2, longer";
  put(*a, "kernel", v1);
  put(*a, "copy", v1);  // the same bytes under a second name: one file
  CHECK(blob_count(f.tmp / "c1") == 1);
  auto replaced = put(*a, "kernel", v2);
  CHECK(replaced.sha256 == sha_of(v2));
  CHECK(blob_count(f.tmp / "c1") == 2);
  auto gc = a->gc_once();
  REQUIRE(gc);
  CHECK(*gc == 0);  // "copy" still references v1

  const auto audit = f.audit("put_asset");
  REQUIRE(audit.size() == 3);
  // Newest first: the replace names the old record.
  CHECK(audit[0].before.at("sha256") == sha_of(v1));
  CHECK(audit[0].after.at("sha256") == sha_of(v2));

  REQUIRE(a->remove("copy", "carol"));
  CHECK(a->get("copy").error().code == Errc::not_found);
  CHECK(a->remove("copy", "carol").error().code == Errc::not_found);
  const auto deletes = f.audit("delete_asset");
  REQUIRE(deletes.size() == 1);
  CHECK(deletes[0].who == "carol");
  CHECK(deletes[0].before.at("name") == "copy");
  CHECK(deletes[0].after.is_null());

  gc = a->gc_once();
  REQUIRE(gc);
  CHECK(*gc == 1);
  CHECK_FALSE(fs::exists(f.tmp / "c1" / sha_of(v1)));
  CHECK(fs::exists(f.tmp / "c1" / sha_of(v2)));
  auto list = a->list();
  REQUIRE(list);
  REQUIRE(list->size() == 1);
  CHECK(list->front().name == "kernel");
}

TEST_CASE("Uploads are bounded: size, count, idle time", "[netboot][assets]") {
  Fixture f;
  AssetStoreOptions o;
  o.max_uploads = 2;
  o.max_asset_bytes = 10;
  auto a = f.make("c1", o);
  REQUIRE(a->append_upload("a", 0, "12345"));
  auto big = a->append_upload("a", 5, "678901");
  REQUIRE_FALSE(big);
  CHECK(big.error().code == Errc::invalid_argument);
  CHECK(*a->upload_offset("a") == 5);  // the refused chunk left nothing behind

  REQUIRE(a->append_upload("b", 0, "x"));
  auto third = a->append_upload("c", 0, "x");
  REQUIRE_FALSE(third);
  CHECK(third.error().code == Errc::unavailable);
  // Continuing an existing upload is still allowed.
  CHECK(a->append_upload("b", 1, "y")->accepted);

  // Age "a" past the idle limit: only it goes.
  fs::last_write_time(f.tmp / "c1" / "uploads" / "a",
                      fs::file_time_type::clock::now() - std::chrono::hours(1));
  CHECK(a->expire_uploads() == 1);
  CHECK(a->upload_offset("a").error().code == Errc::not_found);
  CHECK(a->upload_offset("b"));
  CHECK(a->stats().uploads_expired == 1);
  CHECK(a->append_upload("c", 0, "x")->accepted);
}

TEST_CASE("Replication pulls from a holder's boot server and verifies", "[netboot][assets]") {
  Fixture f;
  auto a = f.make("c1");
  auto b = f.make("c2");
  HolderServer holder(*a);
  REQUIRE(a->advertise(holder.url + "/"));  // trailing slash is dropped
  const auto data = random_bytes(300'000, 7);
  put(*a, "initrd", data, 65536);
  REQUIRE(a->sync_once());  // a's cache: it serves what it holds

  {
    // A corrupt holder is refused and nothing appears.
    holder.corrupt = true;
    auto r = b->sync_once();
    REQUIRE(r);
    CHECK(r->assets == 1);
    CHECK(r->pulled == 0);
    CHECK(r->failed == 1);
    REQUIRE(r->errors.size() == 1);
    CHECK(r->errors[0].find("SHA-256") != std::string::npos);
    CHECK(b->stats().pull_corrupt == 1);
    CHECK(blob_count(f.tmp / "c2") == 0);
    CHECK(fs::is_empty(f.tmp / "c2" / "tmp"));
    CHECK_FALSE(b->local_path("initrd"));
    // Until it has the bytes, b redirects to the holder.
    CHECK(b->redirect_url("initrd") == holder.url + "/boot/assets/initrd");
    CHECK(a->get("initrd")->holders == std::vector<std::string>{"c1"});
    holder.corrupt = false;
  }

  // The retry after its backoff succeeds.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the 2 ms backoff cap
  CHECK(b->redirect_url("initrd").value_or("") == holder.url + "/boot/assets/initrd");
  auto r = b->sync_once();
  REQUIRE(r);
  CHECK(r->pulled == 1);
  CHECK(r->failed == 0);
  auto path = b->local_path("initrd");
  REQUIRE(path);
  CHECK(path->parent_path() == f.tmp / "c2");
  CHECK(read_all(*path) == data);
  CHECK_FALSE(b->redirect_url("initrd"));
  CHECK(a->get("initrd")->holders == std::vector<std::string>{"c1", "c2"});
  CHECK(b->stats().pulls == 1);
  CHECK(b->stats().pulled_bytes == data.size());
  // Nothing left to do: no second download.
  const int served = holder.requests;
  r = b->sync_once();
  REQUIRE(r);
  CHECK(r->pulled == 0);
  CHECK(holder.requests == served);
}

TEST_CASE("Replication without a reachable holder fails visibly", "[netboot][assets]") {
  Fixture f;
  auto a = f.make("c1");
  auto b = f.make("c2");
  put(*a, "kernel", "bytes");
  // c1 never advertised a URL: nothing to pull from, nowhere to redirect.
  auto r = b->sync_once();
  REQUIRE(r);
  CHECK(r->failed == 1);
  REQUIRE(r->errors.size() == 1);
  CHECK(r->errors[0].find("advertised") != std::string::npos);
  CHECK_FALSE(b->redirect_url("kernel"));
  CHECK(b->stats().sync_failures == 1);

  // An advertised URL where nothing listens: a connection error, still nothing visible.
  REQUIRE(a->advertise("http://127.0.0.1:" + std::to_string(neco::testing::free_port())));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  r = b->sync_once();
  REQUIRE(r);
  CHECK(r->failed == 1);
  CHECK(b->stats().pull_failures == 1);
  CHECK(blob_count(f.tmp / "c2") == 0);
  CHECK(a->advertise("ftp://x").error().code == Errc::invalid_argument);
}

TEST_CASE("The replication thread follows the store watch", "[netboot][assets]") {
  Fixture f;
  metrics::Registry registry;
  AssetStoreOptions o;
  o.metrics = &registry;
  auto a = f.make("c1", o);
  auto b = f.make("c2");
  HolderServer holder(*a);
  REQUIRE(a->start());
  REQUIRE(b->start());
  REQUIRE(a->advertise(holder.url));

  const auto data = random_bytes(200'000, 11);
  put(*a, "ipxe.efi", data, 100'000);
  // No sync_once here: the watch wakes b's thread, which pulls and becomes a holder.
  REQUIRE(neco::testing::wait_for([&] { return b->local_path("ipxe.efi").has_value(); }));
  CHECK(read_all(*b->local_path("ipxe.efi")) == data);
  REQUIRE(neco::testing::wait_for([&] {
    auto c = a->cached("ipxe.efi");
    return c && c->holders.size() == 2;
  }));

  const auto families = registry.collect();
  const auto* count = metrics::find_family(families, "neco_netboot_assets");
  REQUIRE(count != nullptr);
  REQUIRE(count->samples.size() == 1);
  CHECK(count->samples[0].value == 1);
  const auto* local = metrics::find_family(families, "neco_netboot_assets_local");
  REQUIRE(local != nullptr);
  CHECK(local->samples[0].value == 1);

  // A delete reaches b too: its GC pass removes the file.
  REQUIRE(a->remove("ipxe.efi", "test"));
  REQUIRE(neco::testing::wait_for([&] { return blob_count(f.tmp / "c2") == 0; }));
  CHECK_FALSE(b->local_path("ipxe.efi"));

  const auto t0 = std::chrono::steady_clock::now();
  b->stop();
  a->stop();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
}

// ---- The admin routes, through a real server with a worker pool

namespace {

struct Reply {
  long status = 0;
  nlohmann::json body;
};

std::size_t collect(char* data, std::size_t size, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

Reply call(const std::string& url, const std::string& method, const std::string& body = "") {
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  REQUIRE(curl);
  std::string out;
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, method.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_NOPROXY, "*");
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 10'000L);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &out);
  if (method != "GET") {
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  }
  REQUIRE(curl_easy_perform(curl.get()) == CURLE_OK);
  Reply r;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &r.status);
  r.body = nlohmann::json::parse(out, nullptr, false);
  return r;
}

}  // namespace

// The asset routes on a real server on 127.0.0.1 with a worker pool; `running` switches the
// asset store and the pool on (the routes exist before the module starts).
struct AdminServer {
  std::shared_ptr<AssetStore> assets;
  WorkerPool pool{2, 16};
  std::atomic<bool> running{false};
  boost::asio::io_context io;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
  std::optional<http::Server> server;
  std::thread thread;
  std::string url;  // http://127.0.0.1:PORT

  explicit AdminServer(std::shared_ptr<AssetStore> a) : assets(std::move(a)) {
    auto router = std::make_shared<http::Router>();
    ModuleRoutes routes(*router, "netboot");
    add_asset_routes(
        routes, [this]() { return running ? assets : nullptr; },
        [this]() { return running ? &pool : nullptr; });
    server.emplace(io, http::ServerLimits{}, log::Logger("http.test"));
    server->set_router(router);
    auto ep = server->listen_tcp("127.0.0.1", 0);
    REQUIRE(ep);
    url = "http://127.0.0.1:" + std::to_string(ep->port());
    server->start();
    thread = std::thread([this] { io.run(); });
  }
  ~AdminServer() {
    server->stop(std::chrono::milliseconds(0));
    neco::testing::wait_for([&] { return server->stopped(); }, std::chrono::seconds(5));
    work.reset();
    io.stop();
    thread.join();
    server.reset();
  }
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
};

TEST_CASE("Admin routes: list, upload with offsets, commit, delete", "[netboot][assets]") {
  Fixture f;
  AdminServer admin(f.make("c1"));
  const auto base = admin.url + "/v1/netboot/assets";

  CHECK(call(base, "GET").status == 503);  // not started yet
  admin.running = true;

  auto r = call(base, "GET");
  CHECK(r.status == 200);
  CHECK(r.body.at("assets").empty());

  const auto data = random_bytes(3000, 3);
  r = call(base + "/vmlinuz/upload?offset=0", "PUT", data.substr(0, 1000));
  CHECK(r.status == 200);
  CHECK(r.body.at("offset") == 1000);
  r = call(base + "/vmlinuz/upload?offset=0", "PUT", data.substr(0, 1000));
  CHECK(r.status == 409);
  CHECK(r.body.at("offset") == 1000);
  CHECK(r.body.at("error") == "failed_precondition");
  CHECK(call(base + "/vmlinuz/upload?offset=x", "PUT", "a").status == 400);
  CHECK(call(base + "/vmlinuz/upload", "PUT", "a").status == 400);
  CHECK(call(base + "/.bad/upload?offset=0", "PUT", "a").status == 400);
  r = call(base + "/vmlinuz/upload", "GET");
  CHECK(r.status == 200);
  CHECK(r.body.at("offset") == 1000);
  r = call(base + "/vmlinuz/upload?offset=1000", "PUT", data.substr(1000));
  CHECK(r.body.at("offset") == 3000);

  nlohmann::json commit = {{"sha256", sha_of("nope")}, {"size", 3000}};
  r = call(base + "/vmlinuz", "POST", commit.dump());
  CHECK(r.status == 400);
  CHECK(r.body.at("message").get<std::string>().find(sha_of(data)) != std::string::npos);
  CHECK(call(base + "/vmlinuz", "GET").status == 404);
  CHECK(call(base + "/vmlinuz/upload", "GET").status == 404);  // discarded

  REQUIRE(call(base + "/vmlinuz/upload?offset=0", "PUT", data).status == 200);
  CHECK(call(base + "/vmlinuz", "POST", R"({"sha256": "x", "size": 1, "typo": 1})").status == 400);
  commit = {{"sha256", sha_of(data)}, {"size", 3000}, {"content_type", "application/x-kernel"}};
  r = call(base + "/vmlinuz", "POST", commit.dump());
  REQUIRE(r.status == 200);
  CHECK(r.body.at("who") == "admin");
  CHECK(r.body.at("local") == true);
  CHECK(r.body.at("content_type") == "application/x-kernel");
  r = call(base, "GET");
  REQUIRE(r.body.at("assets").size() == 1);
  CHECK(r.body.at("assets")[0].at("holders") == nlohmann::json::array({"c1"}));
  r = call(base + "/vmlinuz", "GET");
  CHECK(r.body.at("sha256") == sha_of(data));

  CHECK(call(base + "/vmlinuz", "DELETE").status == 200);
  CHECK(call(base + "/vmlinuz", "DELETE").status == 404);
  CHECK(call(base + "/vmlinuz", "GET").status == 404);

  REQUIRE(call(base + "/other/upload?offset=0", "PUT", "abc").status == 200);
  CHECK(call(base + "/other/upload", "DELETE").status == 200);
  CHECK(call(base + "/other/upload", "GET").status == 404);
}

// ---- `neco assets` against the routes (the real binary; skipped without it)

namespace {

struct Run {
  int code = -1;
  std::string out;
};

Run neco_cli(const std::string& args) {
  const char* neco = std::getenv("NECO");
  REQUIRE(neco != nullptr);
  Run r;
  FILE* p = ::popen((std::string(neco) + " " + args + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  while (const auto n = std::fread(buf.data(), 1, buf.size(), p))
    r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace

TEST_CASE("neco assets uploads in chunks, resumes and commits", "[cli]") {
  const char* neco = std::getenv("NECO");
  if (neco == nullptr || *neco == '\0') {
    std::fprintf(stderr, "SKIP: set NECO to the neco binary to test `neco assets`\n");
    std::exit(77);
  }
  Fixture f;
  AdminServer admin(f.make("c1"));
  admin.running = true;
  auto& assets = *admin.assets;
  const auto admin_opt = " --admin " + admin.url;
  const auto data = random_bytes(1'300'000, 5);  // three 512 KiB chunks
  const auto file = f.tmp / "image.bin";
  neco::testing::write_file(file, data);

  SECTION("a fresh upload") {
    auto r = neco_cli("assets upload kernel " + file.string() + admin_opt);
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(r.out.find(sha_of(data)) != std::string::npos);
  }
  SECTION("resuming an interrupted upload of the same file") {
    REQUIRE(assets.append_upload("kernel", 0, data.substr(0, 700'000)));
    auto r = neco_cli("assets upload kernel " + file.string() + admin_opt);
    INFO(r.out);
    REQUIRE(r.code == 0);
  }
  SECTION("a stale upload of other bytes is started over") {
    REQUIRE(assets.append_upload("kernel", 0, "not the same bytes"));
    auto r = neco_cli("assets upload kernel " + file.string() + admin_opt);
    INFO(r.out);
    REQUIRE(r.code == 0);
  }
  SECTION("a stale upload longer than the file is started over") {
    REQUIRE(assets.append_upload("kernel", 0, data + "more"));
    auto r = neco_cli("assets upload kernel " + file.string() + admin_opt);
    INFO(r.out);
    REQUIRE(r.code == 0);
  }
  auto info = assets.get("kernel");
  REQUIRE(info);
  CHECK(info->sha256 == sha_of(data));
  CHECK(info->size == data.size());
  CHECK(info->content_type == "application/octet-stream");
  CHECK(read_all(f.tmp / "c1" / sha_of(data)) == data);

  auto r = neco_cli("assets list --json" + admin_opt);
  REQUIRE(r.code == 0);
  const auto j = nlohmann::json::parse(r.out, nullptr, false);
  REQUIRE(j.is_object());
  CHECK(j.at("assets").at(0).at("name") == "kernel");
  r = neco_cli("assets list" + admin_opt);
  CHECK(r.code == 0);
  CHECK(r.out.find("kernel") != std::string::npos);
  r = neco_cli("assets get kernel" + admin_opt);
  CHECK(r.code == 0);
  CHECK(r.out.find(sha_of(data)) != std::string::npos);
  r = neco_cli("assets upload other " + (f.tmp / "missing").string() + admin_opt);
  CHECK(r.code == 1);
  r = neco_cli("assets upload kernel" + admin_opt);
  CHECK(r.code == 2);
  r = neco_cli("assets delete kernel" + admin_opt);
  CHECK(r.code == 0);
  r = neco_cli("assets get kernel" + admin_opt);
  CHECK(r.code == 1);
  CHECK(r.out.find("no asset 'kernel'") != std::string::npos);
}
