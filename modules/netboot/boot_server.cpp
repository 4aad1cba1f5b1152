#include "modules/netboot/boot_server.hpp"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "agent/http/file_response.hpp"
#include "agent/http/server.hpp"
#include "agent/log/log.hpp"
#include "agent/runtime/worker_pool.hpp"

namespace neco::netboot {

namespace {

using http::Request;
using http::Response;
using http::Status;

constexpr auto kStoreDeadline = std::chrono::seconds(10);
// How long a machine that cannot boot yet waits before asking again.
constexpr int kRetrySeconds = 30;

log::Logger& logger() {
  static log::Logger l("netboot.boot");
  return l;
}

Response script(std::string text) {
  Response r;
  r.content_type = "text/plain; charset=utf-8";
  r.body = std::move(text);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

// The pieces routes share: options, sources, the pool.
struct Routes {
  BootServerOptions options;
  BootSources sources;
  WorkerPool* workers = nullptr;

  // The machine and its role's template, read off the event loop.
  struct Found {
    Machine machine;
    BootTemplate tpl;
  };
  boost::asio::awaitable<Expected<Found>> find(std::string serial) const {
    // A named job, not a lambda inside the co_await expression: GCC 12 destroys the captures of
    // such a temporary twice.
    auto job = [s = sources, serial = std::move(serial)]() -> Expected<Found> {
      auto m = s.machine(serial);
      if (!m) return std::unexpected(m.error());
      auto t = s.boot_template(m->role);
      if (!t) {
        if (t.error().code == Errc::not_found) {
          return fail(
              Errc::failed_precondition,
              fmt::format("no boot template for role {} of machine {}", m->role, m->serial));
        }
        return std::unexpected(t.error());
      }
      return Found{std::move(*m), std::move(*t)};
    };
    auto found = co_await workers->run(std::move(job), kStoreDeadline);
    co_return found;
  }

  boost::asio::awaitable<Response> machine_script(Request& req) const {
    const std::string serial(req.path_param("serial").value_or(""));
    auto found = co_await find(serial);
    if (!found) {
      const auto& e = found.error();
      if (e.code == Errc::not_found || e.code == Errc::failed_precondition) {
        // iPXE runs what it gets: tell the console why, and come back later.
        logger().info("boot script for {}: {}", serial, e.message);
        co_return script(waiting_ipxe_script(options.url, e.message, kRetrySeconds));
      }
      co_return http::error_response(e);
    }
    auto text = machine_ipxe_script(found->tpl, found->machine, options.url);
    if (!text) {
      logger().warning("boot script for {}: {}", serial, text.error().message);
      co_return script(waiting_ipxe_script(options.url, text.error().message, kRetrySeconds));
    }
    logger().info("boot script for {} (role {})", serial, found->machine.role);
    co_return script(std::move(*text));
  }

  // The rendered config, or (cloud_init_only) refuse an Ignition role's user-data.
  boost::asio::awaitable<Response> config(Request& req, bool cloud_init_only) const {
    const std::string serial(req.path_param("serial").value_or(""));
    auto found = co_await find(serial);
    if (!found) co_return http::error_response(found.error());
    if (cloud_init_only && found->tpl.kind != ConfigKind::cloud_config) {
      co_return Response::error(
          Status::not_found, "not_found",
          fmt::format("role {} boots with Ignition, not cloud-init", found->machine.role));
    }
    auto text = render_config(found->tpl, found->machine, options.url);
    if (!text) co_return http::error_response(text.error());
    Response r;
    r.content_type = std::string(content_type(found->tpl.kind));
    r.body = std::move(*text);
    r.headers.emplace_back("Cache-Control", "no-store");
    co_return r;
  }

  boost::asio::awaitable<Response> meta_data(Request& req) const {
    const std::string serial(req.path_param("serial").value_or(""));
    auto found = co_await find(serial);
    if (!found) co_return http::error_response(found.error());
    // cloud-init's nocloud metadata: the serial names the instance and the host.
    co_return script(fmt::format("instance-id: {}\nlocal-hostname: {}\n", found->machine.serial,
                                 found->machine.serial));
  }

  Response asset(Request& req) const {
    const std::string name(req.path_param("name").value_or(""));
    if (!valid_template_name(name)) {
      return Response::error(Status::not_found, "not_found", "no such asset");
    }
    if (auto path = sources.asset_path ? sources.asset_path(name) : std::nullopt) {
      return http::file_response(req, *path, "application/octet-stream");
    }
    if (auto url = sources.asset_redirect ? sources.asset_redirect(name) : std::nullopt) {
      // Not replicated here yet: a controller that has it serves it meanwhile.
      Response r;
      r.status = Status::found;
      r.content_type = "text/plain; charset=utf-8";
      r.headers.emplace_back("Location", *url);
      r.headers.emplace_back("Cache-Control", "no-store");
      return r;
    }
    return Response::error(Status::not_found, "not_found", fmt::format("no asset '{}'", name));
  }
};

}  // namespace

Expected<std::shared_ptr<http::Router>> boot_router(const BootServerOptions& options,
                                                    BootSources sources, WorkerPool& workers) {
  auto routes = std::make_shared<Routes>(Routes{options, std::move(sources), &workers});
  auto router = std::make_shared<http::Router>();
  Expected<void> ok;
  auto add = [&](std::string_view path, std::string help, http::Handler h) {
    if (!ok) return;
    ok = router->add(path, std::move(help), std::move(h));
    if (!ok) ok = fail(ok.error().code, fmt::format("boot route {}: {}", path, ok.error().message));
  };
  add("/boot/ipxe.ipxe", "iPXE entry script (chains to the serial's script)",
      [routes](Request&) -> boost::asio::awaitable<Response> {
        co_return script(entry_ipxe_script(routes->options.url));
      });
  for (const auto& [name, file] : options.ipxe_files) {
    add("/boot/" + name, "iPXE binary " + name,
        [file = file](Request& req) -> boost::asio::awaitable<Response> {
          co_return http::file_response(req, file, "application/octet-stream");
        });
  }
  add("/boot/machines/{serial}/ipxe", "a machine's iPXE script",
      [routes](Request& req) { return routes->machine_script(req); });
  add("/boot/machines/{serial}/config", "a machine's boot config (Ignition or cloud-config)",
      [routes](Request& req) { return routes->config(req, false); });
  add("/boot/machines/{serial}/user-data", "cloud-init nocloud-net user-data",
      [routes](Request& req) { return routes->config(req, true); });
  add("/boot/machines/{serial}/meta-data", "cloud-init nocloud-net meta-data",
      [routes](Request& req) { return routes->meta_data(req); });
  add("/boot/assets/{name}", "an asset (kernel, initrd, ...); Range and HEAD",
      [routes](Request& req) -> boost::asio::awaitable<Response> { co_return routes->asset(req); });
  if (!ok) return std::unexpected(ok.error());
  return router;
}

BootServer::BootServer(const boost::asio::any_io_executor& executor, BootServerOptions options,
                       std::shared_ptr<http::Router> router)
    : options_(std::move(options)) {
  http::ServerLimits limits;
  limits.max_connections = options_.max_connections;
  // A firmware HTTP client on a slow link still fetches a 100 MB initrd: the write deadline
  // bounds a stalled client, not a slow transfer (see http::FileBody).
  server_ = std::make_unique<http::Server>(executor, limits, log::Logger("http.boot"));
  server_->set_router(std::move(router));
}

BootServer::~BootServer() {
  stop();
}

Expected<boost::asio::ip::tcp::endpoint> BootServer::start() {
  auto bound = server_->listen_tcp(options_.address, options_.port);
  if (!bound) {
    return fail(bound.error().code, fmt::format("boot HTTP listener {}:{}: {}", options_.address,
                                                options_.port, bound.error().message));
  }
  server_->start();
  return bound;
}

void BootServer::stop() {
  if (server_) server_->stop(std::chrono::milliseconds(0));
}

void BootServer::set_router(std::shared_ptr<http::Router> router) {
  server_->set_router(std::move(router));
}

void BootServer::collect(std::vector<metrics::MetricFamily>& out) const {
  const auto& st = server_->stats();
  auto& req = out.emplace_back();
  req.name = "neco_netboot_http_requests_total";
  req.help = "Boot server responses by status class.";
  req.type = metrics::MetricType::counter;
  static constexpr std::array<const char*, 6> kClasses = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (int c = 1; c <= 5; ++c) {
    req.add(static_cast<double>(st.requests(c)), {{"code", kClasses[static_cast<std::size_t>(c)]}});
  }
  auto& conns = out.emplace_back();
  conns.name = "neco_netboot_http_active_connections";
  conns.help = "Open boot server connections.";
  conns.type = metrics::MetricType::gauge;
  conns.add(static_cast<double>(st.active_connections.load()));
}

std::string default_boot_url(const std::string& address, std::uint16_t port) {
  if (address != "0.0.0.0" && !address.empty()) return fmt::format("http://{}:{}", address, port);
  std::string found = "127.0.0.1";
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) == 0) {
    for (auto* a = list; a != nullptr; a = a->ifa_next) {
      if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
      if ((a->ifa_flags & IFF_LOOPBACK) != 0 || (a->ifa_flags & IFF_UP) == 0) continue;
      char text[INET_ADDRSTRLEN] = {};
      const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
      if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof text) != nullptr) {
        found = text;
        break;
      }
    }
    freeifaddrs(list);
  }
  return fmt::format("http://{}:{}", found, port);
}

}  // namespace neco::netboot
