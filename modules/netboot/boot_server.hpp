// The boot server: plain HTTP on every controller for machines that boot from the network.
// iPXE (chainloaded by DHCP/TFTP, or UEFI HTTP boot) fetches, in order:
//   GET /boot/ipxe.efi, /boot/undionly.kpxe, ...   Debian's iPXE binaries (UEFI HTTP boot)
//   GET /boot/ipxe.ipxe                            entry script: chains to the serial's script
//   GET /boot/machines/{serial}/ipxe               kernel + initrds + command line + config URL
//   GET /boot/assets/{name}                        kernel, initrd, any asset (Range, HEAD)
//   GET /boot/machines/{serial}/config             Ignition JSON or cloud-config, rendered
//   GET /boot/machines/{serial}/{user,meta}-data   the same for cloud-init's nocloud-net
// Its own listener, apart from the local admin endpoint: booting machines have no identity
// to present, so these routes only read, and what they reveal is what a machine needs to boot.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/http/router.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/util/error.hpp"
#include "modules/netboot/machine.hpp"
#include "modules/netboot/templates.hpp"

namespace neco {
class WorkerPool;
namespace http {
class Server;
}
}  // namespace neco

namespace neco::netboot {

struct BootServerOptions {
  std::string address = "0.0.0.0";
  std::uint16_t port = 10080;
  std::string url;                                // how machines reach it, no trailing slash
  std::map<std::string, std::string> ipxe_files;  // name under /boot/ -> file
  std::size_t max_connections = 4096;
};

// Where the answers come from. `machine` and `boot_template` may block (store reads; they run
// on the worker pool); the asset lookups must not (they read a cache).
struct BootSources {
  std::function<Expected<Machine>(std::string_view serial)> machine;
  std::function<Expected<BootTemplate>(std::string_view role)> boot_template;
  std::function<std::optional<std::filesystem::path>(std::string_view name)> asset_path;
  std::function<std::optional<std::string>(std::string_view name)> asset_redirect;
};

// The routes, on a router of their own (tests drive them without a socket); fails only when an
// iPXE file name cannot be a route.
Expected<std::shared_ptr<http::Router>> boot_router(const BootServerOptions& options,
                                                    BootSources sources, WorkerPool& workers);

class BootServer {
 public:
  // `router` from boot_router().
  BootServer(const boost::asio::any_io_executor& executor, BootServerOptions options,
             std::shared_ptr<http::Router> router);
  ~BootServer();
  BootServer(const BootServer&) = delete;
  BootServer& operator=(const BootServer&) = delete;

  // Binds and starts; returns the bound endpoint (port 0 picks one).
  Expected<boost::asio::ip::tcp::endpoint> start();
  void stop();
  // Swaps the routes (requests in flight finish on the old ones).
  void set_router(std::shared_ptr<http::Router> router);

  // The listener's counters as metrics (neco_netboot_http_*).
  void collect(std::vector<metrics::MetricFamily>& out) const;

 private:
  BootServerOptions options_;
  std::unique_ptr<http::Server> server_;
};

// The URL machines use when none is configured: http://ADDRESS:PORT for a specific address,
// otherwise the first non-loopback IPv4 address of this host (127.0.0.1 when there is none).
std::string default_boot_url(const std::string& address, std::uint16_t port);

}  // namespace neco::netboot
