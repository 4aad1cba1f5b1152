#include "modules/netboot/dhcp_server.hpp"

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "agent/log/log.hpp"
#include "agent/metrics/registry.hpp"
#include "agent/store/election.hpp"
#include "agent/store/store.hpp"
#include "agent/util/text.hpp"

namespace neco::netboot {

namespace {

const log::Logger& logger() {
  static const log::Logger l("netboot");
  return l;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr std::size_t kBatch = 64;        // datagrams per recvmmsg
constexpr std::size_t kMaxPacket = 1500;  // larger datagrams are truncated, then refused

}  // namespace

std::string lease_key(std::uint32_t address) {
  return std::string(kLeasePrefix) + to_string(to_ipv4(address));
}

std::string encode_lease(const Lease& l) {
  return nlohmann::json({{"client", to_hex(l.client)},
                         {"hw", l.hw},
                         {"hostname", l.hostname},
                         {"state", to_string(l.state)},
                         {"expires", l.expires}})
      .dump();
}

Expected<Lease> decode_lease(std::string_view key, std::string_view value) {
  if (!key.starts_with(kLeasePrefix)) {
    return fail(Errc::invalid_argument,
                fmt::format("lease key \"{}\" outside {}", key, kLeasePrefix));
  }
  auto ip = parse_ipv4(key.substr(kLeasePrefix.size()));
  auto j = nlohmann::json::parse(value, nullptr, false);
  if (!ip || !j.is_object() || !j.contains("client") || !j["client"].is_string() ||
      !j.contains("state") || !j["state"].is_string() || !j.contains("expires") ||
      !j["expires"].is_number_integer()) {
    return fail(Errc::invalid_argument, fmt::format("malformed lease record \"{}\"", key));
  }
  auto client = from_hex(j["client"].get<std::string>());
  auto state = parse_lease_state(j["state"].get<std::string>());
  if (!client || !state) {
    return fail(Errc::invalid_argument, fmt::format("malformed lease record \"{}\"", key));
  }
  Lease l;
  l.address = to_u32(*ip);
  l.client = std::move(*client);
  l.hw = j.value("hw", std::string());
  l.hostname = j.value("hostname", std::string());
  l.state = *state;
  l.expires = j["expires"].get<std::int64_t>();
  return l;
}

struct DhcpServer::Impl {
  Impl(EngineConfig e, DhcpServerOptions o, store::Store& s, store::Election* el,
       metrics::Registry& r)
      : engine(std::move(e)), options(std::move(o)), store(s), election(el), registry(r) {}

  DhcpEngine engine;  // I/O thread only (and leases() under engine_mu)
  DhcpServerOptions options;
  store::Store& store;
  store::Election* election;
  metrics::Registry& registry;

  int sock = -1;
  int wake = -1;  // eventfd: commit results, leadership changes, stop
  std::uint16_t port = 0;
  std::thread io_thread;
  std::thread commit_thread;
  mutable std::mutex engine_mu;  // held while the I/O thread runs the engine

  // Leadership: `generation` counts changes; the I/O thread answers only while `active` and
  // only for the generation whose table it loaded.
  std::atomic<bool> active{false};
  std::atomic<std::uint64_t> generation{0};
  std::atomic<bool> stopping{false};

  // Commit thread mailbox.
  std::mutex mu;
  std::condition_variable cv;
  std::map<std::uint32_t, Lease> to_commit;  // next batch, latest change per address wins
  std::uint64_t next_seq = 1;                // sequence of the batch collecting now
  std::uint64_t batch_generation = 0;        // the leadership generation to_commit belongs to
  std::deque<std::pair<std::uint64_t, bool>> results;  // (batch, committed) for the I/O thread
  bool commit_busy = false;
  std::uint64_t load_generation = 0;  // a table to load for this generation (0: none)
  std::optional<std::pair<std::uint64_t, std::vector<Lease>>> loaded;  // for the I/O thread

  struct Held {
    std::uint64_t seq = 0;
    std::uint64_t generation = 0;
    Bytes bytes;
    Destination to;
    Ipv4 local{};
    int ifindex = 0;
    std::string_view type;
  };
  std::deque<Held> held;  // I/O thread only

  // Metrics.
  metrics::CounterFamily* received = nullptr;
  metrics::CounterFamily* sent = nullptr;
  metrics::CounterFamily* dropped = nullptr;
  metrics::Counter* commits = nullptr;
  metrics::Counter* commit_failures = nullptr;
  metrics::HistogramFamily* commit_seconds = nullptr;
  metrics::CollectorHandle lease_gauge;

  void declare_metrics() {
    received = &registry.counter({.name = "neco_netboot_dhcp_received_total",
                                  .help = "DHCP messages received, by message type",
                                  .labels = {"type"}});
    sent = &registry.counter({.name = "neco_netboot_dhcp_sent_total",
                              .help = "DHCP replies sent, by message type",
                              .labels = {"type"}});
    dropped = &registry.counter(
        {.name = "neco_netboot_dhcp_dropped_total",
         .help = "DHCP datagrams not answered, by reason (malformed ones by parse error)",
         .labels = {"reason"}});
    commits = &registry
                   .counter({.name = "neco_netboot_dhcp_lease_commits_total",
                             .help = "Store transactions that persisted lease changes"})
                   .with();
    commit_failures = &registry
                           .counter({.name = "neco_netboot_dhcp_lease_commit_failures_total",
                                     .help = "Lease transactions refused or failed (replies "
                                             "waiting for them were dropped)"})
                           .with();
    commit_seconds = &registry.histogram({.name = "neco_netboot_dhcp_lease_commit_seconds",
                                          .help = "Duration of one lease group commit",
                                          .unit = "seconds",
                                          .buckets = metrics::exponential_buckets(0.0001, 4, 8)});
    lease_gauge = registry.add_collector([this](std::vector<metrics::MetricFamily>& out) {
      std::array<std::size_t, 4> counts{};
      const auto now = unix_now();
      std::size_t expired = 0;
      {
        std::lock_guard lock(engine_mu);
        for (const auto& l : engine.leases().all()) {
          if (l.holds(now) || l.state == LeaseState::released) {
            ++counts[static_cast<std::size_t>(l.state)];
          } else {
            ++expired;
          }
        }
      }
      auto& f = out.emplace_back();
      f.name = "neco_netboot_dhcp_leases";
      f.help = "Leases in the table by state (expired: ended, address reusable)";
      f.type = metrics::MetricType::gauge;
      for (auto st :
           {LeaseState::offered, LeaseState::bound, LeaseState::released, LeaseState::declined}) {
        f.add(static_cast<double>(counts[static_cast<std::size_t>(st)]),
              {{"state", to_string(st)}});
      }
      f.add(static_cast<double>(expired), {{"state", "expired"}});
    });
  }

  void drop(std::string_view reason) { dropped->with({reason}).inc(); }

  void poke() const {
    const std::uint64_t one = 1;
    (void)!::write(wake, &one, sizeof one);
  }

  Expected<void> open_socket() {
    sock = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0) return fail(Errc::internal, fmt::format("socket: {}", std::strerror(errno)));
    const int on = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    ::setsockopt(sock, SOL_SOCKET, SO_BROADCAST, &on, sizeof on);
    ::setsockopt(sock, IPPROTO_IP, IP_PKTINFO, &on, sizeof on);
    const int rcvbuf = 4 << 20;  // bursts of a rack powering on
    ::setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (!options.interface.empty() &&
        ::setsockopt(sock, SOL_SOCKET, SO_BINDTODEVICE, options.interface.c_str(),
                     static_cast<socklen_t>(options.interface.size())) != 0) {
      return fail(Errc::invalid_argument, fmt::format("DHCP interface \"{}\": {}",
                                                      options.interface, std::strerror(errno)));
    }
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(options.port);
    if (::inet_pton(AF_INET, options.address.c_str(), &a.sin_addr) != 1) {
      return fail(Errc::invalid_argument,
                  fmt::format("DHCP address \"{}\" is not an IPv4 address", options.address));
    }
    if (::bind(sock, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      return fail(Errc::unavailable, fmt::format("DHCP: bind {}:{}: {}", options.address,
                                                 options.port, std::strerror(errno)));
    }
    socklen_t len = sizeof a;
    ::getsockname(sock, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    wake = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake < 0) return fail(Errc::internal, fmt::format("eventfd: {}", std::strerror(errno)));
    return {};
  }

  void send(const Bytes& bytes, const Destination& to, const Ipv4& local, int ifindex,
            std::string_view type) {
    sockaddr_in dst{};
    dst.sin_family = AF_INET;
    dst.sin_port = htons(to.port);
    dst.sin_addr.s_addr = to.broadcast ? INADDR_BROADCAST : htonl(to_u32(to.address));
    iovec iov{const_cast<std::uint8_t*>(bytes.data()), bytes.size()};
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(in_pktinfo))> control{};
    msghdr msg{};
    msg.msg_name = &dst;
    msg.msg_namelen = sizeof dst;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = IPPROTO_IP;
    c->cmsg_type = IP_PKTINFO;
    c->cmsg_len = CMSG_LEN(sizeof(in_pktinfo));
    in_pktinfo info{};
    // A broadcast leaves by the interface the request came in on; the source is our address
    // there, which is also the server identifier the client saw.
    info.ipi_ifindex = to.broadcast ? ifindex : 0;
    info.ipi_spec_dst.s_addr = htonl(to_u32(local));
    std::memcpy(CMSG_DATA(c), &info, sizeof info);
    if (::sendmsg(sock, &msg, 0) < 0) {
      drop("send_failed");
      logger().debug("DHCP send to {}:{} failed: {}",
                     to.broadcast ? "255.255.255.255" : to_string(to.address), to.port,
                     std::strerror(errno));
      return;
    }
    sent->with({type}).inc();
  }

  // One datagram: parse, decide, reply now or after the commit.
  void handle(const std::uint8_t* data, std::size_t size, bool truncated, const Arrival& arrival,
              int ifindex, std::int64_t now, std::uint64_t gen) {
    if (truncated) {
      drop("too_long");
      return;
    }
    auto parsed = parse(ByteView(data, size));
    if (!parsed) {
      drop(to_string(parsed.error().reason));
      return;
    }
    const Packet& p = *parsed;
    received->with({to_string(*p.message_type())}).inc();
    if (!active.load(std::memory_order_acquire)) {
      drop("not_leader");
      return;
    }
    Outcome o = engine.handle(p, arrival, now);
    if (!o.dropped.empty()) drop(o.dropped);
    if (!o.event.empty()) logger().debug("DHCP {}", o.event);
    std::uint64_t seq = 0;
    if (!o.changes.empty()) {
      std::lock_guard lock(mu);
      if (batch_generation != gen) {
        // Changes decided under an earlier leadership must never be written under a later
        // one: another leader may have handed those addresses out in between.
        to_commit.clear();
        batch_generation = gen;
      }
      for (auto& l : o.changes)
        to_commit[l.address] = std::move(l);
      seq = next_seq;
    }
    if (!o.reply) return;
    const std::string_view type = to_string(*o.reply->message_type());
    Bytes bytes = serialize(*o.reply);
    if (o.durable) {
      held.push_back({seq, gen, std::move(bytes), o.to, arrival.local, ifindex, type});
    } else {
      send(bytes, o.to, arrival.local, ifindex, type);
    }
  }

  // Hands the collected changes to the commit thread when it is idle.
  void kick_commit() {
    std::lock_guard lock(mu);
    if (!to_commit.empty() && !commit_busy) cv.notify_one();
  }

  // Replies whose batch has committed go out; those of a failed batch or an old generation
  // are dropped. Batches complete in order, so `held` (in batch order) drains from the front.
  void release_held(std::uint64_t gen) {
    std::deque<std::pair<std::uint64_t, bool>> done;
    {
      std::lock_guard lock(mu);
      done.swap(results);
    }
    const bool answering = active.load(std::memory_order_acquire);
    for (const auto& [seq, ok] : done) {
      while (!held.empty() && held.front().seq <= seq) {
        Held& h = held.front();
        if (!ok) {
          drop("commit_failed");
        } else if (!answering || h.generation != gen) {
          drop("not_leader");
        } else {
          send(h.bytes, h.to, h.local, h.ifindex, h.type);
        }
        held.pop_front();
      }
    }
    if (!answering) {
      for (std::size_t i = 0; i < held.size(); ++i)
        drop("not_leader");
      held.clear();
    }
  }

  void io_loop() {
    std::array<std::array<std::uint8_t, kMaxPacket>, kBatch> bufs{};
    std::array<iovec, kBatch> iovs{};
    std::array<mmsghdr, kBatch> msgs{};
    std::array<sockaddr_in, kBatch> peers{};
    using Control = std::array<char, CMSG_SPACE(sizeof(in_pktinfo)) + 64>;
    std::array<Control, kBatch> controls{};
    std::uint64_t gen = 0;  // the generation whose table is loaded
    pollfd fds[2] = {{sock, POLLIN, 0}, {wake, POLLIN, 0}};
    while (!stopping.load()) {
      if (::poll(fds, 2, 1000) < 0 && errno != EINTR) break;
      if ((fds[1].revents & POLLIN) != 0) {
        std::uint64_t n = 0;
        (void)!::read(wake, &n, sizeof n);
        std::optional<std::pair<std::uint64_t, std::vector<Lease>>> table;
        {
          std::lock_guard lock(mu);
          table.swap(loaded);
        }
        if (table && table->first == generation.load()) {
          std::lock_guard lock(engine_mu);
          engine.leases().clear();
          for (const auto& l : table->second) {
            if (engine.leases().subnet_for(l.address) != nullptr) engine.leases().put(l);
          }
          gen = table->first;
          active.store(true, std::memory_order_release);
          logger().info("DHCP answering as leader ({} leases loaded)", table->second.size());
        }
        release_held(gen);
      }
      if ((fds[0].revents & POLLIN) == 0) {
        kick_commit();
        continue;
      }
      for (;;) {
        for (std::size_t i = 0; i < kBatch; ++i) {
          iovs[i] = {bufs[i].data(), bufs[i].size()};
          msgs[i].msg_hdr = {};
          msgs[i].msg_hdr.msg_name = &peers[i];
          msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_in);
          msgs[i].msg_hdr.msg_iov = &iovs[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
          msgs[i].msg_hdr.msg_control = controls[i].data();
          msgs[i].msg_hdr.msg_controllen = controls[i].size();
        }
        const int n = ::recvmmsg(sock, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
        if (n <= 0) break;
        const auto now = unix_now();
        {
          std::lock_guard lock(engine_mu);
          for (int i = 0; i < n; ++i) {
            Arrival arrival;
            int ifindex = 0;
            for (cmsghdr* c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c != nullptr;
                 c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
              if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                in_pktinfo info{};
                std::memcpy(&info, CMSG_DATA(c), sizeof info);
                arrival.local = to_ipv4(ntohl(info.ipi_spec_dst.s_addr));
                arrival.unicast = info.ipi_addr.s_addr != INADDR_BROADCAST;
                ifindex = info.ipi_ifindex;
              }
            }
            handle(bufs[i].data(), msgs[i].msg_len, (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0,
                   arrival, ifindex, now, gen);
          }
        }
        if (n < static_cast<int>(kBatch)) break;
      }
      kick_commit();
    }
  }

  // Writes `batch` in transactions of at most max_txn_ops puts, each fenced by our term.
  // A batch of an earlier leadership generation is refused before each transaction.
  Expected<void> write_batch(const std::map<std::uint32_t, Lease>& batch, std::uint64_t gen) {
    auto it = batch.begin();
    while (it != batch.end()) {
      if (gen != generation.load() || !active.load()) {
        return fail(Errc::failed_precondition,
                    "leadership changed since these leases were decided");
      }
      store::Txn t;
      for (std::size_t k = 0; k < options.max_txn_ops && it != batch.end(); ++k, ++it) {
        t.success.push_back(store::Op::make_put(lease_key(it->first), encode_lease(it->second)));
      }
      auto r = election != nullptr ? election->fenced_txn(t) : store.txn(t);
      if (!r) return std::unexpected(r.error());
    }
    return {};
  }

  Expected<std::vector<Lease>> load_table() {
    auto r = store.range({store::KeyRange::prefix(std::string(kLeasePrefix)), 0});
    if (!r) return std::unexpected(r.error());
    std::vector<Lease> out;
    out.reserve(r->kvs.size());
    for (const auto& kv : r->kvs) {
      auto l = decode_lease(kv.key, kv.value);
      if (!l) {
        logger().warning("Skipping lease record: {}", l.error().message);
        continue;
      }
      out.push_back(std::move(*l));
    }
    return out;
  }

  void commit_loop() {
    std::unique_lock lock(mu);
    while (!stopping.load()) {
      cv.wait(lock, [&] { return stopping.load() || !to_commit.empty() || load_generation != 0; });
      if (stopping.load()) break;
      if (load_generation != 0) {
        const std::uint64_t gen = std::exchange(load_generation, 0);
        lock.unlock();
        auto table = load_table();
        lock.lock();
        if (!table) {
          logger().error("DHCP cannot load the lease table; not answering: {}",
                         table.error().message);
          continue;
        }
        loaded.emplace(gen, std::move(*table));
        poke();
        continue;
      }
      std::map<std::uint32_t, Lease> batch;
      batch.swap(to_commit);
      const std::uint64_t seq = next_seq++;
      const std::uint64_t gen = batch_generation;
      commit_busy = true;
      lock.unlock();
      const auto t0 = std::chrono::steady_clock::now();
      auto ok = write_batch(batch, gen);
      commit_seconds->with().observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      lock.lock();
      commit_busy = false;
      results.emplace_back(seq, ok.has_value());
      if (ok) {
        commits->inc();
      } else {
        commit_failures->inc();
        logger().warning("DHCP lease commit of {} changes failed; their ACKs are dropped: {}",
                         batch.size(), ok.error().message);
      }
      poke();
    }
  }
};

DhcpServer::DhcpServer(EngineConfig engine, DhcpServerOptions options, store::Store& store,
                       store::Election* election, metrics::Registry& registry)
    : impl_(std::make_unique<Impl>(std::move(engine), std::move(options), store, election,
                                   registry)) {}

DhcpServer::~DhcpServer() {
  stop();
}

Expected<void> DhcpServer::start() {
  impl_->declare_metrics();
  if (auto ok = impl_->open_socket(); !ok) {
    stop();
    return ok;
  }
  impl_->io_thread = std::thread([this] { impl_->io_loop(); });
  impl_->commit_thread = std::thread([this] { impl_->commit_loop(); });
  logger().info("DHCP listening on {}:{} ({} subnets)", impl_->options.address, impl_->port,
                impl_->engine.config().subnets.size());
  return {};
}

void DhcpServer::on_leader(std::int64_t term) {
  const std::uint64_t gen = ++impl_->generation;
  impl_->active.store(false, std::memory_order_release);
  {
    std::lock_guard lock(impl_->mu);
    impl_->load_generation = gen;
  }
  impl_->cv.notify_one();
  logger().info("DHCP: leader of term {}: loading leases", term);
}

void DhcpServer::on_follower() {
  ++impl_->generation;
  impl_->active.store(false, std::memory_order_release);
  if (impl_->wake >= 0) impl_->poke();
}

void DhcpServer::stop() {
  if (!impl_) return;
  impl_->stopping.store(true);
  impl_->active.store(false);
  impl_->cv.notify_all();
  if (impl_->wake >= 0) impl_->poke();
  if (impl_->io_thread.joinable()) impl_->io_thread.join();
  if (impl_->commit_thread.joinable()) impl_->commit_thread.join();
  if (impl_->sock >= 0) ::close(std::exchange(impl_->sock, -1));
  if (impl_->wake >= 0) ::close(std::exchange(impl_->wake, -1));
  impl_->lease_gauge.reset();
}

bool DhcpServer::answering() const {
  return impl_->active.load();
}

std::uint16_t DhcpServer::bound_port() const {
  return impl_->port;
}

std::vector<Lease> DhcpServer::leases() const {
  std::lock_guard lock(impl_->engine_mu);
  return impl_->engine.leases().all();
}

}  // namespace neco::netboot
