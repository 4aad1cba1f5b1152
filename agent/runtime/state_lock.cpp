#include "agent/runtime/state_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace neco {

Expected<StateLock> StateLock::acquire(const std::string& dir) {
  const std::string path = dir + "/agent.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return fail(Errc::unavailable, fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      return fail(Errc::failed_precondition,
                  fmt::format("another neco agent (pid {}) is using state directory '{}'; stop it "
                              "or give this one its own state_dir",
                              n > 0 ? std::string(pid, static_cast<size_t>(n)) : "unknown", dir));
    }
    return fail(Errc::unavailable, fmt::format("cannot lock '{}': {}", path, std::strerror(err)));
  }
  const std::string self = std::to_string(::getpid());
  if (::ftruncate(fd, 0) == 0) {
    const ssize_t written = ::pwrite(fd, self.data(), self.size(), 0);
    (void)written;  // only for the other agent's message; the lock holds without it
  }
  return StateLock(fd);
}

StateLock& StateLock::operator=(StateLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

StateLock::~StateLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

}  // namespace neco
