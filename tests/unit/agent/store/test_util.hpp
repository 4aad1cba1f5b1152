// Helpers shared by the store tests: temp dirs, waiting for a condition, collecting watch events.
#pragma once

#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/store/store.hpp"
#include "tests/support/test_support.hpp"

namespace neco::store::testing {

using neco::testing::TempDir;

// Polls `pred` until it holds or `timeout` passes; returns its last value.
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  return neco::testing::wait_for(pred, timeout);
}

// Records every watch response; thread-safe.
class Collector {
 public:
  WatchCallback callback() {
    return [this](const WatchResponse& r) {
      std::lock_guard lock(mu_);
      responses_.push_back(r);
    };
  }
  std::vector<WatchResponse> responses() const {
    std::lock_guard lock(mu_);
    return responses_;
  }
  std::vector<Event> events() const {
    std::lock_guard lock(mu_);
    std::vector<Event> out;
    for (const auto& r : responses_)
      out.insert(out.end(), r.events.begin(), r.events.end());
    return out;
  }
  size_t event_count() const { return events().size(); }
  bool wait_events(size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    return wait_until([&] { return event_count() >= n; }, timeout);
  }

 private:
  mutable std::mutex mu_;
  std::vector<WatchResponse> responses_;
};

}  // namespace neco::store::testing
