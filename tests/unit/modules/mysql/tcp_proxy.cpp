// The test TCP proxy (see tcp_proxy.hpp): one poll loop over the listener and every forwarded
// connection, with cut/heal applied by that loop between ticks.
#include "tests/unit/modules/mysql/tcp_proxy.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace neco::mysql::testing {

namespace {

constexpr int kTickMs = 20;
constexpr auto kApplyBound = std::chrono::seconds(2);

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

// Closes with an RST instead of a FIN: the peer learns at once that the path is gone.
void reset_close(int fd) {
  if (fd < 0) return;
  const linger hard{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
  ::close(fd);
}

void bound_sends(int fd) {
  const timeval two{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &two, sizeof(two));
}

}  // namespace

Expected<std::unique_ptr<TcpProxy>> TcpProxy::start(std::uint16_t target_port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(Errc::unavailable, fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_in addr = loopback(0);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 64) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    return fail(Errc::unavailable, fmt::format("listening on 127.0.0.1 for a proxy to port {}: {}",
                                               target_port, std::strerror(err)));
  }
  return std::unique_ptr<TcpProxy>(new TcpProxy(fd, ntohs(addr.sin_port), target_port));
}

TcpProxy::TcpProxy(int listener, std::uint16_t port, std::uint16_t target_port)
    : listener_(listener), port_(port), target_port_(target_port) {
  thread_ = std::thread([this] { run(); });
}

TcpProxy::~TcpProxy() {
  {
    const std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  for (const Pair& p : pairs_) {
    reset_close(p.client);
    reset_close(p.upstream);
  }
  ::close(listener_);
}

void TcpProxy::set_mode(Mode mode) {
  std::unique_lock lock(mutex_);
  mode_ = mode;
  const std::uint64_t generation = ++requested_;
  applied_cv_.wait_for(lock, kApplyBound, [&] { return applied_ >= generation || stopping_; });
}

void TcpProxy::cut(Cut mode) {
  set_mode(mode == Cut::reset ? Mode::reset : Mode::blackhole);
}

void TcpProxy::heal() {
  set_mode(Mode::forward);
}

std::uint64_t TcpProxy::accepted() const {
  const std::lock_guard lock(mutex_);
  return accepted_;
}

void TcpProxy::apply(Mode mode) {
  std::vector<Pair> kept;
  for (Pair& p : pairs_) {
    // Cut with reset: everything goes. Healed: what a blackhole held goes (bytes were lost).
    if (mode == Mode::reset || (mode == Mode::forward && p.held)) {
      reset_close(p.client);
      reset_close(p.upstream);
      continue;
    }
    if (mode == Mode::blackhole) p.held = true;
    kept.push_back(p);
  }
  pairs_ = std::move(kept);
}

void TcpProxy::accept_one(Mode mode) {
  const int client = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
  if (client < 0) return;
  {
    const std::lock_guard lock(mutex_);
    ++accepted_;
  }
  if (mode == Mode::reset) {
    reset_close(client);
    return;
  }
  if (mode == Mode::blackhole) {
    pairs_.push_back({client, -1, true});
    return;
  }
  const int upstream = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_in target = loopback(target_port_);
  if (upstream < 0 ||
      ::connect(upstream, reinterpret_cast<const sockaddr*>(&target), sizeof(target)) != 0) {
    reset_close(upstream);
    reset_close(client);  // the target is down: so is the path through the proxy
    return;
  }
  bound_sends(client);
  bound_sends(upstream);
  pairs_.push_back({client, upstream, false});
}

bool TcpProxy::pump(int from, int to) {
  std::array<char, 16384> buffer{};
  const ssize_t n = ::recv(from, buffer.data(), buffer.size(), MSG_DONTWAIT);
  if (n == 0) return false;
  if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  std::size_t sent = 0;
  while (sent < static_cast<std::size_t>(n)) {
    const ssize_t m =
        ::send(to, buffer.data() + sent, static_cast<std::size_t>(n) - sent, MSG_NOSIGNAL);
    if (m < 0 && errno == EINTR) continue;
    if (m <= 0) return false;  // includes the 2 s send timeout
    sent += static_cast<std::size_t>(m);
  }
  return true;
}

void TcpProxy::run() {
  Mode applied_mode = Mode::forward;
  while (true) {
    {
      std::unique_lock lock(mutex_);
      if (stopping_) break;
      if (applied_ < requested_) {
        applied_mode = mode_;
        const std::uint64_t generation = requested_;
        lock.unlock();
        apply(applied_mode);
        lock.lock();
        applied_ = generation;
        applied_cv_.notify_all();
      }
    }
    std::vector<pollfd> fds;
    fds.push_back({listener_, POLLIN, 0});
    std::vector<std::size_t> owner;  // pair index of fds[i + 1] / 2
    for (std::size_t i = 0; i < pairs_.size(); ++i) {
      if (pairs_[i].held) continue;
      fds.push_back({pairs_[i].client, POLLIN, 0});
      fds.push_back({pairs_[i].upstream, POLLIN, 0});
      owner.push_back(i);
    }
    if (::poll(fds.data(), fds.size(), kTickMs) <= 0) continue;
    if ((fds[0].revents & POLLIN) != 0) accept_one(applied_mode);
    std::vector<bool> dead(pairs_.size(), false);
    for (std::size_t k = 0; k < owner.size(); ++k) {
      const Pair& p = pairs_[owner[k]];
      const short from_client = fds[1 + 2 * k].revents;
      const short from_upstream = fds[2 + 2 * k].revents;
      bool ok = true;
      if ((from_client & (POLLIN | POLLHUP | POLLERR)) != 0) ok = pump(p.client, p.upstream);
      if (ok && (from_upstream & (POLLIN | POLLHUP | POLLERR)) != 0)
        ok = pump(p.upstream, p.client);
      dead[owner[k]] = !ok;
    }
    std::vector<Pair> alive;
    for (std::size_t i = 0; i < pairs_.size(); ++i) {
      if (dead[i]) {
        reset_close(pairs_[i].client);
        reset_close(pairs_[i].upstream);
      } else {
        alive.push_back(pairs_[i]);
      }
    }
    pairs_ = std::move(alive);
  }
  const std::lock_guard lock(mutex_);
  applied_ = requested_;
  applied_cv_.notify_all();
}

}  // namespace neco::mysql::testing
