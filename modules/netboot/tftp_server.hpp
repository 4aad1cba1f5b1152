// A read-only TFTP server (RFC 1350, options of RFC 2347/2348/2349) for PXE firmware: it serves
// the iPXE binaries from a map of names to files and/or from under one root directory, each
// transfer on its own ephemeral UDP port (TID), with retransmission on timeout, a bound on
// concurrent transfers, and counters by reason. WRQ is always refused.
#pragma once

#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/io_context.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "agent/log/log.hpp"
#include "agent/util/error.hpp"
#include "modules/netboot/tftp_packet.hpp"

namespace neco::netboot::tftp {

struct ServerConfig {
  // Address to listen on ("0.0.0.0", "::", or one interface's address). Transfer sockets bind
  // to the same address with an ephemeral port.
  std::string address = "0.0.0.0";
  std::uint16_t port = 69;  // 0 picks a free port (tests); see TftpServer::port()
  // Served names → file paths. Looked up first, by exact name. The operator chose these paths,
  // so symlinks are followed (Debian's /usr/lib/ipxe/ipxe.efi is a link to /boot/ipxe.efi).
  std::map<std::string, std::string> files;
  // If set, other names are served from under this directory: relative paths only, no `..`
  // component, no symlink anywhere on the way (each component opened with O_NOFOLLOW under
  // the directory's fd), regular files only.
  std::string root_dir;
  std::size_t max_transfers = 256;   // concurrent transfers; a request beyond gets ERROR "busy"
  std::uint16_t max_blksize = 1468;  // largest blksize granted: 1500-byte MTU, no fragmentation
  // Wait for an ACK before retransmitting, unless the client negotiated `timeout` (seconds).
  std::chrono::milliseconds timeout{1000};
  // A client's `timeout` above this is not acknowledged (left out of the OACK): with 256 slots
  // and 255-second timeouts, a few spoofed RRQs would otherwise hold the server for minutes.
  std::chrono::seconds max_client_timeout{10};
  unsigned max_retries = 5;  // retransmissions of one packet before the transfer is given up
};

// The files of Debian 12's `ipxe` package under the names DHCP hands out (boot_decision.hpp).
std::map<std::string, std::string> debian_ipxe_files();

// Why a request was answered with an ERROR instead of a transfer.
enum class RefuseReason : std::uint8_t {
  not_found,         // ERROR 1: no such name in `files`, no such file under root_dir
  access_violation,  // ERROR 2: traversal, absolute path, symlink, not a regular file, EACCES
  write_request,     // ERROR 2: WRQ (read-only server)
  bad_mode,          // ERROR 0: netascii or mail (only octet is served)
  bad_request,       // ERROR 4 or 8: malformed RRQ/WRQ (bad options, empty name, ...)
  busy,              // ERROR 0: max_transfers already running
  server_error,      // ERROR 0: the server could not open the file or a socket (EMFILE, EIO)
};
inline constexpr std::size_t kRefuseReasons = 7;
std::string_view to_string(RefuseReason reason) noexcept;

// Why a started transfer ended before its last ACK.
enum class FailReason : std::uint8_t {
  timeout,       // max_retries retransmissions without the expected ACK
  client_error,  // the client sent an ERROR (e.g. 8: it refused our OACK)
  read_error,    // reading the file failed, or it shrank during the transfer
  stopped,       // the server was stopped
};
inline constexpr std::size_t kFailReasons = 4;
std::string_view to_string(FailReason reason) noexcept;

inline constexpr std::size_t kParseReasons = 9;  // values of ParseErrc

// Counters for the metrics the module publishes; relaxed atomics, readable from any thread.
struct ServerStats {
  using Counter = std::atomic<std::uint64_t>;
  Counter requests{0};             // RRQ/WRQ that parsed, answered or not
  Counter duplicate_requests{0};   // RRQ repeated by a client whose transfer is running: ignored
  Counter transfers_started{0};    // first OACK or DATA sent
  Counter transfers_completed{0};  // last DATA acknowledged
  Counter active_transfers{0};     // running now (gauge)
  Counter bytes_sent{0};           // file bytes in DATA packets, retransmissions excluded
  Counter retransmissions{0};      // DATA/OACK sent again after a timeout
  Counter duplicate_acks{0};       // ACKs of the previous block: ignored (no Sorcerer's Apprentice)
  Counter unknown_tid{0};          // packets on a transfer's port from another endpoint: ERROR 5
  std::array<Counter, kRefuseReasons> refused_total{};
  std::array<Counter, kFailReasons> failed_total{};
  std::array<Counter, kParseReasons> malformed_total{};  // by ParseErrc, dropped or refused

  std::uint64_t refused(RefuseReason r) const { return load(refused_total, r); }
  std::uint64_t failed(FailReason r) const { return load(failed_total, r); }
  std::uint64_t malformed(ParseErrc r) const { return load(malformed_total, r); }
  std::uint64_t busy() const { return refused(RefuseReason::busy); }

 private:
  template <std::size_t N, class E>
  static std::uint64_t load(const std::array<Counter, N>& a, E e) {
    const auto i = static_cast<std::size_t>(e);
    return i < N ? a[i].load(std::memory_order_relaxed) : 0;
  }
};

// Thread safety: all work runs on a strand of the io_context, which may be run by any number of
// threads. start() before or while the io_context runs; stop(), port() and stats() from any
// thread. Destroy the server before its io_context.
class TftpServer {
 public:
  TftpServer(boost::asio::io_context& io, ServerConfig config,
             log::Logger logger = log::Logger("netboot.tftp"));
  // Stops (see stop()).
  ~TftpServer();
  TftpServer(const TftpServer&) = delete;
  TftpServer& operator=(const TftpServer&) = delete;

  // Checks the config, opens root_dir and binds the listener; then serves until stop().
  Expected<void> start();
  // Closes the listener and ends every transfer (counted as failed: stopped). Idempotent; the
  // sockets close on the strand, shortly after the call returns.
  void stop();
  // The bound port (useful with config port 0); 0 before start().
  std::uint16_t port() const;
  const ServerStats& stats() const;
  const ServerConfig& config() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace neco::netboot::tftp
