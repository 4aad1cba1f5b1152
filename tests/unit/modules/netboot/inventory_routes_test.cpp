// The inventory's admin routes without sockets: a real Router filled through ModuleRoutes, the
// matched handler run on an io_context with a hand-made Request, a real SQLite store in a temp
// dir and a real WorkerPool. Covers every route, each Errc's status, filters, bad JSON, bad
// state names, unknown query parameters, the 503 of an agent without a store, and who is
// recorded in the audit log.
#include "modules/netboot/inventory_routes.hpp"

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agent/runtime/worker_pool.hpp"
#include "agent/store/sqlite_store.hpp"
#include "modules/netboot/inventory.hpp"
#include "tests/support/test_support.hpp"
#include "tests/unit/modules/netboot/ipam_example.hpp"

using namespace neco;
using namespace neco::netboot;
using http::Status;
using http::Verb;
using nlohmann::json;

namespace {

json ipam_json() {
  return to_json(neco::netboot::testing::ipam_example());
}

struct Answer {
  Status status = Status::internal_server_error;
  json body;
  http::Pairs headers;

  std::string message() const { return body.is_object() ? body.value("message", "") : ""; }
  std::string error() const { return body.is_object() ? body.value("error", "") : ""; }
};

// The routes over a real store, and a way to send them requests as the server would.
struct Fixture {
  neco::testing::TempDir dir;
  std::unique_ptr<store::SqliteStore> store;
  std::shared_ptr<Inventory> inventory;
  // One event loop for the fixture, destroyed after the pool has joined: a worker drops its
  // call's state (a timer of this loop) after handing back the result.
  boost::asio::io_context io;
  WorkerPool pool{2, 64};
  http::Router router;
  bool has_store = true;
  bool running = true;

  Fixture() {
    auto s = store::SqliteStore::open(dir.file("store.db"));
    if (!s) FAIL("open: " << s.error().message);
    store = std::move(*s);
    inventory = std::make_shared<Inventory>(*store);
    ModuleRoutes routes(router, "netboot");
    InventoryRoutesContext ctx;
    ctx.inventory = [this] { return has_store ? inventory : nullptr; };
    ctx.workers = [this] { return running ? &pool : nullptr; };
    add_inventory_routes(routes, std::move(ctx));
  }

  Answer call(Verb method, const std::string& target, const std::string& body = "",
              const std::string& peer = "127.0.0.1:5555", const std::string& identity = "") {
    auto t = http::parse_target(target);
    if (!t) FAIL("bad target " << target << ": " << t.error().message);
    const auto m = router.match(method, t->path);
    Answer a;
    if (m.kind != http::RouteMatch::Kind::found) {
      a.status = m.kind == http::RouteMatch::Kind::not_found ? Status::not_found
                                                             : Status::method_not_allowed;
      return a;
    }
    http::Request req;
    req.method = method;
    req.target = target;
    req.path = t->path;
    req.query = t->query;
    req.body = body;
    req.path_params = m.params;
    req.peer = peer;
    req.peer_identity = identity;
    std::optional<http::Response> res;
    io.restart();
    boost::asio::co_spawn(io, (*m.handler)(req),
                          [&](const std::exception_ptr& e, http::Response r) {
                            if (e) std::rethrow_exception(e);
                            res = std::move(r);
                          });
    io.run_for(std::chrono::seconds(30));
    if (!res) FAIL("no answer to " << target);
    a.status = res->status;
    a.headers = res->headers;
    a.body = json::parse(res->body, nullptr, false);
    if (a.body.is_discarded()) FAIL("not JSON: " << res->body);
    return a;
  }
  Answer get(const std::string& target) { return call(Verb::get, target); }

  void put_ipam() {
    const auto a = call(Verb::put, "/v1/netboot/ipam", ipam_json().dump());
    REQUIRE(a.status == Status::ok);
  }
  json reg(const std::string& serial, std::uint32_t rack, const std::string& role = "worker") {
    const json spec = {
        {"serial", serial}, {"rack", rack}, {"role", role}, {"bmc_type", "IPMI-2.0"}};
    const auto a = call(Verb::post, "/v1/netboot/machines", spec.dump());
    if (a.status != Status::created) FAIL("register " << serial << ": " << a.message());
    return a.body;
  }
  std::vector<std::string> serials(const std::string& query) {
    const auto a = get("/v1/netboot/machines" + query);
    if (a.status != Status::ok) FAIL("list " << query << ": " << a.message());
    std::vector<std::string> out;
    for (const auto& m : a.body["machines"])
      out.push_back(m["serial"].get<std::string>());
    return out;
  }
};

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("The inventory routes are the documented ones", "[netboot][routes]") {
  Fixture f;
  std::vector<std::string> got;
  for (const auto& r : f.router.routes())
    got.push_back(std::string(r.mutates ? "W " : "R ") + r.path);
  CHECK(got == V{"R /v1/netboot/audit", "R /v1/netboot/ipam", "W /v1/netboot/ipam",
                 "R /v1/netboot/machines", "W /v1/netboot/machines",
                 "R /v1/netboot/machines/{serial}", "W /v1/netboot/machines/{serial}",
                 "W /v1/netboot/machines/{serial}/state", "R /v1/netboot/templates",
                 "R /v1/netboot/templates/{role}", "W /v1/netboot/templates/{role}"});
}

TEST_CASE("An agent without a store answers 503 on every route", "[netboot][routes]") {
  Fixture f;
  f.has_store = false;
  for (const auto& [verb, target] :
       std::vector<std::pair<Verb, std::string>>{{Verb::get, "/v1/netboot/machines"},
                                                 {Verb::post, "/v1/netboot/machines"},
                                                 {Verb::get, "/v1/netboot/machines/x"},
                                                 {Verb::put, "/v1/netboot/machines/x"},
                                                 {Verb::delete_, "/v1/netboot/machines/x"},
                                                 {Verb::put, "/v1/netboot/machines/x/state"},
                                                 {Verb::get, "/v1/netboot/ipam"},
                                                 {Verb::put, "/v1/netboot/ipam"},
                                                 {Verb::get, "/v1/netboot/audit"}}) {
    INFO(target);
    const auto a = f.call(verb, target, "{}");
    CHECK(a.status == Status::service_unavailable);
    CHECK(a.error() == "unavailable");
    CHECK_THAT(a.message(), Catch::Contains("only controllers"));
  }
  f.running = false;
  const auto a = f.get("/v1/netboot/machines");
  CHECK(a.status == Status::service_unavailable);
  CHECK_THAT(a.message(), Catch::Contains("not running"));
}

TEST_CASE("IPAM: get, put, bad input, refused while machines exist", "[netboot][routes]") {
  Fixture f;
  auto a = f.get("/v1/netboot/ipam");
  CHECK(a.status == Status::not_found);
  CHECK(a.error() == "not_found");

  a = f.call(Verb::put, "/v1/netboot/ipam", "{\"max_nodes_in_rack\": ");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("not JSON"));
  a = f.call(Verb::put, "/v1/netboot/ipam", "");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("empty"));
  auto bad = ipam_json();
  bad["color"] = "blue";
  a = f.call(Verb::put, "/v1/netboot/ipam", bad.dump());
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("color"));
  bad = ipam_json();
  bad["node_ipv4_pool"] = "10.69.0.1/16";  // host bits set
  a = f.call(Verb::put, "/v1/netboot/ipam", bad.dump());
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("node_ipv4_pool"));
  CHECK(f.get("/v1/netboot/ipam").status == Status::not_found);  // nothing stored

  a = f.call(Verb::post, "/v1/netboot/ipam", ipam_json().dump());
  CHECK(a.status == Status::method_not_allowed);
  CHECK(a.headers == http::Pairs{{"Allow", "GET, HEAD, PUT"}});
  CHECK(f.get("/v1/netboot/ipam?x=1").status == Status::bad_request);

  f.put_ipam();
  a = f.get("/v1/netboot/ipam");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body == ipam_json());

  f.reg("n1", 0);
  auto changed = neco::netboot::testing::ipam_example();
  changed.max_nodes_in_rack = 20;
  a = f.call(Verb::put, "/v1/netboot/ipam", to_json(changed).dump());
  CHECK(a.status == Status::conflict);
  CHECK(a.error() == "failed_precondition");
  CHECK(f.get("/v1/netboot/ipam").body == ipam_json());
}

TEST_CASE("Registering one machine or an array", "[netboot][routes]") {
  Fixture f;
  const json spec = {{"serial", "n1"}, {"rack", 0}, {"role", "worker"}, {"bmc_type", "IPMI-2.0"}};
  auto a = f.call(Verb::post, "/v1/netboot/machines", spec.dump());
  CHECK(a.status == Status::conflict);  // no IPAM yet
  CHECK(a.error() == "failed_precondition");
  f.put_ipam();

  a = f.call(Verb::post, "/v1/netboot/machines", spec.dump());
  REQUIRE(a.status == Status::created);
  CHECK(a.body["index_in_rack"] == 4);
  CHECK(a.body["state"] == "uninitialized");
  CHECK(a.body["ipv4"][0]["address"] == "10.69.0.4");
  CHECK(a.body["bmc"]["address"] == "10.72.17.4");
  a = f.call(Verb::post, "/v1/netboot/machines", spec.dump());
  CHECK(a.status == Status::conflict);
  CHECK(a.error() == "already_exists");

  // A malformed item refuses the whole array: nothing is registered.
  json batch = json::array({{{"serial", "b1"}, {"rack", 1}, {"role", "boot"}, {"bmc_type", "x"}},
                            {{"serial", "n2"}, {"rack", "one"}, {"role", "w"}, {"bmc_type", "x"}}});
  a = f.call(Verb::post, "/v1/netboot/machines", batch.dump());
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("machine [1]") && Catch::Contains("rack"));
  batch = json::array({{{"serial", "b1"}, {"rack", 1}, {"role", "boot"}, {"bmc_type", "x"}},
                       {{"serial", "b1"}, {"rack", 2}, {"role", "w"}, {"bmc_type", "x"}}});
  a = f.call(Verb::post, "/v1/netboot/machines", batch.dump());
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("more than once"));
  a = f.call(Verb::post, "/v1/netboot/machines", "[]");
  CHECK(a.status == Status::bad_request);
  a = f.call(Verb::post, "/v1/netboot/machines", "\"n9\"");
  CHECK(a.status == Status::bad_request);
  a = f.call(Verb::post, "/v1/netboot/machines", "{not json");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("not JSON"));
  a = f.call(Verb::post, "/v1/netboot/machines",
             json{{"serial", "bad serial!"}, {"rack", 0}, {"role", "w"}, {"bmc_type", "x"}}.dump());
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("serial"));
  CHECK(f.serials("") == V{"n1"});

  // Valid items register independently; the failures are listed and set the status.
  batch = json::array({{{"serial", "b1"}, {"rack", 1}, {"role", "boot"}, {"bmc_type", "x"}},
                       {{"serial", "n1"}, {"rack", 1}, {"role", "w"}, {"bmc_type", "x"}},
                       {{"serial", "n3"}, {"rack", 1}, {"role", "w"}, {"bmc_type", "x"}}});
  a = f.call(Verb::post, "/v1/netboot/machines", batch.dump());
  CHECK(a.status == Status::conflict);
  CHECK(a.error() == "already_exists");
  CHECK_THAT(a.message(), Catch::StartsWith("2 of 3 machines registered"));
  REQUIRE(a.body["results"].size() == 3);
  CHECK(a.body["results"][0]["ok"] == true);
  CHECK(a.body["results"][0]["machine"]["index_in_rack"] == 3);  // the boot index
  CHECK(a.body["results"][1]["ok"] == false);
  CHECK(a.body["results"][1]["error"] == "already_exists");
  CHECK(a.body["results"][2]["machine"]["index_in_rack"] == 4);
  CHECK(f.serials("") == V{"b1", "n1", "n3"});

  batch = json::array({{{"serial", "n4"}, {"rack", 2}, {"role", "w"}, {"bmc_type", "x"}},
                       {{"serial", "n5"}, {"rack", 2}, {"role", "w"}, {"bmc_type", "x"}}});
  a = f.call(Verb::post, "/v1/netboot/machines", batch.dump());
  CHECK(a.status == Status::created);
  CHECK(a.body["results"].size() == 2);
  CHECK_FALSE(a.body.contains("error"));

  a = f.call(Verb::put, "/v1/netboot/machines", spec.dump());
  CHECK(a.status == Status::method_not_allowed);
  CHECK(a.headers == http::Pairs{{"Allow", "GET, HEAD, POST"}});
  CHECK(f.call(Verb::post, "/v1/netboot/machines?x=1", spec.dump()).status == Status::bad_request);
}

TEST_CASE("Listing machines with filters", "[netboot][routes]") {
  Fixture f;
  f.put_ipam();
  f.reg("b1", 1, "boot");
  f.reg("n1", 0);
  f.reg("n2", 0);
  f.reg("n3", 1, "ss");
  REQUIRE(
      f.call(Verb::put, "/v1/netboot/machines/n2", R"({"labels": {"dc": "tokyo", "gpu": "yes"}})")
          .status == Status::ok);
  REQUIRE(f.call(Verb::put, "/v1/netboot/machines/n3", R"({"labels": {"dc": "tokyo"}})").status ==
          Status::ok);
  REQUIRE(f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "healthy"})").status ==
          Status::ok);

  CHECK(f.serials("") == V{"b1", "n1", "n2", "n3"});
  CHECK(f.serials("?rack=1") == V{"b1", "n3"});
  CHECK(f.serials("?role=boot") == V{"b1"});
  CHECK(f.serials("?state=healthy") == V{"n1"});
  CHECK(f.serials("?state=uninitialized&rack=0") == V{"n2"});
  CHECK(f.serials("?serial=n3") == V{"n3"});
  CHECK(f.serials("?labels=dc%3Dtokyo") == V{"n2", "n3"});
  CHECK(f.serials("?labels=dc=tokyo,gpu=yes") == V{"n2"});
  CHECK(f.serials("?labels=dc=tokyo&labels=gpu=yes") == V{"n2"});  // repeated: all must match
  CHECK(f.serials("?address=10.69.0.196") == V{"n3"});             // rack 1 index 4
  CHECK(f.serials("?address=10.72.17.4") == V{"n1"});              // rack 0 index 4's BMC
  CHECK(f.serials("?rack=7").empty());

  auto a = f.get("/v1/netboot/machines?colour=red");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("colour"));
  a = f.get("/v1/netboot/machines?rack=one");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("rack"));
  a = f.get("/v1/netboot/machines?state=broken");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("broken"));
  a = f.get("/v1/netboot/machines?address=10.69.0.300");
  CHECK(a.status == Status::bad_request);
  a = f.get("/v1/netboot/machines?rack=0&rack=1");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("more than once"));

  a = f.get("/v1/netboot/machines/n1");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["serial"] == "n1");
  CHECK(a.body["state"] == "healthy");
  a = f.get("/v1/netboot/machines/nope");
  CHECK(a.status == Status::not_found);
  CHECK(a.error() == "not_found");
  CHECK(f.get("/v1/netboot/machines/n1?x=1").status == Status::bad_request);
}

TEST_CASE("Lifecycle, update and removal through the routes", "[netboot][routes]") {
  Fixture f;
  f.put_ipam();
  f.reg("n1", 0);

  auto a = f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "healthy"})");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["state"] == "healthy");
  a = f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "retired"})");
  CHECK(a.status == Status::conflict);
  CHECK(a.error() == "failed_precondition");
  CHECK_THAT(a.message(), Catch::Contains("may become:") && Catch::Contains("retiring"));
  a = f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "sleeping"})");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("sleeping") && Catch::Contains("uninitialized"));
  a = f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": 3})");
  CHECK(a.status == Status::bad_request);
  a = f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "healthy", "x": 1})");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("\"x\""));
  a = f.call(Verb::put, "/v1/netboot/machines/n1/state", "healthy");
  CHECK(a.status == Status::bad_request);
  a = f.call(Verb::put, "/v1/netboot/machines/nope/state", R"({"state": "healthy"})");
  CHECK(a.status == Status::not_found);
  a = f.call(Verb::post, "/v1/netboot/machines/n1/state", R"({"state": "healthy"})");
  CHECK(a.status == Status::method_not_allowed);
  CHECK(a.headers == http::Pairs{{"Allow", "PUT"}});

  a = f.call(Verb::put, "/v1/netboot/machines/n1",
             R"({"labels": {"dc": "tokyo", "gpu": "yes"}, "retire_date": "2030-01-31"})");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["labels"] == json{{"dc", "tokyo"}, {"gpu", "yes"}});
  CHECK(a.body["retire_date"] == 1896048000);
  a = f.call(Verb::put, "/v1/netboot/machines/n1", R"({"labels": {"gpu": null, "os": "flatcar"}})");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["labels"] == json{{"dc", "tokyo"}, {"os", "flatcar"}});
  a = f.call(Verb::put, "/v1/netboot/machines/n1", R"({"role": "boot"})");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("role"));
  a = f.call(Verb::put, "/v1/netboot/machines/n1", R"({"retire_date": "tomorrow"})");
  CHECK(a.status == Status::bad_request);
  a = f.call(Verb::put, "/v1/netboot/machines/nope", R"({"labels": {"a": "b"}})");
  CHECK(a.status == Status::not_found);
  a = f.call(Verb::post, "/v1/netboot/machines/n1", R"({"labels": {"a": "b"}})");
  CHECK(a.status == Status::method_not_allowed);
  CHECK(a.headers == http::Pairs{{"Allow", "GET, HEAD, PUT, DELETE"}});

  a = f.call(Verb::delete_, "/v1/netboot/machines/n1");
  CHECK(a.status == Status::conflict);
  CHECK(a.error() == "failed_precondition");
  REQUIRE(f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "retiring"})").status ==
          Status::ok);
  REQUIRE(f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "retired"})").status ==
          Status::ok);
  a = f.call(Verb::delete_, "/v1/netboot/machines/n1");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body == json{{"removed", "n1"}});
  CHECK(f.get("/v1/netboot/machines/n1").status == Status::not_found);
  CHECK(f.call(Verb::delete_, "/v1/netboot/machines/n1").status == Status::not_found);
  // The index is free again.
  CHECK(f.reg("n2", 0)["index_in_rack"] == 4);
}

TEST_CASE("Boot templates: put, get, list, refusals, delete", "[netboot][routes]") {
  Fixture f;
  const json tpl = {{"kind", "cloud-config"},
                    {"config", "#cloud-config\nhostname: {{ serial }}\n"},
                    {"kernel", "vmlinuz"},
                    {"initrds", {"initrd.img"}},
                    {"cmdline", "console=ttyS0"}};
  CHECK(f.get("/v1/netboot/templates/worker").status == Status::not_found);
  auto a = f.call(Verb::put, "/v1/netboot/templates/worker", tpl.dump(), "127.0.0.1:1");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["role"] == "worker");
  CHECK(a.body["who"] == "admin@127.0.0.1:1");
  a = f.get("/v1/netboot/templates/worker");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["config"] == tpl["config"]);
  CHECK(f.get("/v1/netboot/templates").body["templates"].size() == 1);
  // Refusals change nothing: an unknown placeholder, a role that disagrees with the path,
  // an unknown field, a bad role name, a wrong method.
  auto bad = tpl;
  bad["config"] = "#cloud-config\nhostname: {{ hostname }}\n";
  a = f.call(Verb::put, "/v1/netboot/templates/worker", bad.dump());
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("hostname"));
  bad = tpl;
  bad["role"] = "storage";
  CHECK(f.call(Verb::put, "/v1/netboot/templates/worker", bad.dump()).status ==
        Status::bad_request);
  bad = tpl;
  bad["colour"] = "red";
  CHECK(f.call(Verb::put, "/v1/netboot/templates/worker", bad.dump()).status ==
        Status::bad_request);
  CHECK(f.call(Verb::put, "/v1/netboot/templates/bad%20role", tpl.dump()).status ==
        Status::bad_request);
  CHECK(f.call(Verb::post, "/v1/netboot/templates/worker", tpl.dump()).status ==
        Status::method_not_allowed);
  CHECK(f.get("/v1/netboot/templates/worker").body["config"] == tpl["config"]);
  a = f.call(Verb::delete_, "/v1/netboot/templates/worker");
  CHECK(a.status == Status::ok);
  CHECK(f.call(Verb::delete_, "/v1/netboot/templates/worker").status == Status::not_found);
  CHECK(f.get("/v1/netboot/templates").body["templates"].empty());
}

TEST_CASE("The audit log records who did what, and filters", "[netboot][routes]") {
  Fixture f;
  f.put_ipam();  // as admin@127.0.0.1:5555
  f.reg("n1", 0);
  REQUIRE(f.call(Verb::put, "/v1/netboot/machines/n1/state", R"({"state": "healthy"})", "unix")
              .status == Status::ok);
  REQUIRE(f.call(Verb::put, "/v1/netboot/machines/n1", R"({"labels": {"a": "b"}})", "10.0.0.9:4444",
                 "ops-bot")
              .status == Status::ok);

  auto a = f.get("/v1/netboot/audit?order=oldest");
  REQUIRE(a.status == Status::ok);
  const auto& e = a.body["entries"];
  REQUIRE(e.size() == 4);
  CHECK(e[0]["action"] == "put_ipam");
  CHECK(e[0]["who"] == "admin@127.0.0.1:5555");
  CHECK(e[1]["action"] == "register");
  CHECK(e[1]["serial"] == "n1");
  CHECK(e[1]["before"].is_null());
  CHECK(e[2]["action"] == "set_state");
  CHECK(e[2]["who"] == "admin");
  CHECK(e[2]["before"]["state"] == "uninitialized");
  CHECK(e[2]["after"]["state"] == "healthy");
  CHECK(e[3]["action"] == "update");
  CHECK(e[3]["who"] == "ops-bot");

  a = f.get("/v1/netboot/audit?action=set_state");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["entries"].size() == 1);
  a = f.get("/v1/netboot/audit?serial=n1&limit=2");
  REQUIRE(a.status == Status::ok);
  REQUIRE(a.body["entries"].size() == 2);
  CHECK(a.body["entries"][0]["action"] == "update");  // newest first by default
  a = f.get("/v1/netboot/audit?since=4000000000");
  REQUIRE(a.status == Status::ok);
  CHECK(a.body["entries"].empty());

  a = f.get("/v1/netboot/audit?who=me");
  CHECK(a.status == Status::bad_request);
  CHECK_THAT(a.message(), Catch::Contains("who"));
  CHECK(f.get("/v1/netboot/audit?limit=-1").status == Status::bad_request);
  CHECK(f.get("/v1/netboot/audit?order=sideways").status == Status::bad_request);
  CHECK(f.get("/v1/netboot/audit?labels=a=b").status == Status::bad_request);
}

TEST_CASE("requester prefers the certificate's name", "[netboot][routes]") {
  http::Request r;
  CHECK(requester(r) == "admin");
  r.peer = "unix";
  CHECK(requester(r) == "admin");
  r.peer = "127.0.0.1:1234";
  CHECK(requester(r) == "admin@127.0.0.1:1234");
  r.peer_identity = "node-7";
  CHECK(requester(r) == "node-7");
}
