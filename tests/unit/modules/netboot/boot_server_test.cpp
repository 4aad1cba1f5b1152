// The boot server's routes without sockets: boot_router() over hand-made sources (a machine,
// templates by role, an asset on disk and one only a peer has) and a real WorkerPool; each
// handler runs on an io_context with a hand-made Request. The netns integration test drives
// the same routes through the listener with curl.
#include "modules/netboot/boot_server.hpp"

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <fmt/format.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/runtime/worker_pool.hpp"
#include "tests/support/test_support.hpp"

using namespace neco;
using namespace neco::netboot;
using http::Status;
using http::Verb;

namespace {

constexpr const char* kUrl = "http://10.0.0.3:10080";

Machine machine(std::string serial, std::string role) {
  Machine m;
  m.serial = std::move(serial);
  m.role = std::move(role);
  m.rack = 1;
  m.index_in_rack = 4;
  m.ipv4 = {Interface{0x0A000085, 26, 0x0A000081}};
  return m;
}

struct Fixture {
  neco::testing::TempDir dir;
  // One event loop for the fixture, destroyed after the pool has joined: a worker drops its
  // call's state (a timer of this loop) after handing back the result.
  boost::asio::io_context io;
  WorkerPool pool{2, 16};
  std::shared_ptr<http::Router> router;
  std::string kernel = std::string(100'000, 'k');

  Fixture() {
    {
      std::ofstream f(dir.file("vmlinuz"), std::ios::binary);
      f << kernel;
    }
    BootServerOptions o;
    o.url = kUrl;
    o.ipxe_files = {{"ipxe.efi", dir.file("vmlinuz")}};
    BootSources s;
    s.machine = [](std::string_view serial) -> Expected<Machine> {
      if (serial == "AB1") return machine("AB1", "worker");
      if (serial == "CC1") return machine("CC1", "storage");
      if (serial == "NT1") return machine("NT1", "other");
      return fail(Errc::not_found, fmt::format("no machine '{}'", serial));
    };
    s.boot_template = [](std::string_view role) -> Expected<BootTemplate> {
      BootTemplate t;
      t.role = role;
      t.kernel = "vmlinuz";
      t.initrds = {"initrd.img"};
      if (role == "worker") {
        t.config = R"({"ignition": {"version": "3.3.0"}, "x": "{{ serial }}"})";
        return t;
      }
      if (role == "storage") {
        t.kind = ConfigKind::cloud_config;
        t.config = "#cloud-config\nhostname: {{ serial }}\n";
        return t;
      }
      return fail(Errc::not_found, "no template");
    };
    s.asset_path = [this](std::string_view name) -> std::optional<std::filesystem::path> {
      if (name == "vmlinuz") return std::filesystem::path(dir.file("vmlinuz"));
      return std::nullopt;
    };
    s.asset_redirect = [](std::string_view name) -> std::optional<std::string> {
      if (name == "initrd.img") return std::string("http://10.0.0.4:10080/boot/assets/initrd.img");
      return std::nullopt;
    };
    auto r = boot_router(o, std::move(s), pool);
    if (!r) FAIL(r.error().message);
    router = *r;
  }

  http::Response get(const std::string& path, http::Pairs headers = {}, Verb method = Verb::get) {
    const auto m = router->match(method, path);
    if (m.kind != http::RouteMatch::Kind::found) {
      http::Response r;
      r.status = Status::not_found;
      return r;
    }
    http::Request req;
    req.method = method;
    req.path = path;
    req.target = path;
    req.headers = std::move(headers);
    req.path_params = m.params;
    std::optional<http::Response> res;
    io.restart();
    boost::asio::co_spawn(io, (*m.handler)(req),
                          [&](const std::exception_ptr& e, http::Response r) {
                            if (e) std::rethrow_exception(e);
                            res = std::move(r);
                          });
    io.run_for(std::chrono::seconds(10));
    if (!res) FAIL("no answer to " << path);
    return std::move(*res);
  }
};

std::optional<std::string> header(const http::Response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (http::iequals(k, name)) return v;
  }
  return std::nullopt;
}

}  // namespace

TEST_CASE("Boot scripts: entry, per machine, and waiting", "[netboot][boot]") {
  Fixture f;
  auto entry = f.get("/boot/ipxe.ipxe");
  CHECK(entry.status == Status::ok);
  CHECK(entry.body == entry_ipxe_script(kUrl));
  auto script = f.get("/boot/machines/AB1/ipxe");
  CHECK(script.status == Status::ok);
  CHECK(script.body.find("kernel http://10.0.0.3:10080/boot/assets/vmlinuz initrd=initrd.img "
                         "ignition.config.url=http://10.0.0.3:10080/boot/machines/AB1/config") !=
        std::string::npos);
  CHECK(header(script, "Cache-Control") == "no-store");
  // Unknown serial, or a role without a template: a script that says why and retries.
  for (const char* path : {"/boot/machines/ZZ9/ipxe", "/boot/machines/NT1/ipxe"}) {
    auto wait = f.get(path);
    CHECK(wait.status == Status::ok);
    CHECK(wait.body.starts_with("#!ipxe\n"));
    CHECK(wait.body.find("sleep 30") != std::string::npos);
  }
  CHECK(f.get("/boot/machines/ZZ9/ipxe").body.find("no machine 'ZZ9'") != std::string::npos);
  CHECK(f.get("/boot/machines/NT1/ipxe").body.find("no boot template for role other") !=
        std::string::npos);
}

TEST_CASE("Boot configs: Ignition, cloud-init user-data and meta-data", "[netboot][boot]") {
  Fixture f;
  auto ign = f.get("/boot/machines/AB1/config");
  CHECK(ign.status == Status::ok);
  CHECK(ign.content_type == "application/json");
  CHECK(nlohmann::json::parse(ign.body)["x"] == "AB1");
  CHECK(f.get("/boot/machines/AB1/user-data").status == Status::not_found);  // Ignition role
  auto cc = f.get("/boot/machines/CC1/user-data");
  CHECK(cc.status == Status::ok);
  CHECK(cc.body == "#cloud-config\nhostname: CC1\n");
  CHECK(f.get("/boot/machines/CC1/meta-data").body == "instance-id: CC1\nlocal-hostname: CC1\n");
  CHECK(f.get("/boot/machines/ZZ9/config").status == Status::not_found);
  CHECK(f.get("/boot/machines/NT1/config").status == Status::conflict);
}

TEST_CASE("Assets and iPXE files: local, redirect, missing, ranges", "[netboot][boot]") {
  Fixture f;
  auto k = f.get("/boot/assets/vmlinuz");
  CHECK(k.status == Status::ok);
  REQUIRE(k.file);
  CHECK(k.file->length == f.kernel.size());
  auto part = f.get("/boot/assets/vmlinuz", {{"Range", "bytes=10-19"}});
  CHECK(part.status == Status::partial_content);
  REQUIRE(part.file);
  CHECK(part.file->offset == 10);
  CHECK(part.file->length == 10);
  auto head = f.get("/boot/assets/vmlinuz", {}, Verb::head);
  CHECK(head.status == Status::ok);
  auto moved = f.get("/boot/assets/initrd.img");
  CHECK(moved.status == Status::found);
  CHECK(header(moved, "Location") == "http://10.0.0.4:10080/boot/assets/initrd.img");
  CHECK(f.get("/boot/assets/nothing").status == Status::not_found);
  CHECK(f.get("/boot/assets/.hidden").status == Status::not_found);
  auto efi = f.get("/boot/ipxe.efi");
  CHECK(efi.status == Status::ok);
  REQUIRE(efi.file);
  CHECK(efi.file->length == f.kernel.size());
}
