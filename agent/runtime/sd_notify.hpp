// The systemd notification protocol (sd_notify(3)) without libsystemd: a datagram to the
// socket named by NOTIFY_SOCKET. READY=1, RELOADING=1, STOPPING=1, WATCHDOG=1, STATUS=...
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace neco {

class SystemdNotifier {
 public:
  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID; a notifier without a socket does
  // nothing (the agent was not started by systemd).
  static SystemdNotifier from_environment();

  bool enabled() const { return !socket_path_.empty(); }
  // Sends one state string ("READY=1\nSTATUS=..."); false when it could not be sent.
  bool notify(std::string_view state) const;
  // How often to send WATCHDOG=1: half the interval systemd expects, when it expects any.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }
  // CLOCK_MONOTONIC in microseconds, for "RELOADING=1\nMONOTONIC_USEC=...".
  static std::uint64_t monotonic_usec();

 private:
  std::string socket_path_;  // "@name" means the abstract namespace
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace neco
