// The controller side of the cluster: the cluster CA (created once by the leader), the cluster
// API (HTTPS, mutual TLS) that nodes join and report to, join tokens, the leader's membership
// loop, and the admin routes behind `neco join-token` and `neco nodes`. Every controller
// serves the API from the shared store; only the membership verdicts and the CA creation are
// leader-only, and those writes are fenced by the leader's term.
#pragma once

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>

#include "agent/config/role_config.hpp"
#include "agent/http/router.hpp"
#include "agent/util/error.hpp"

namespace neco {
class WorkerPool;
namespace metrics {
class Registry;
}
namespace store {
class Store;
class Election;
}  // namespace store
}  // namespace neco

namespace neco::http {
class Server;
}

namespace neco::cluster {

class ClusterController {
 public:
  // Everything passed must outlive the controller. Nothing happens before start().
  ClusterController(boost::asio::io_context& io, WorkerPool& pool, store::Store& store,
                    store::Election& election, metrics::Registry& registry,
                    const config::CoreConfig& core);
  ~ClusterController();
  ClusterController(const ClusterController&) = delete;
  ClusterController& operator=(const ClusterController&) = delete;

  // Starts the cluster thread: CA bootstrap or load, this controller's own server certificate
  // and heartbeat, the cluster API listener once the CA exists, and the membership loop while
  // leader. Returns at once; problems are retried and shown in status().
  Expected<void> start();
  // Leadership changes, from the agent's event loop.
  void on_leader(std::int64_t term);
  void on_follower();
  // /v1/cluster/... on the local admin endpoint.
  void add_admin_routes(http::Router& router);
  // Stops the listener (in-flight requests get `grace`) and the cluster thread.
  boost::asio::awaitable<void> stop(std::chrono::milliseconds grace);

  // For /status: CA fingerprint, API address, readiness.
  nlohmann::json status() const;
  // The bound port of the cluster API (0 until it listens).
  std::uint16_t api_port() const;
  // The cluster API server for its counters (null until it listens); any thread.
  const http::Server* api_server() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace neco::cluster
