// The etcd Store: etcd >= 3.3 (nested txns) through its v3 JSON gateway over libcurl, with the
// same semantics as SqliteStore (one conformance suite checks both).
//
// Failover: requests go to the endpoint that last answered; a connect failure (refused, DNS,
// connect timeout, TLS handshake) moves on to the next one. A write that was sent but got no
// answer is never retried: its outcome is unknown, and the caller is told so.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "agent/store/store.hpp"

namespace neco::store {

struct EtcdOptions {
  // Client URLs, "http://host:port" or "https://host:port"; tried in this order.
  std::vector<std::string> endpoints;
  // TLS: the CA that signed etcd's certificate (system CAs when empty), and the client
  // certificate and key for --client-cert-auth (optional; the key may sit in cert_file).
  std::string ca_file, cert_file, key_file;
  // Bound on a whole unary request, failover included.
  std::chrono::milliseconds request_timeout{5000};
  // Bound on TCP connect plus TLS handshake to one endpoint.
  std::chrono::milliseconds dial_timeout{2000};
  // A watch stream silent for this long is checked by asking its endpoint for its status; if
  // that gets no answer (a SIGSTOPped or hung member, whose kernel still ACKs TCP keepalives)
  // or the member has no leader, the watch resumes on another endpoint. Operators should run
  // etcd with --experimental-watch-progress-notify-interval well below this (e.g. 5s with the
  // default 10s here; etcd 3.4 defaults to 10m): the notifications keep quiet streams busy and
  // advance the revision a quiet watch resumes from, so a reconnect after a compaction does
  // not end it with Errc::compacted needlessly.
  std::chrono::milliseconds watch_idle_timeout{10000};
};

class EtcdStore final : public Store {
 public:
  // Validates `options` and checks that an endpoint answers (its status); errors name every
  // endpoint tried.
  static Expected<std::unique_ptr<EtcdStore>> open(EtcdOptions options);
  ~EtcdStore() override;
  EtcdStore(const EtcdStore&) = delete;
  EtcdStore& operator=(const EtcdStore&) = delete;

  Expected<RangeResponse> range(const RangeRequest& request) override;
  Expected<PutResponse> put(const PutRequest& request) override;
  Expected<DeleteResponse> delete_range(const DeleteRequest& request) override;
  Expected<TxnResponse> txn(const Txn& txn) override;
  // Each watch runs its own stream and thread; callbacks run on that thread.
  Expected<std::unique_ptr<Watch>> watch(const WatchRequest& request,
                                         WatchCallback callback) override;
  Expected<void> compact(int64_t revision) override;
  Expected<LeaseGrant> grant(int64_t ttl_seconds, int64_t id = 0) override;
  Expected<int64_t> keep_alive(int64_t id) override;
  Expected<int64_t> revoke(int64_t id) override;
  Expected<LeaseTimeToLive> time_to_live(int64_t id) override;
  void set_stats_hook(StatsHook hook) override;

  // The endpoint the next request goes to first (the one that answered last).
  std::string current_endpoint() const;

  struct Core;

 private:
  explicit EtcdStore(std::shared_ptr<Core> core);
  std::shared_ptr<Core> core_;  // shared with watch threads, which may outlive the store
};

}  // namespace neco::store
