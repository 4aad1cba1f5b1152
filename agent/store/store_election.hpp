// Leader election through the Store interface, the etcd way: a lease, and a leader key created
// only if absent; its create_revision is the term. Works unchanged on SQLite and etcd.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "agent/store/election.hpp"
#include "agent/store/store.hpp"

namespace neco::store {

struct LeaderLoopOptions {
  std::string prefix = "/neco/election";  // the leader key is <prefix>/leader
  std::string candidate;                  // this candidate's name; unique among candidates
  int64_t ttl_seconds = 5;                // lease TTL: how long a dead leader blocks others
  // A leader key holding our own name is a dead incarnation of us (names are unique): revoke
  // its lease instead of waiting out its TTL after a restart.
  bool reclaim_own_key = true;
};

// Runs campaign -> hold -> step down -> campaign again on its own thread until stop().
// Callbacks run on that thread; keep them short (post to an event loop).
class LeaderLoop final : public Election {
 public:
  // `store` must outlive the loop. on_deposed also runs when stop() resigns the leadership.
  LeaderLoop(Store& store, LeaderLoopOptions options,
             std::function<void(int64_t term)> on_elected = {},
             std::function<void()> on_deposed = {});
  ~LeaderLoop() override;
  LeaderLoop(const LeaderLoop&) = delete;
  LeaderLoop& operator=(const LeaderLoop&) = delete;

  // Starts campaigning on the loop's thread; Errc::invalid_argument for bad options.
  Expected<void> start();

  Expected<TxnResponse> fenced_txn(const Txn& txn) override;
  LeaderInfo current() const override;
  void stop() override;

  // The key the leader holds.
  const std::string& leader_key() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace neco::store
