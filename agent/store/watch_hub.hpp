// Delivers watch events on one store-owned dispatcher thread. Writers only enqueue (never wait
// for callbacks), so a slow callback delays other watchers but never blocks the store.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/store/store.hpp"

namespace neco::store {

class WatchHub {
 public:
  struct Watcher;

  WatchHub();
  ~WatchHub();
  WatchHub(const WatchHub&) = delete;
  WatchHub& operator=(const WatchHub&) = delete;

  // Creates a watcher whose replayed history (or final error) is delivered first, then every
  // publish() made after this call. The caller serialises register_watcher() and publish()
  // with its writes, which is what makes replay + live gap-free and duplicate-free.
  std::unique_ptr<Watch> register_watcher(const WatchRequest& request, WatchCallback callback,
                                          std::vector<WatchResponse> replay);
  // Queues the events of one committed revision for every live watcher.
  void publish(int64_t revision, std::vector<Event> events);

 private:
  struct Item {
    std::shared_ptr<Watcher> watcher;   // set: register this watcher after its replay
    std::vector<WatchResponse> replay;  // with watcher
    WatchResponse live;                 // without watcher
  };

  void run();
  void deliver(Watcher& w, const WatchResponse& response);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::vector<std::shared_ptr<Watcher>> active_;  // dispatcher thread only
  std::thread thread_;
};

}  // namespace neco::store
