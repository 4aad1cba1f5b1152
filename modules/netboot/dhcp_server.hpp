// The DHCPv4 server: a UDP socket on port 67, the engine (dhcp_engine.hpp) and the lease table
// persisted in the store.
//
// Threads: one I/O thread owns the socket and the engine (receives in batches with recvmmsg,
// decides, sends); one commit thread writes lease changes to the store. Durability without a
// consensus write per packet is a group commit: while one store transaction runs, the changes
// of every packet decided meanwhile collect into the next one, and an ACK leaves only after the
// transaction holding its lease has committed, fenced by the leader's term. A deposed leader's
// commit fails, so it never sends an ACK its successor does not know about; the successor
// loads the table from the store before it answers. OFFERs promise nothing and are not
// persisted; RELEASE/DECLINE are written in the background.
//
// Only the leader answers: before on_leader() and after on_follower() every packet is dropped
// and counted (reason "not_leader").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "agent/util/error.hpp"
#include "modules/netboot/dhcp_engine.hpp"

namespace neco {
namespace metrics {
class Registry;
}
namespace store {
class Election;
class Store;
}  // namespace store
}  // namespace neco

namespace neco::netboot {

struct DhcpServerOptions {
  std::string address = "0.0.0.0";
  std::uint16_t port = 67;
  std::string interface;  // SO_BINDTODEVICE when set
  // Lease changes per store transaction (etcd refuses more than 128 operations in one).
  std::size_t max_txn_ops = 100;
};

// The store key of an address's lease, and the codec of its value (JSON).
std::string lease_key(std::uint32_t address);
inline constexpr std::string_view kLeasePrefix = "netboot/leases/";
std::string encode_lease(const Lease& lease);
Expected<Lease> decode_lease(std::string_view key, std::string_view value);

class DhcpServer {
 public:
  DhcpServer(EngineConfig engine, DhcpServerOptions options, store::Store& store,
             store::Election* election, metrics::Registry& registry);
  ~DhcpServer();
  DhcpServer(const DhcpServer&) = delete;
  DhcpServer& operator=(const DhcpServer&) = delete;

  // Binds the socket and starts the threads; answers nothing until on_leader().
  Expected<void> start();
  // Loads the lease table from the store, then answers (asynchronously; returns at once).
  void on_leader(std::int64_t term);
  // Stops answering at once; replies waiting for a commit are dropped.
  void on_follower();
  void stop();

  bool answering() const;
  std::uint16_t bound_port() const;
  // A copy of the lease table (for the admin API), sorted by address.
  std::vector<Lease> leases() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace neco::netboot
