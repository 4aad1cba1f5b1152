// Helpers for the TFTP tests: packets written byte by byte, a plain POSIX UDP client on
// 127.0.0.1 with receive timeouts, temp directories and files with random content, and a server
// on 127.0.0.1 port 0 with its io_context on a background thread.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "modules/netboot/tftp_packet.hpp"
#include "modules/netboot/tftp_server.hpp"

namespace neco::netboot::tftp::testing {

// Big-endian 16-bit value.
inline Bytes u16(std::uint16_t v) {
  return {static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)};
}

// A string and its NUL.
inline Bytes z(std::string_view s) {
  Bytes b(s.begin(), s.end());
  b.push_back(0);
  return b;
}

// Raw bytes of a string, no NUL added.
inline Bytes raw(std::string_view s) {
  return Bytes(s.begin(), s.end());
}

inline Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts)
    out.insert(out.end(), p.begin(), p.end());
  return out;
}

// RRQ (or WRQ) for `file` in `mode` with name/value options.
inline Bytes request(
    std::string_view file, std::string_view mode = "octet",
    std::initializer_list<std::pair<std::string_view, std::string_view>> options = {},
    std::uint16_t opcode = 1) {
  Bytes b = cat({u16(opcode), z(file), z(mode)});
  for (const auto& [name, value] : options) {
    b = cat({b, z(name), z(value)});
  }
  return b;
}

inline Bytes ack(std::uint16_t block) {
  return cat({u16(4), u16(block)});
}

// A temp directory removed with its content at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string templ =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/neco-tftp-XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

inline Bytes random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes b(n);
  for (auto& x : b)
    x = static_cast<std::uint8_t>(rng());
  return b;
}

inline void write_file(const std::filesystem::path& p, const Bytes& content) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(content.data()),
            static_cast<std::streamsize>(content.size()));
  REQUIRE(out.good());
}

inline Bytes read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), {});
}

// A UDP socket on 127.0.0.1 with an ephemeral port.
class UdpClient {
 public:
  struct Datagram {
    Bytes bytes;
    std::uint16_t port = 0;  // the sender's port
  };

  UdpClient() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a = loopback(0);
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  }
  ~UdpClient() { ::close(fd_); }
  UdpClient(const UdpClient&) = delete;
  UdpClient& operator=(const UdpClient&) = delete;

  void send(std::uint16_t port, const Bytes& bytes) const {
    sockaddr_in a = loopback(port);
    REQUIRE(::sendto(fd_, bytes.data(), bytes.size(), 0, reinterpret_cast<const sockaddr*>(&a),
                     sizeof a) == static_cast<ssize_t>(bytes.size()));
  }

  // The next datagram, or nullopt after `timeout`.
  std::optional<Datagram> receive(
      std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return std::nullopt;
    Bytes buf(65536);
    sockaddr_in from{};
    socklen_t len = sizeof from;
    const ssize_t n =
        ::recvfrom(fd_, buf.data(), buf.size(), 0, reinterpret_cast<sockaddr*>(&from), &len);
    REQUIRE(n >= 0);
    buf.resize(static_cast<std::size_t>(n));
    return Datagram{std::move(buf), ntohs(from.sin_port)};
  }

  // Like receive(), and requires a datagram that parses.
  std::pair<Packet, std::uint16_t> expect(
      std::chrono::milliseconds timeout = std::chrono::seconds(5)) const {
    auto d = receive(timeout);
    REQUIRE(d.has_value());
    auto p = parse(d->bytes);
    REQUIRE(p.has_value());
    return {std::move(*p), d->port};
  }

 private:
  static sockaddr_in loopback(std::uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
  }
  int fd_ = -1;
};

// A started server on 127.0.0.1, port 0, its io_context run by a background thread.
class ServerFixture {
 public:
  explicit ServerFixture(ServerConfig config) {
    config.address = "127.0.0.1";
    config.port = 0;
    server_.emplace(io_, std::move(config));
    auto started = server_->start();
    INFO((started ? std::string() : started.error().message));
    REQUIRE(started.has_value());
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ServerFixture() {
    server_->stop();
    work_.reset();
    thread_.join();
    server_.reset();
  }
  ServerFixture(const ServerFixture&) = delete;
  ServerFixture& operator=(const ServerFixture&) = delete;

  std::uint16_t port() const { return server_->port(); }
  const ServerStats& stats() const { return server_->stats(); }
  TftpServer& server() { return *server_; }

 private:
  boost::asio::io_context io_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_{
      boost::asio::make_work_guard(io_)};
  std::optional<TftpServer> server_;
  std::thread thread_;
};

// Polls `done` until it holds or `timeout` passes.
inline bool wait_for(const std::function<bool()>& done,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace neco::netboot::tftp::testing
