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

namespace neco::store::testing {

// A fresh directory under $TMPDIR, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    auto base = std::filesystem::temp_directory_path() / "neco-store-XXXXXX";
    std::string tmpl = base.string();
    if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Polls `pred` until it holds or `timeout` passes; returns its last value.
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return pred();
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
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
