// Drives a whole agent in-process: a test module registered with the same one-line macro real
// modules use, fed config from a role file, reached through the admin router, reloaded and
// stopped; systemd notifications go to a fake NOTIFY_SOCKET.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <fmt/format.h>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <catch2/catch.hpp>
#include <thread>

#include "agent/cli/admin_client.hpp"
#include "agent/module/context.hpp"
#include "agent/module/registry.hpp"
#include "agent/runtime/agent.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "tests/support/test_support.hpp"

namespace {

using neco::cli::admin_request;
using neco::cli::AdminTarget;
using neco::testing::wait_for;

struct EchoConfig {
  std::string greeting = "hello";
  std::string token;
};

// What the test observes of the module from outside.
std::atomic<int> g_started{0};
std::atomic<int> g_stopped{0};
std::atomic<std::int64_t> g_term{0};

class EchoModule final : public neco::Module {
 public:
  std::string_view name() const override { return "echo"; }

  neco::Expected<void> configure(const neco::config::Section& section) override {
    EchoConfig c;
    if (auto ok = section.read(schema(), c); !ok) return ok;
    pending_ = c;
    return {};
  }

  void add_routes(neco::ModuleRoutes& routes) override {
    (void)routes.add("hello", "the configured greeting",
                     [this](neco::http::Request&) -> boost::asio::awaitable<neco::http::Response> {
                       co_return neco::http::Response::json({{"greeting", live_.greeting}});
                     });
    (void)routes.add(
        "echo", "returns the body, computed on the worker pool",
        [this](neco::http::Request& req) -> boost::asio::awaitable<neco::http::Response> {
          auto job = [body = req.body]() -> neco::Expected<std::string> { return body; };
          auto r = co_await context_->workers().run(std::move(job), std::chrono::seconds(5));
          co_return neco::http::Response::json({{"echo", r.value_or("")}});
        },
        true);
  }

  neco::Expected<void> start(neco::ModuleContext& context) override {
    context_ = &context;
    live_ = pending_;
    ++g_started;
    return {};
  }
  void on_leader(std::int64_t term) override { g_term = term; }
  void on_follower() override { g_term = 0; }
  bool reloadable() const override { return true; }
  neco::Expected<void> reload() override {
    live_ = pending_;
    return {};
  }
  void stop() override { ++g_stopped; }
  neco::Health health() const override { return {neco::HealthState::healthy, ""}; }
  nlohmann::json effective_config() const override { return schema().dump(live_); }

 private:
  static const neco::config::Schema<EchoConfig>& schema() {
    static const auto s = [] {
      neco::config::Schema<EchoConfig> sc;
      sc.field("greeting", &EchoConfig::greeting, "what GET hello answers");
      sc.field("token", &EchoConfig::token, "a secret", {.secret = true});
      return sc;
    }();
    return s;
  }
  EchoConfig pending_;
  EchoConfig live_;
  neco::ModuleContext* context_ = nullptr;
};

// A datagram socket standing in for systemd's notification socket.
class FakeNotifySocket {
 public:
  explicit FakeNotifySocket(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~FakeNotifySocket() { ::close(fd_); }
  // Everything received so far, one datagram per element.
  std::vector<std::string> drain() {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      received_.emplace_back(buf, static_cast<size_t>(n));
    }
    return received_;
  }
  bool got(const std::string& prefix) {
    for (const auto& m : drain()) {
      if (m.rfind(prefix, 0) == 0) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
  std::vector<std::string> received_;
};

std::string role_text(const std::filesystem::path& dir, std::uint16_t admin, std::uint16_t metrics,
                      const std::string& greeting, const std::string& extra = "") {
  return fmt::format(R"(node:
  name: test-node
controller: true
state_dir: {0}/state
log_level: warning
store:
  election_ttl: 2s
admin:
  port: {1}
  socket: {0}/admin.sock
metrics:
  port: {2}
modules:
  echo:
    greeting: {3}
    token: s3cret
{4})",
                     dir.string(), admin, metrics, greeting, extra);
}

nlohmann::json get_json(const AdminTarget& t, const std::string& path, long expect = 200) {
  auto r = admin_request(t, "GET", path);
  REQUIRE(r.has_value());
  INFO(path << " -> " << r->body);
  CHECK(r->status == expect);
  return nlohmann::json::parse(r->body);
}

}  // namespace

NECO_REGISTER_MODULE(echo, EchoModule);

TEST_CASE("an agent runs a module from its role file, serves, reloads and stops", "[agent]") {
  neco::testing::TempDir dir;
  const auto admin_port = neco::testing::free_port();
  const auto metrics_port = neco::testing::free_port();
  const auto role = dir / "role.yaml";
  neco::testing::write_file(role, role_text(dir.path(), admin_port, metrics_port, "hi"));

  FakeNotifySocket notify((dir / "notify.sock").string());
  ::setenv("NOTIFY_SOCKET", (dir / "notify.sock").c_str(), 1);
  ::setenv("WATCHDOG_USEC", "200000", 1);
  ::unsetenv("WATCHDOG_PID");

  auto loaded = neco::load_config(role.string());
  REQUIRE(loaded.has_value());
  auto agent = std::make_unique<neco::Agent>(std::move(*loaded), neco::AgentOptions{false});
  int exit_code = -1;
  std::thread runner([&] { exit_code = agent->run(); });
  REQUIRE(wait_for([&] { return agent->ready(); }));
  CHECK(g_started == 1);

  AdminTarget t;
  t.base_url = fmt::format("http://127.0.0.1:{}", admin_port);

  CHECK(get_json(t, "/healthz")["status"] == "ok");
  CHECK(get_json(t, "/v1/echo/hello")["greeting"] == "hi");

  // A mutating route refuses GET; POST reaches the module and its worker-pool call.
  CHECK(admin_request(t, "GET", "/v1/echo/echo")->status == 405);
  auto posted = admin_request(t, "POST", "/v1/echo/echo", "ping");
  REQUIRE(posted.has_value());
  CHECK(nlohmann::json::parse(posted->body)["echo"] == "ping");
  auto missing = admin_request(t, "GET", "/v1/nothing");
  CHECK(missing->status == 404);
  CHECK(nlohmann::json::parse(missing->body).contains("error"));

  // The single controller elects itself; modules hear about it.
  REQUIRE(wait_for([&] { return get_json(t, "/status")["leader"]["self"] == true; }));
  CHECK(wait_for([&] { return g_term.load() > 0; }));
  const auto status = get_json(t, "/status");
  CHECK(status["node"] == "test-node");
  CHECK(status["role"] == "leader");
  CHECK(status["modules"][0]["name"] == "echo");
  CHECK(status["modules"][0]["health"] == "healthy");
  CHECK(get_json(t, "/readyz")["status"] == "ready");

  const auto config = get_json(t, "/config");
  CHECK(config["config"]["modules"]["echo"]["token"] == "<redacted>");
  CHECK(config.dump().find("s3cret") == std::string::npos);
  CHECK(config["config"]["admin"]["port"] == admin_port);

  const auto help = get_json(t, "/help");
  std::vector<std::string> paths;
  for (const auto& r : help["routes"])
    paths.push_back(r["path"]);
  for (const char* p : {"/healthz", "/readyz", "/status", "/config", "/help", "/v1/echo/hello",
                        "/v1/echo/echo", "/v1/agent/reload"}) {
    CHECK(std::find(paths.begin(), paths.end(), p) != paths.end());
  }

  // The unix socket answers too and is private to root.
  AdminTarget unix_target;
  unix_target.socket = (dir / "admin.sock").string();
  CHECK(get_json(unix_target, "/healthz")["status"] == "ok");
  struct stat st {};
  REQUIRE(::stat(unix_target.socket.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  // The metrics listener is separate and carries agent, process and store metrics.
  AdminTarget m;
  m.base_url = fmt::format("http://127.0.0.1:{}", metrics_port);
  auto scrape = admin_request(m, "GET", "/metrics");
  REQUIRE(scrape.has_value());
  CHECK(scrape->status == 200);
  CHECK(scrape->body.find("neco_module_health{module=\"echo\",state=\"healthy\"} 1") !=
        std::string::npos);
  CHECK(scrape->body.find("process_resident_memory_bytes ") != std::string::npos);
  CHECK(scrape->body.find("neco_leader 1") != std::string::npos);
  CHECK(scrape->body.find("neco_store_operation_duration_seconds_bucket{operation=") !=
        std::string::npos);
  CHECK(admin_request(m, "GET", "/status")->status == 404);  // admin routes are not here

  // A valid change applies live.
  neco::testing::write_file(role, role_text(dir.path(), admin_port, metrics_port, "bonjour"));
  agent->request_reload();
  CHECK(wait_for([&] { return get_json(t, "/v1/echo/hello")["greeting"] == "bonjour"; }));

  // A broken file, and a change only a restart can apply, are refused; the last good config
  // keeps running.
  neco::testing::write_file(
      role, role_text(dir.path(), admin_port, metrics_port, "x", "    colour: blue\n"));
  auto refused = admin_request(t, "POST", "/v1/agent/reload");
  REQUIRE(refused.has_value());
  CHECK(refused->status == 422);
  CHECK(refused->body.find("role.yaml:17:5: unknown key 'modules.echo.colour'") !=
        std::string::npos);
  neco::testing::write_file(role, role_text(dir.path(), admin_port + 1, metrics_port, "x"));
  refused = admin_request(t, "POST", "/v1/agent/reload");
  CHECK(refused->status == 422);
  CHECK(refused->body.find("'admin' changed; it only takes effect on restart") !=
        std::string::npos);
  CHECK(get_json(t, "/v1/echo/hello")["greeting"] == "bonjour");
  auto after = admin_request(m, "GET", "/metrics");
  CHECK(after->body.find("neco_config_reloads_total{result=\"failure\"} 2") != std::string::npos);
  CHECK(after->body.find("neco_config_last_reload_successful 0") != std::string::npos);

  // The watchdog is pinged from the event loop at half of WATCHDOG_USEC.
  CHECK(wait_for([&] { return notify.got("WATCHDOG=1"); }));

  // Stop: modules stop, run() returns 0, systemd heard the whole life cycle.
  agent->request_stop();
  runner.join();
  CHECK(exit_code == 0);
  CHECK(g_stopped == 1);
  CHECK(notify.got("READY=1"));
  CHECK(notify.got("RELOADING=1"));
  CHECK(notify.got("STOPPING=1"));
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
}

TEST_CASE("a listener that cannot bind fails start with advice", "[agent]") {
  neco::testing::TempDir dir;
  const auto port = neco::testing::free_port();
  // Hold the admin port so the agent cannot bind it.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 1) == 0);
  neco::testing::write_file(dir / "role.yaml",
                            role_text(dir.path(), port, neco::testing::free_port(), "x"));
  auto loaded = neco::load_config((dir / "role.yaml").string());
  REQUIRE(loaded.has_value());
  neco::Agent agent(std::move(*loaded), neco::AgentOptions{false});
  CHECK(agent.run() == 1);
  ::close(fd);
}

TEST_CASE("the worker pool returns results, enforces deadlines and bounds its queue", "[agent]") {
  boost::asio::io_context io;
  neco::WorkerPool pool(1, 1);
  std::vector<neco::Expected<int>> results;
  std::atomic<bool> release{false};
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        auto quick = []() -> neco::Expected<int> { return 42; };
        results.push_back(co_await pool.run(std::move(quick), std::chrono::seconds(5)));
        auto stuck = [&]() -> neco::Expected<int> {
          while (!release)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          return 1;
        };
        results.push_back(co_await pool.run(std::move(stuck), std::chrono::milliseconds(50)));
        // The stuck call still occupies the only queue slot: the next one is refused at once.
        auto refused = []() -> neco::Expected<int> { return 7; };
        results.push_back(co_await pool.run(std::move(refused), std::chrono::seconds(5)));
        release = true;
      },
      boost::asio::detached);
  io.run();
  REQUIRE(results.size() == 3);
  CHECK(results[0].value() == 42);
  REQUIRE_FALSE(results[1].has_value());
  CHECK(results[1].error().code == neco::Errc::deadline_exceeded);
  REQUIRE_FALSE(results[2].has_value());
  CHECK(results[2].error().code == neco::Errc::unavailable);
  CHECK(pool.timeouts() == 1);
}
