// The netboot module: on the controllers, the DHCP server for the machines that boot from the
// network (only the leader answers), with its leases in the store. See netboot.md.
#pragma once

#include <boost/asio/io_context.hpp>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/config/schema.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/module/module.hpp"
#include "modules/netboot/dhcp_engine.hpp"

namespace neco {
class WorkerPool;
}

namespace neco::netboot {

class AssetStore;
class BootServer;
class DhcpServer;
class Inventory;
namespace tftp {
class TftpServer;
}

struct SubnetSection {
  std::string subnet;  // "10.69.0.0/26"
  std::string range;   // "10.69.0.10-10.69.0.50"
  std::vector<std::string> routers;
  std::vector<std::string> dns_servers;
  std::string domain;
};

struct DhcpSection {
  bool enabled = true;
  std::string address = "0.0.0.0";
  std::int64_t port = 67;
  std::string interface;
  config::Duration lease_time = std::chrono::hours(1);
  config::Duration offer_time = std::chrono::seconds(30);
  config::Duration decline_time = std::chrono::minutes(10);
  std::vector<SubnetSection> subnets;
};

struct TftpSection {
  bool enabled = true;
  std::string address = "0.0.0.0";
  std::int64_t port = 69;
  bool ipxe_files = true;  // serve Debian's ipxe package under the names DHCP hands out
  std::string root_dir;    // other names from under this directory (empty: none)
  std::int64_t max_transfers = 256;
  std::int64_t max_blksize = 1468;
};

struct HttpSection {
  bool enabled = true;
  std::string address = "0.0.0.0";
  std::int64_t port = 10080;
  std::string url;  // how machines reach this controller; empty: derived (default_boot_url)
  std::int64_t max_connections = 4096;
};

struct NetbootConfig {
  DhcpSection dhcp;
  TftpSection tftp;
  HttpSection http;
  BootConfig boot;
};

const config::Schema<NetbootConfig>& netboot_schema();

// The engine config a section describes, or invalid_argument naming the field
// ("modules.netboot.dhcp.subnets[1].range: ...", overlapping subnets, bad addresses).
Expected<EngineConfig> engine_config(const NetbootConfig& config, const std::string& path);

class NetbootModule final : public Module {
 public:
  NetbootModule();
  ~NetbootModule() override;

  std::string_view name() const override { return "netboot"; }
  Expected<void> configure(const config::Section& section) override;
  void add_routes(ModuleRoutes& routes) override;
  Expected<void> start(ModuleContext& context) override;
  void on_leader(std::int64_t term) override;
  void on_follower() override;
  void stop() override;
  Health health() const override;
  nlohmann::json effective_config() const override;

  // The leader's health feed (health_feed.hpp): a loop on the executor that holds only this.
  struct Feed;

 private:
  NetbootConfig pending_;
  NetbootConfig live_;
  ModuleContext* context_ = nullptr;  // while running
  // The machine inventory behind the admin routes and the boot server (controllers only), and
  // the pool they run its store calls on; both set by start, cleared by stop.
  std::shared_ptr<Inventory> inventory_;
  WorkerPool* workers_ = nullptr;
  std::shared_ptr<AssetStore> assets_;  // controllers only (assets.hpp)
  std::shared_ptr<Feed> feed_;
  void stop_feed();
  std::unique_ptr<BootServer> boot_;
  metrics::CollectorHandle boot_metrics_;
  std::string boot_url_;
  std::unique_ptr<DhcpServer> dhcp_;
  // TFTP runs on every controller (it is stateless), on an event loop of its own so file reads
  // never hold up the agent's.
  std::unique_ptr<boost::asio::io_context> tftp_io_;
  std::unique_ptr<tftp::TftpServer> tftp_;
  std::thread tftp_thread_;
  metrics::CollectorHandle tftp_metrics_;
  std::string problem_;
  bool running_ = false;
};

}  // namespace neco::netboot
