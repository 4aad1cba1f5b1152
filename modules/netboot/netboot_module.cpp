#include "modules/netboot/netboot_module.hpp"

#include <fmt/format.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "agent/http/request.hpp"
#include "agent/http/response.hpp"
#include "agent/module/context.hpp"
#include "agent/module/registry.hpp"
#include "agent/runtime/worker_pool.hpp"
#include "agent/store/election.hpp"
#include "modules/netboot/assets.hpp"
#include "modules/netboot/boot_server.hpp"
#include "modules/netboot/dhcp_server.hpp"
#include "modules/netboot/health_feed.hpp"
#include "modules/netboot/inventory.hpp"
#include "modules/netboot/inventory_routes.hpp"
#include "modules/netboot/tftp_server.hpp"

namespace neco::netboot {

namespace {

std::string check_ipv4_list(const std::vector<std::string>& list) {
  for (const auto& a : list) {
    if (!parse_ipv4(a)) return fmt::format("\"{}\" is not an IPv4 address", a);
  }
  return {};
}

std::vector<Ipv4> ipv4_list(const std::vector<std::string>& list) {
  std::vector<Ipv4> out;
  out.reserve(list.size());
  for (const auto& a : list)
    out.push_back(*parse_ipv4(a));
  return out;
}

std::uint32_t seconds(config::Duration d) {
  return static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(d).count());
}

}  // namespace

const config::Schema<NetbootConfig>& netboot_schema() {
  static const auto schema = [] {
    config::Schema<SubnetSection> sub;
    sub.field("subnet", &SubnetSection::subnet, "network in CIDR form, e.g. 10.69.0.0/26",
              {.required = true});
    sub.field("range", &SubnetSection::range, "dynamic range FIRST-LAST handed to booting machines",
              {.required = true});
    sub.field("routers", &SubnetSection::routers, "option 3", {.check = check_ipv4_list});
    sub.field("dns_servers", &SubnetSection::dns_servers, "option 6", {.check = check_ipv4_list});
    sub.field("domain", &SubnetSection::domain, "option 15");
    config::Schema<DhcpSection> dhcp;
    dhcp.field("enabled", &DhcpSection::enabled, "run the DHCP server (leader only answers)");
    dhcp.field("address", &DhcpSection::address, "IPv4 address to bind",
               {.check = [](const std::string& a) {
                 return parse_ipv4(a) ? std::string() : "not an IPv4 address";
               }});
    dhcp.field("port", &DhcpSection::port, "UDP port (67; relays send there too)",
               {.min = 0, .max = 65535});
    dhcp.field("interface", &DhcpSection::interface, "bind to this interface only (empty: all)");
    dhcp.field("lease_time", &DhcpSection::lease_time, "lease length (T1 = 1/2, T2 = 7/8)",
               {.min = std::chrono::seconds(60)});
    dhcp.field("offer_time", &DhcpSection::offer_time, "how long an offer holds its address",
               {.min = std::chrono::seconds(1)});
    dhcp.field("decline_time", &DhcpSection::decline_time,
               "how long a declined (in use elsewhere) address rests",
               {.min = std::chrono::seconds(1)});
    dhcp.list("subnets", &DhcpSection::subnets, sub,
              "subnets with a dynamic range (directly attached, or behind relays by giaddr)");
    config::Schema<TftpSection> tftp;
    tftp.field("enabled", &TftpSection::enabled, "run the read-only TFTP server");
    tftp.field("address", &TftpSection::address, "address to listen on");
    tftp.field("port", &TftpSection::port, "UDP port", {.min = 0, .max = 65535});
    tftp.field("ipxe_files", &TftpSection::ipxe_files,
               "serve Debian's ipxe package (undionly.kpxe, ipxe.efi, ...) by those names");
    tftp.field("root_dir", &TftpSection::root_dir,
               "serve other names from under this directory (no symlinks, no ..)");
    tftp.field("max_transfers", &TftpSection::max_transfers, "concurrent transfers",
               {.min = 1, .max = 65536});
    tftp.field("max_blksize", &TftpSection::max_blksize,
               "largest block size granted (1468 fits a 1500-byte MTU)",
               {.min = 512, .max = 65464});
    config::Schema<HttpSection> http;
    http.field("enabled", &HttpSection::enabled,
               "run the boot HTTP server (iPXE scripts, assets, boot configs; controllers)");
    http.field("address", &HttpSection::address, "IP address to listen on");
    http.field("port", &HttpSection::port, "TCP port", {.min = 0, .max = 65535});
    http.field("url", &HttpSection::url,
               "URL machines reach this server by (empty: http://ADDRESS:PORT, or this host's "
               "first non-loopback address when ADDRESS is 0.0.0.0)",
               {.check = [](const std::string& u) {
                 return u.empty() || u.starts_with("http://") ? std::string()
                                                              : "must start with http://";
               }});
    http.field("max_connections", &HttpSection::max_connections, "concurrent connections",
               {.min = 1, .max = 1'000'000});
    config::Schema<BootConfig> boot;
    boot.field("ipxe_script_url", &BootConfig::ipxe_script_url,
               "script URL for clients already running iPXE (empty: the boot server's "
               "/boot/ipxe.ipxe)");
    boot.field("tftp_bios", &BootConfig::tftp_bios, "TFTP file for BIOS PXE");
    boot.field("tftp_efi_x64", &BootConfig::tftp_efi_x64, "TFTP file for x64 UEFI PXE");
    boot.field("tftp_efi_arm64", &BootConfig::tftp_efi_arm64, "TFTP file for arm64 UEFI PXE");
    boot.field("http_efi_x64_url", &BootConfig::http_efi_x64_url,
               "URL for x64 UEFI HTTP boot (empty: the boot server's /boot/ipxe.efi)");
    boot.field("http_efi_arm64_url", &BootConfig::http_efi_arm64_url,
               "URL for arm64 UEFI HTTP boot");
    boot.field("http_efi_ia32_url", &BootConfig::http_efi_ia32_url,
               "URL for 32-bit x86 UEFI HTTP boot");
    config::Schema<NetbootConfig> s;
    s.section("dhcp", &NetbootConfig::dhcp, dhcp, "DHCPv4 server");
    s.section("tftp", &NetbootConfig::tftp, tftp, "TFTP server for PXE firmware");
    s.section("http", &NetbootConfig::http, http, "boot HTTP server for iPXE and UEFI HTTP boot");
    s.section("boot", &NetbootConfig::boot, boot, "what booting clients are told to load");
    return s;
  }();
  return schema;
}

Expected<EngineConfig> engine_config(const NetbootConfig& config, const std::string& path) {
  EngineConfig e;
  e.lease_seconds = seconds(config.dhcp.lease_time);
  e.offer_seconds = seconds(config.dhcp.offer_time);
  e.decline_seconds = seconds(config.dhcp.decline_time);
  e.boot = config.boot;
  for (std::size_t i = 0; i < config.dhcp.subnets.size(); ++i) {
    const auto& s = config.dhcp.subnets[i];
    const std::string at = fmt::format("{}.dhcp.subnets[{}]", path, i);
    auto subnet = make_subnet(s.subnet, s.range);
    if (!subnet) return fail(Errc::invalid_argument, at + ": " + subnet.error().message);
    for (const auto& other : e.subnets) {
      if (other.contains(subnet->network) || subnet->contains(other.network)) {
        return fail(Errc::invalid_argument,
                    fmt::format("{}: {} overlaps {}", at, subnet->name, other.name));
      }
    }
    subnet->routers = ipv4_list(s.routers);
    subnet->dns_servers = ipv4_list(s.dns_servers);
    subnet->domain = s.domain;
    e.subnets.push_back(std::move(*subnet));
  }
  return e;
}

NetbootModule::NetbootModule() = default;
NetbootModule::~NetbootModule() {
  stop();
}

Expected<void> NetbootModule::configure(const config::Section& section) {
  NetbootConfig c;
  if (auto ok = section.read(netboot_schema(), c); !ok) return ok;
  auto e = engine_config(c, section.path());
  if (!e) return std::unexpected(e.error());
  if (c.dhcp.enabled && c.dhcp.subnets.empty()) {
    return fail(
        Errc::invalid_argument,
        section.path() + ".dhcp.subnets: at least one subnet is needed (or enabled: false)");
  }
  pending_ = std::move(c);
  return {};
}

void NetbootModule::add_routes(ModuleRoutes& routes) {
  add_inventory_routes(
      routes, {.inventory = [this] { return inventory_; }, .workers = [this] { return workers_; }});
  add_asset_routes(
      routes, [this] { return assets_; }, [this] { return workers_; });
  (void)routes.add(
      "machines/{serial}/boot", "what a machine gets when it boots: iPXE script and boot config",
      [this](http::Request& req) -> boost::asio::awaitable<http::Response> {
        auto inv = inventory_;
        auto* pool = workers_;
        if (!inv || pool == nullptr) {
          co_return http::error_response(
              {Errc::unavailable, "no machine inventory here: it lives on the controllers"});
        }
        const std::string serial(req.path_param("serial").value_or(""));
        // Rendered for this controller's boot server, as a machine booting from it gets it.
        const std::string url = boot_url_.empty() ? "http://boot-server-disabled" : boot_url_;
        // Named, not a temporary in the co_await: GCC 12 destroys such captures twice.
        auto job = [inv, serial, url]() -> Expected<nlohmann::json> {
          auto m = inv->get(serial);
          if (!m) return std::unexpected(m.error());
          auto t = inv->get_template(m->role);
          if (!t) return std::unexpected(t.error());
          auto script = machine_ipxe_script(*t, *m, url);
          if (!script) return std::unexpected(script.error());
          auto config = render_config(*t, *m, url);
          if (!config) return std::unexpected(config.error());
          return nlohmann::json{{"serial", m->serial},
                                {"role", m->role},
                                {"script", *script},
                                {"config", *config},
                                {"content_type", content_type(t->kind)}};
        };
        auto r = co_await pool->run(std::move(job), std::chrono::seconds(15));
        if (!r) co_return http::error_response(r.error());
        co_return http::Response::json(*r);
      });
  (void)routes.add("leases", "DHCP leases of this controller's table (the leader's is current)",
                   [this](http::Request&) -> boost::asio::awaitable<http::Response> {
                     nlohmann::json list = nlohmann::json::array();
                     if (dhcp_) {
                       for (const auto& l : dhcp_->leases()) {
                         list.push_back({{"address", to_string(to_ipv4(l.address))},
                                         {"hw", l.hw},
                                         {"hostname", l.hostname},
                                         {"state", to_string(l.state)},
                                         {"expires", l.expires}});
                       }
                     }
                     co_return http::Response::json(
                         {{"answering", dhcp_ && dhcp_->answering()}, {"leases", list}});
                   });
}

Expected<void> NetbootModule::start(ModuleContext& context) {
  live_ = pending_;
  problem_.clear();
  context_ = &context;
  if (context.store() != nullptr) {
    inventory_ = make_inventory(*context.store());
    AssetStoreOptions a;
    a.self = context.core().node.name;
    a.dir = context.state_dir() / "assets";
    a.metrics = &context.metrics();
    assets_ = std::make_shared<AssetStore>(*context.store(), std::move(a));
    if (auto ok = assets_->start(); !ok) {
      stop();
      return ok;
    }
  }
  workers_ = &context.workers();
  if (live_.http.enabled) {
    if (inventory_ == nullptr) {
      stop();
      return fail(Errc::failed_precondition,
                  "netboot's boot HTTP server runs on controllers (it reads the inventory); "
                  "set controller: true or http.enabled: false");
    }
    BootServerOptions b;
    b.address = live_.http.address;
    b.port = static_cast<std::uint16_t>(live_.http.port);
    b.max_connections = static_cast<std::size_t>(live_.http.max_connections);
    b.ipxe_files = tftp::debian_ipxe_files();
    BootSources sources;
    // Copies of the shared pointers: a store read past its deadline still owns its inventory.
    sources.machine = [inv = inventory_](std::string_view serial) { return inv->get(serial); };
    sources.boot_template = [inv = inventory_](std::string_view role) {
      return inv->get_template(role);
    };
    sources.asset_path = [a = assets_](std::string_view name) { return a->local_path(name); };
    sources.asset_redirect = [a = assets_](std::string_view name) { return a->redirect_url(name); };
    // The port is known only once bound (port 0 in tests), and the URL goes into the router.
    b.url = live_.http.url;
    auto router = boot_router(b, sources, context.workers());
    if (!router) {
      stop();
      return std::unexpected(router.error());
    }
    boot_ = std::make_unique<BootServer>(context.executor(), b, *router);
    auto bound = boot_->start();
    if (!bound) {
      stop();
      return std::unexpected(bound.error());
    }
    boot_url_ = live_.http.url.empty() ? default_boot_url(live_.http.address, bound->port())
                                       : live_.http.url;
    if (live_.http.url.empty()) {
      b.url = boot_url_;
      auto with_url = boot_router(b, std::move(sources), context.workers());
      if (!with_url) {
        stop();
        return std::unexpected(with_url.error());
      }
      boot_->set_router(*with_url);
    }
    // Other controllers pull assets from here, and redirect machines here meanwhile.
    if (auto ok = assets_->advertise(boot_url_); !ok) {
      stop();
      return ok;
    }
    boot_metrics_ = context.metrics().add_collector(
        [this](std::vector<metrics::MetricFamily>& out) { boot_->collect(out); });
  }
  if (live_.dhcp.enabled) {
    if (context.store() == nullptr) {
      return fail(Errc::failed_precondition,
                  "netboot's DHCP server runs on controllers (it keeps leases in the store); "
                  "set controller: true or dhcp.enabled: false");
    }
    // Unset boot URLs point at this controller's boot server.
    auto engine = *engine_config(live_, "modules.netboot");
    if (!boot_url_.empty()) {
      if (engine.boot.ipxe_script_url.empty()) {
        engine.boot.ipxe_script_url = boot_url_ + "/boot/ipxe.ipxe";
      }
      if (engine.boot.http_efi_x64_url.empty()) {
        engine.boot.http_efi_x64_url = boot_url_ + "/boot/ipxe.efi";
      }
    }
    DhcpServerOptions o;
    o.address = live_.dhcp.address;
    o.port = static_cast<std::uint16_t>(live_.dhcp.port);
    o.interface = live_.dhcp.interface;
    // configure() accepted this config, so the engine config derives from it without error.
    dhcp_ = std::make_unique<DhcpServer>(std::move(engine), o, *context.store(), context.election(),
                                         context.metrics());
    if (auto ok = dhcp_->start(); !ok) {
      dhcp_.reset();
      return ok;
    }
  }
  if (live_.tftp.enabled) {
    tftp::ServerConfig t;
    t.address = live_.tftp.address;
    t.port = static_cast<std::uint16_t>(live_.tftp.port);
    if (live_.tftp.ipxe_files) t.files = tftp::debian_ipxe_files();
    t.root_dir = live_.tftp.root_dir;
    t.max_transfers = static_cast<std::size_t>(live_.tftp.max_transfers);
    t.max_blksize = static_cast<std::uint16_t>(live_.tftp.max_blksize);
    tftp_io_ = std::make_unique<boost::asio::io_context>(1);
    tftp_ = std::make_unique<tftp::TftpServer>(*tftp_io_, std::move(t));
    if (auto ok = tftp_->start(); !ok) {
      stop();
      return ok;
    }
    tftp_thread_ = std::thread([io = tftp_io_.get()] {
      auto guard = boost::asio::make_work_guard(*io);
      io->run();
    });
    tftp_metrics_ = context.metrics().add_collector([this](
                                                        std::vector<metrics::MetricFamily>& out) {
      const auto& st = tftp_->stats();
      auto counter = [&](const char* name, const char* help) -> metrics::MetricFamily& {
        auto& f = out.emplace_back();
        f.name = name;
        f.help = help;
        f.type = metrics::MetricType::counter;
        return f;
      };
      counter("neco_netboot_tftp_requests_total", "TFTP read requests that parsed")
          .add(static_cast<double>(st.requests.load()));
      counter("neco_netboot_tftp_transfers_completed_total",
              "TFTP transfers acknowledged to the end")
          .add(static_cast<double>(st.transfers_completed.load()));
      counter("neco_netboot_tftp_sent_bytes_total", "file bytes sent (retransmissions excluded)")
          .add(static_cast<double>(st.bytes_sent.load()));
      counter("neco_netboot_tftp_retransmissions_total", "DATA/OACK sent again after a timeout")
          .add(static_cast<double>(st.retransmissions.load()));
      auto& refused = counter("neco_netboot_tftp_refused_total", "requests answered with an ERROR");
      for (std::size_t i = 0; i < tftp::kRefuseReasons; ++i) {
        const auto r = static_cast<tftp::RefuseReason>(i);
        refused.add(static_cast<double>(st.refused(r)), {{"reason", tftp::to_string(r)}});
      }
      auto& failed = counter("neco_netboot_tftp_failed_total", "transfers ended early");
      for (std::size_t i = 0; i < tftp::kFailReasons; ++i) {
        const auto r = static_cast<tftp::FailReason>(i);
        failed.add(static_cast<double>(st.failed(r)), {{"reason", tftp::to_string(r)}});
      }
      auto& active = out.emplace_back();
      active.name = "neco_netboot_tftp_active_transfers";
      active.help = "TFTP transfers running now";
      active.type = metrics::MetricType::gauge;
      active.add(static_cast<double>(st.active_transfers.load()));
    });
  }
  running_ = true;
  if (auto* el = context.election(); el != nullptr && el->current().is_leader) {
    on_leader(el->current().term);
  }
  return {};
}

struct NetbootModule::Feed {
  std::atomic<bool> running{true};
  boost::asio::steady_timer timer;
  explicit Feed(const boost::asio::any_io_executor& ex) : timer(ex) {}
};

namespace {

// Every `interval` while `feed` runs: one feed_machine_states pass on the worker pool, its
// writes fenced by the leader's term.
boost::asio::awaitable<void> feed_loop(std::shared_ptr<NetbootModule::Feed> feed,
                                       std::shared_ptr<Inventory> fenced, store::Store* store,
                                       WorkerPool* workers, std::chrono::milliseconds interval) {
  log::Logger logger("netboot");
  while (feed->running.load()) {
    feed->timer.expires_after(interval);
    boost::system::error_code ec;
    co_await feed->timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    if (!feed->running.load()) break;
    // By value: a pass that outlives its deadline still owns what it uses. Named: GCC 12
    // destroys the captures of a lambda temporary inside a co_await twice.
    auto pass = [store, fenced] { return feed_machine_states(*store, *fenced); };
    auto r = co_await workers->run(std::move(pass), std::chrono::seconds(30));
    if (!r) logger.warning("machine health feed: {}", r.error().message);
  }
}

}  // namespace

void NetbootModule::on_leader(std::int64_t term) {
  if (dhcp_) dhcp_->on_leader(term);
  stop_feed();
  auto* el = context_ != nullptr ? context_->election() : nullptr;
  if (inventory_ == nullptr || el == nullptr) return;
  InventoryOptions o;
  o.txn = [el](const store::Txn& t) { return el->fenced_txn(t); };
  auto fenced = std::make_shared<Inventory>(*context_->store(), std::move(o));
  feed_ = std::make_shared<Feed>(context_->executor());
  const auto interval = std::chrono::duration_cast<std::chrono::milliseconds>(
      context_->core().cluster.heartbeat_interval);
  boost::asio::co_spawn(
      context_->executor(),
      feed_loop(feed_, std::move(fenced), context_->store(), &context_->workers(), interval),
      boost::asio::detached);
}

void NetbootModule::on_follower() {
  if (dhcp_) dhcp_->on_follower();
  stop_feed();
}

void NetbootModule::stop_feed() {
  if (!feed_) return;
  feed_->running.store(false);
  // Timers are not thread safe: cancel on the executor the loop runs on.
  boost::asio::post(feed_->timer.get_executor(), [f = feed_] { f->timer.cancel(); });
  feed_.reset();
}

void NetbootModule::stop() {
  tftp_metrics_.reset();
  if (tftp_) tftp_->stop();
  if (tftp_io_) tftp_io_->stop();
  if (tftp_thread_.joinable()) tftp_thread_.join();
  tftp_.reset();
  tftp_io_.reset();
  stop_feed();
  if (dhcp_) dhcp_->stop();
  dhcp_.reset();
  boot_metrics_.reset();
  if (boot_) boot_->stop();
  boot_.reset();
  if (assets_) assets_->stop();
  assets_.reset();
  workers_ = nullptr;
  inventory_.reset();
  context_ = nullptr;
  running_ = false;
}

Health NetbootModule::health() const {
  if (!running_) return {HealthState::stopped, ""};
  return {HealthState::healthy, ""};
}

nlohmann::json NetbootModule::effective_config() const {
  return netboot_schema().dump(live_);
}

}  // namespace neco::netboot

NECO_REGISTER_MODULE(netboot, neco::netboot::NetbootModule);
