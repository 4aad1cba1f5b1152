// A TCP proxy for tests that cuts a network path on demand: it listens on a free 127.0.0.1 port
// and forwards each accepted connection to a target port on 127.0.0.1, until cut(). The failover
// tests put one between the controller and a MariaDB instance (InstanceSpec::admin_host/
// admin_port) to partition the controller from the primary while replication, which goes
// direct, keeps flowing.
//
// One thread polls the listener and every connection (20 ms ticks), so everything it does is
// bounded: each send may block at most 2 s (SO_SNDTIMEO; the connection is dropped then), and
// the destructor stops the thread and resets every connection. Loopback only.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "agent/util/error.hpp"

namespace neco::mysql::testing {

class TcpProxy {
 public:
  // How a cut path fails.
  enum class Cut {
    // Current connections are reset (RST, SO_LINGER 0) on both sides; new ones are accepted and
    // reset at once, so a client sees its connection refused or lost right away.
    reset,
    // Current connections stop forwarding without a word; new ones are accepted and then get no
    // byte, so a client hangs until its own timeout. heal() resets them.
    blackhole,
  };

  // Listens on 127.0.0.1:0 and forwards to 127.0.0.1:target_port. unavailable when the
  // listener cannot be set up.
  static Expected<std::unique_ptr<TcpProxy>> start(std::uint16_t target_port);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  // The port it listens on.
  std::uint16_t port() const { return port_; }
  // Stops forwarding (see Cut); returns once the proxy thread applied it (bounded: 2 s).
  void cut(Cut mode = Cut::reset);
  // Forwards new connections again; connections held by a blackhole cut are reset (their bytes
  // were lost, the protocol on them cannot continue). Returns once applied (bounded: 2 s).
  void heal();
  // Connections accepted so far (forwarded or not).
  std::uint64_t accepted() const;

 private:
  struct Pair {
    int client = -1;
    int upstream = -1;  // -1 while blackholed from the start
    bool held = false;  // not forwarded (blackhole)
  };
  enum class Mode { forward, reset, blackhole };

  TcpProxy(int listener, std::uint16_t port, std::uint16_t target_port);
  void run();
  void apply(Mode mode);
  void accept_one(Mode mode);
  // Moves what is readable on `from` to `to`; false when the pair must be closed.
  static bool pump(int from, int to);
  void set_mode(Mode mode);

  const int listener_;
  const std::uint16_t port_;
  const std::uint16_t target_port_;
  std::vector<Pair> pairs_;  // the proxy thread's only
  mutable std::mutex mutex_;
  std::condition_variable applied_cv_;
  Mode mode_ = Mode::forward;
  std::uint64_t requested_ = 0;  // generation of the last mode change
  std::uint64_t applied_ = 0;    // generation the thread has applied
  std::uint64_t accepted_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace neco::mysql::testing
