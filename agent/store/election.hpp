// The Election interface: one leader among the controllers, with a fencing term that every
// leader-only write carries so a deposed leader's writes fail instead of landing.
#pragma once

#include <cstdint>
#include <string>

#include "agent/store/store.hpp"
#include "agent/util/error.hpp"

namespace neco::store {

// A snapshot of what this candidate knows about the leadership.
struct LeaderInfo {
  std::string leader;        // name of the current leader, empty if unknown or none
  int64_t term = 0;          // the leader key's create_revision, 0 if none
  bool is_leader = false;    // whether this candidate holds the leadership right now
  uint64_t transitions = 0;  // how often this candidate gained or lost the leadership
};

class Election {
 public:
  virtual ~Election() = default;

  // Runs `txn` only if we still hold the leadership of our term, atomically; otherwise
  // Errc::failed_precondition and nothing is written.
  virtual Expected<TxnResponse> fenced_txn(const Txn& txn) = 0;
  // What this candidate currently knows; cheap, thread-safe.
  virtual LeaderInfo current() const = 0;
  // Stops campaigning and resigns if leader; bounded, idempotent.
  virtual void stop() = 0;
};

}  // namespace neco::store
