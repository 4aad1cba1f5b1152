// The mysql module's cluster routes driven without sockets: a real MysqlModule (role file with
// one cluster) started on a fake context over a real SQLite store and WorkerPool, its routes
// called through a real Router as the server would. Covers PUT/GET/DELETE of API-created
// clusters, the bad bodies (two primaries, duplicate instance name or host:port, unknown field,
// missing password file, name clash with the role file, name mismatch) answering 4xx naming the
// field with nothing stored, the change refused during a failover, the delete refused unless
// paused, and, with a fake leadership, the leader following the stored definitions: a created
// cluster gets a loop (its unreachable instance is reported by name, nothing acts), a deleted
// one loses it. Instances are closed 127.0.0.1 ports: no MariaDB is needed.
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agent/config/role_config.hpp"
#include "agent/http/request.hpp"
#include "agent/http/response.hpp"
#include "agent/http/router.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/module/context.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "agent/store/election.hpp"
#include "agent/store/sqlite_store.hpp"
#include "modules/mysql/api_clusters.hpp"
#include "modules/mysql/mysql_module.hpp"
#include "tests/support/test_support.hpp"

using namespace neco;
using http::Status;
using http::Verb;
using nlohmann::json;

namespace {

// Leadership that this test hands out: fenced writes are plain txns while it leads.
class FakeElection final : public store::Election {
 public:
  explicit FakeElection(store::Store& st) : store_(st) {}
  Expected<store::TxnResponse> fenced_txn(const store::Txn& t) override {
    if (!leading) return fail(Errc::failed_precondition, "not the leader");
    return store_.txn(t);
  }
  store::LeaderInfo current() const override {
    return {leading ? "me" : "other", 7, leading.load(), 0};
  }
  void stop() override {}
  std::atomic<bool> leading{false};

 private:
  store::Store& store_;
};

class FakeContext final : public ModuleContext {
 public:
  FakeContext(boost::asio::io_context& io, WorkerPool& pool, store::Store& st, store::Election* el)
      : io_(io), pool_(pool), store_(st), election_(el) {
    core_.controller = true;
  }
  boost::asio::any_io_executor executor() override { return io_.get_executor(); }
  WorkerPool& workers() override { return pool_; }
  metrics::Registry& metrics() override { return registry_; }
  store::Store* store() override { return &store_; }
  store::Election* election() override { return election_; }
  const config::CoreConfig& core() const override { return core_; }
  std::filesystem::path state_dir() const override { return "/nonexistent"; }

 private:
  boost::asio::io_context& io_;
  WorkerPool& pool_;
  store::Store& store_;
  store::Election* election_;
  metrics::Registry registry_;
  config::CoreConfig core_;
};

struct Answer {
  Status status = Status::internal_server_error;
  json body;
  std::string message() const { return body.is_object() ? body.value("message", "") : ""; }
};

struct Fixture {
  neco::testing::TempDir dir;
  std::unique_ptr<store::SqliteStore> store;
  std::unique_ptr<FakeElection> election;
  boost::asio::io_context io;
  WorkerPool pool{2, 64};
  std::unique_ptr<FakeContext> context;
  http::Router router;
  mysql::MysqlModule module;
  std::uint16_t closed_port = neco::testing::free_port();

  explicit Fixture(bool leader = false) {
    auto s = store::SqliteStore::open(dir.file("store.db"));
    if (!s) FAIL("open: " << s.error().message);
    store = std::move(*s);
    election = std::make_unique<FakeElection>(*store);
    election->leading = leader;
    context = std::make_unique<FakeContext>(io, pool, *store, election.get());
    neco::testing::write_file(dir / "admin.pw", "s3cret-admin\n");
    neco::testing::write_file(dir / "repl.pw", "s3cret-repl\n");
    const std::string role =
        "interval: 100ms\n"
        "clusters:\n"
        "  - name: rolec\n"
        "    instances:\n"
        "      - {name: r0, host: 127.0.0.1, port: " +
        std::to_string(closed_port) +
        ", primary: true}\n"
        "    credentials: {admin_user: a, admin_password_file: " +
        dir.file("admin.pw") + ", repl_user: r, repl_password_file: " + dir.file("repl.pw") + "}\n";
    const config::ModuleSection ms{"mysql", YAML::Load(role), role, {}};
    if (auto ok = module.configure(config::Section(ms, "role.yaml")); !ok) {
      FAIL("configure: " << ok.error().message);
    }
    ModuleRoutes routes(router, "mysql");
    module.add_routes(routes);
    if (auto ok = module.start(*context); !ok) FAIL("start: " << ok.error().message);
  }
  ~Fixture() {
    module.stop();
    pool.join();
  }

  Answer call(Verb method, const std::string& path, const std::string& body = "") {
    const auto m = router.match(method, path);
    Answer a;
    if (m.kind != http::RouteMatch::Kind::found) {
      a.status = m.kind == http::RouteMatch::Kind::not_found ? Status::not_found
                                                             : Status::method_not_allowed;
      return a;
    }
    http::Request req;
    req.method = method;
    req.target = path;
    req.path = path;
    req.body = body;
    req.path_params = m.params;
    std::optional<http::Response> res;
    boost::asio::co_spawn(io, (*m.handler)(req),
                          [&](const std::exception_ptr& e, http::Response r) {
                            if (e) std::rethrow_exception(e);
                            res = std::move(r);
                          });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!res && std::chrono::steady_clock::now() < deadline) {
      io.restart();
      io.run_for(std::chrono::milliseconds(20));
    }
    if (!res) FAIL("no answer to " << path);
    a.status = res->status;
    a.body = json::parse(res->body, nullptr, false);
    if (a.body.is_discarded()) FAIL("not JSON: " << res->body);
    return a;
  }

  // Runs the event loop (lifecycle jobs, watch follow-ups) until `condition` holds.
  bool run_until(const std::function<bool()>& condition,
                 std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (condition()) return true;
      io.restart();
      io.run_for(std::chrono::milliseconds(20));
    }
    return condition();
  }

  json definition(const std::string& extra_instance = "") const {
    json instances = json::array({
        {{"name", "m0"}, {"host", "127.0.0.1"}, {"port", closed_port}, {"primary", true}},
        {{"name", "m1"}, {"host", "127.0.0.1"}, {"port", closed_port + 1}},
    });
    if (!extra_instance.empty()) instances.push_back(json::parse(extra_instance));
    return json{{"instances", instances},
                {"credentials",
                 {{"admin_user", "a"},
                  {"admin_password_file", dir.file("admin.pw")},
                  {"repl_user", "r"},
                  {"repl_password_file", dir.file("repl.pw")}}},
                {"policy", {{"failure_confirm", "2s"}, {"failover", false}}}};
  }

  bool stored(const std::string& name) {
    auto kv = store->get(mysql::spec_key(name));
    return kv.has_value();
  }
};

// The route of the API-created cluster the tests use.
std::string path() {
  return "/v1/mysql/clusters/api1";
}

}  // namespace

TEST_CASE("PUT creates a cluster, GET lists both kinds with their source", "[mysql][api]") {
  Fixture f;
  auto a = f.call(Verb::put, path(), f.definition().dump());
  REQUIRE(a.status == Status::created);
  CHECK(a.body["result"] == "created");
  CHECK(f.stored("api1"));
  // The stored definition is the canonical one: durations as the role file writes them.
  auto kv = f.store->get(mysql::spec_key("api1"));
  REQUIRE(kv);
  const auto stored = json::parse(kv->value);
  CHECK(stored["policy"]["failure_confirm"] == "2s");
  CHECK(stored["name"] == "api1");
  CHECK(stored["instances"].size() == 2);

  a = f.call(Verb::put, path(), f.definition().dump());
  CHECK(a.status == Status::ok);
  CHECK(a.body["result"] == "unchanged");
  auto changed = f.definition();
  changed["policy"]["failover"] = true;
  a = f.call(Verb::put, path(), changed.dump());
  CHECK(a.status == Status::ok);
  CHECK(a.body["result"] == "changed");

  a = f.call(Verb::get, "/v1/mysql/clusters");
  REQUIRE(a.status == Status::ok);
  REQUIRE(a.body["clusters"].size() == 2);
  CHECK(a.body["clusters"][0]["name"] == "rolec");
  CHECK(a.body["clusters"][0]["source"] == "role");
  CHECK(a.body["clusters"][1]["name"] == "api1");
  CHECK(a.body["clusters"][1]["source"] == "api");
  a = f.call(Verb::get, path());
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["source"] == "api");
  CHECK(a.body["paused"] == false);
  CHECK(f.call(Verb::get, "/v1/mysql/clusters/nope").status == Status::not_found);
  // The password never leaves the files.
  CHECK(f.call(Verb::get, "/v1/mysql/clusters").body.dump().find("s3cret") == std::string::npos);
  CHECK(kv->value.find("s3cret") == std::string::npos);
}

TEST_CASE("YAML bodies are accepted too (what `neco mysql create --file` sends)", "[mysql][api]") {
  Fixture f;
  const std::string yaml =
      "instances:\n  - {name: m0, host: 127.0.0.1, port: " + std::to_string(f.closed_port) +
      ", primary: true}\ncredentials:\n  admin_user: a\n"
      "  admin_password_file: " +
      f.dir.file("admin.pw") + "\n  repl_user: r\n  repl_password_file: " + f.dir.file("repl.pw") +
      "\n";
  const auto a = f.call(Verb::put, path(), yaml);
  CHECK(a.status == Status::created);
  CHECK(f.stored("api1"));
}

TEST_CASE("Bad definitions answer 4xx naming the field and store nothing", "[mysql][api]") {
  Fixture f;
  auto refused = [&](const std::string& body, Status status, const std::string& says) {
    const auto a = f.call(Verb::put, path(), body);
    CHECK(a.status == status);
    INFO(a.message());
    CHECK(a.message().find(says) != std::string::npos);
    CHECK_FALSE(f.stored("api1"));
  };
  refused(f.definition(R"({"name": "m2", "host": "127.0.0.9", "primary": true})").dump(),
          Status::bad_request, "primar");
  refused(f.definition(R"({"name": "m1", "host": "127.0.0.9"})").dump(), Status::bad_request, "m1");
  {
    auto d = f.definition();
    d["instances"].push_back({{"name", "m2"}, {"host", "127.0.0.1"}, {"port", f.closed_port + 1}});
    refused(d.dump(), Status::bad_request, "127.0.0.1:" + std::to_string(f.closed_port + 1));
  }
  {
    auto d = f.definition();
    d["policy"]["failover_timeout"] = "3s";
    refused(d.dump(), Status::bad_request, "unknown key 'policy.failover_timeout'");
  }
  {
    auto d = f.definition();
    d["credentials"]["admin_password_file"] = f.dir.file("missing.pw");
    refused(d.dump(), Status::bad_request, "body.credentials.admin_password_file");
    const auto a = f.call(Verb::put, path(), d.dump());
    CHECK(a.message().find("missing.pw") != std::string::npos);
  }
  {
    auto d = f.definition();
    d["policy"]["connect_timeout"] = 5;  // a plain number: units are never guessed
    refused(d.dump(), Status::bad_request, "policy.connect_timeout");
  }
  {
    auto d = f.definition();
    d["name"] = "other";
    refused(d.dump(), Status::bad_request, "name");
  }
  refused("{\"instances\": [", Status::bad_request, "body:");
  refused("[1, 2]", Status::bad_request, "expected a mapping");
  {
    auto d = f.definition();
    d.erase("credentials");
    refused(d.dump(), Status::bad_request, "credentials");
  }
  // The role file's name: 409, and the role-file cluster stays as it was.
  const auto a = f.call(Verb::put, "/v1/mysql/clusters/rolec", f.definition().dump());
  CHECK(a.status == Status::conflict);
  CHECK(a.message().find("role file") != std::string::npos);
  CHECK_FALSE(f.stored("rolec"));
  CHECK(f.call(Verb::delete_, "/v1/mysql/clusters/rolec").status == Status::conflict);
}

TEST_CASE("A definition does not change during a failover; delete needs a pause", "[mysql][api]") {
  Fixture f;
  REQUIRE(f.call(Verb::put, path(), f.definition().dump()).status == Status::created);
  mysql::ClusterMemory busy;
  busy.failover = mysql::ClusterMemory::Failover{"m0", "", 1};
  REQUIRE(f.store->put_value(mysql::memory_key("api1"), mysql::to_json(busy)));
  auto changed = f.definition();
  changed["policy"]["failover"] = true;
  auto a = f.call(Verb::put, path(), changed.dump());
  CHECK(a.status == Status::conflict);
  CHECK(a.message().find("failover is in progress") != std::string::npos);
  // Unchanged is not a change: still fine.
  CHECK(f.call(Verb::put, path(), f.definition().dump()).status == Status::ok);

  a = f.call(Verb::delete_, path());
  CHECK(a.status == Status::conflict);
  CHECK(a.message().find("stop-clustering") != std::string::npos);
  CHECK(f.stored("api1"));
  REQUIRE(f.call(Verb::post, path() + "/stop-clustering").status == Status::ok);
  REQUIRE(f.store->put_value(mysql::last_failover_key("api1"), "12"));
  a = f.call(Verb::delete_, path());
  CHECK(a.status == Status::ok);
  for (const auto& key : {mysql::spec_key("api1"), mysql::memory_key("api1"),
                          mysql::paused_key("api1"), mysql::last_failover_key("api1")}) {
    INFO(key);
    CHECK_FALSE(f.store->get(key).has_value());
  }
  CHECK(f.call(Verb::delete_, path()).status == Status::not_found);
  CHECK(f.call(Verb::get, path()).status == Status::not_found);
  CHECK(f.call(Verb::post, path() + "/stop-clustering").status == Status::not_found);
}

TEST_CASE("The leader runs a loop for each stored definition and follows changes",
          "[mysql][api][leader]") {
  Fixture f(true);
  auto state_of = [&](const std::string& name) {
    const auto a = f.call(Verb::get, "/v1/mysql/clusters/" + name);
    return a.status == Status::ok ? a.body : json();
  };
  // The role file's cluster runs: its only instance is a closed port.
  REQUIRE(f.run_until([&] { return state_of("rolec").value("state", "") == "lost"; }));
  REQUIRE(f.call(Verb::put, path(), f.definition().dump()).status == Status::created);
  REQUIRE(f.run_until([&] {
    const auto s = state_of("api1");
    return s.value("leader", false) && s.value("state", "") == "lost";
  }));
  auto s = state_of("api1");
  CHECK(s["source"] == "api");
  CHECK(s["failovers"] == 0);
  CHECK(s["last_operation"]["kind"] == "none");
  REQUIRE(s["instance_errors"].contains("m0"));
  const std::string why = s["instance_errors"]["m0"];
  CHECK(why.find("127.0.0.1:" + std::to_string(f.closed_port)) != std::string::npos);
  CHECK(why.find("connect") != std::string::npos);
  CHECK(s.dump().find("s3cret") == std::string::npos);

  // A change restarts the loop with the new spec.
  auto changed = f.definition(R"({"name": "m2", "host": "127.0.0.1", "port": 1})");
  REQUIRE(f.call(Verb::put, path(), changed.dump()).status == Status::ok);
  REQUIRE(f.run_until([&] {
    const auto st = state_of("api1");
    return st.value("leader", false) && st.contains("instance_errors") &&
           st["instance_errors"].contains("m2");
  }));

  // Losing the leadership stops every loop (on a worker); the store answers afterwards.
  f.election->leading = false;
  f.module.on_follower();
  REQUIRE(f.run_until([&] {
    const auto st = state_of("api1");
    return !st.is_null() && !st.value("leader", true) &&
           state_of("rolec").value("leader", true) == false;
  }));
  f.election->leading = true;
  f.module.on_leader(8);
  REQUIRE(f.run_until([&] { return state_of("api1").value("leader", false); }));

  // Deleted (after a pause): its loop stops and it is gone.
  REQUIRE(f.call(Verb::post, path() + "/stop-clustering").status == Status::ok);
  REQUIRE(f.call(Verb::delete_, path()).status == Status::ok);
  REQUIRE(f.run_until([&] {
    const auto a = f.call(Verb::get, "/v1/mysql/clusters");
    return a.status == Status::ok && a.body["clusters"].size() == 1;
  }));
  CHECK(f.call(Verb::get, path()).status == Status::not_found);
  CHECK(f.module.health().message.find("api1") == std::string::npos);
}
