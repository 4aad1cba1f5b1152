// The node side of the cluster: join once with a token (pinning the CA by fingerprint), keep
// the identity in <state_dir>/pki, then heartbeat, renew the certificate before it expires
// and long-poll the desired state, failing over across the controllers. Runs on its own
// threads with blocking HTTPS; the event loop only reads status().
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "agent/config/role_config.hpp"
#include "agent/util/error.hpp"

namespace neco::cluster {

class ClusterNode {
 public:
  // `report` builds the heartbeat body's health and modules; it is called on the node's thread.
  ClusterNode(const config::CoreConfig& core, std::function<nlohmann::json()> report);
  ~ClusterNode();
  ClusterNode(const ClusterNode&) = delete;
  ClusterNode& operator=(const ClusterNode&) = delete;

  // Starts joining/heartbeating in the background; returns at once.
  Expected<void> start();
  // Stops the threads; bounded by the request timeouts.
  void stop();

  // Joined or not, which controller answered, last heartbeat, certificate expiry, problems.
  nlohmann::json status() const;
  // True once this node has a certificate and a controller accepted a heartbeat.
  bool ready() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace neco::cluster
