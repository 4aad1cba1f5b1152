// The agent process: one event loop, a worker pool, the metrics registry, the store and
// election (controllers), the admin and metrics listeners, and the modules the role file
// names. run() blocks until SIGTERM/SIGINT or request_stop(); SIGHUP reloads the role file.
#pragma once

#include <utility>  // before Asio (Boost 1.74)

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/runtime/loader.hpp"

namespace neco {

struct AgentOptions {
  bool handle_signals = true;  // false in in-process tests
};

class Agent {
 public:
  Agent(LoadedConfig config, AgentOptions options);
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Starts everything and serves until stopped; returns the process exit code.
  int run();
  // Asks run() to stop gracefully; safe from any thread.
  void request_stop();
  // Re-reads the role file (as SIGHUP does); safe from any thread. The outcome is logged and
  // counted; use reload_now() on the loop to get it as a value.
  void request_reload();
  // True once every listener is up and READY=1 was sent.
  bool ready() const { return ready_.load(); }
  // Bound admin TCP port (after ready), for tests that ask for port 0... or the configured one.
  std::uint16_t admin_port() const { return admin_port_.load(); }
  std::uint16_t metrics_port() const { return metrics_port_.load(); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> ready_{false};
  std::atomic<std::uint16_t> admin_port_{0};
  std::atomic<std::uint16_t> metrics_port_{0};
};

}  // namespace neco
