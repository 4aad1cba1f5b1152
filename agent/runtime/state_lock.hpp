// An exclusive lock on the state directory, so two agents never share one store file or one
// module state directory (two processes writing one SQLite store would each believe they are
// the only controller).
#pragma once

#include <string>

#include "agent/util/error.hpp"

namespace neco {

class StateLock {
 public:
  // Takes <dir>/agent.lock (flock, released by the kernel when the process dies) and writes
  // our pid into it; failed_precondition names the holder's pid when another agent has it.
  static Expected<StateLock> acquire(const std::string& dir);

  StateLock(StateLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  StateLock& operator=(StateLock&& other) noexcept;
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;
  ~StateLock();

 private:
  explicit StateLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace neco
