#include "modules/netboot/tftp_server.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <expected>
#include <optional>
#include <unordered_set>
#include <vector>

namespace neco::netboot::tftp {

namespace asio = boost::asio;
using boost::system::error_code;
using udp = asio::ip::udp;
using Clock = std::chrono::steady_clock;

static_assert(kParseReasons == static_cast<std::size_t>(ParseErrc::bad_option_value) + 1,
              "kParseReasons must count every ParseErrc");

namespace {

// Owns a file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string endpoint_string(const udp::endpoint& ep) {
  const auto addr = ep.address();
  if (addr.is_v6()) return fmt::format("[{}]:{}", addr.to_string(), ep.port());
  return fmt::format("{}:{}", addr.to_string(), ep.port());
}

// A file name for logs: quoted, control bytes escaped, at most 128 characters.
std::string printable(std::string_view s) {
  std::string out = "'";
  for (std::size_t i = 0; i < s.size() && i < 128; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c >= 0x7f || c == '\'' || c == '\\') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > 128) out += "...";
  out += "'";
  return out;
}

struct Refusal {
  RefuseReason reason = RefuseReason::not_found;
  ErrorCode code = ErrorCode::not_defined;
  std::string message;  // sent to the client
};

struct OpenFile {
  UniqueFd fd;
  std::uint64_t size = 0;
};

std::unexpected<Refusal> refuse(RefuseReason reason, ErrorCode code, std::string message) {
  return std::unexpected(Refusal{reason, code, std::move(message)});
}

// The refusal for an errno of open/stat; `what` names the file for the message.
std::unexpected<Refusal> refusal_for_errno(int err, std::string_view what) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return refuse(RefuseReason::not_found, ErrorCode::file_not_found, "file not found");
    case ELOOP:
      return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                    fmt::format("{} is a symbolic link", what));
    case EACCES:
    case EPERM:
      return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                    "permission denied");
    default:
      return refuse(RefuseReason::server_error, ErrorCode::not_defined,
                    fmt::format("cannot open the file: {}", std::strerror(err)));
  }
}

// Checks the opened fd is a regular file and takes its size.
std::expected<OpenFile, Refusal> finish_open(UniqueFd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return refusal_for_errno(errno, "the file");
  if (!S_ISREG(st.st_mode)) {
    return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                  "not a regular file");
  }
  return OpenFile{std::move(fd), static_cast<std::uint64_t>(st.st_size)};
}

// O_NONBLOCK: never wait on a FIFO that slipped past the type checks.
constexpr int kOpenFlags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;

// Opens `name` under the directory `root_fd`: relative, no `..`, no symlink on any component.
std::expected<OpenFile, Refusal> open_under(int root_fd, std::string_view name) {
  if (name.find('\0') != std::string_view::npos) {
    return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                  "file name contains NUL");
  }
  if (name.front() == '/') {
    return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                  "absolute paths are not served");
  }
  std::vector<std::string> parts;
  std::size_t at = 0;
  while (at <= name.size()) {
    const std::size_t slash = std::min(name.find('/', at), name.size());
    const auto part = name.substr(at, slash - at);
    if (part == "..") {
      return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                    "'..' is not allowed in file names");
    }
    if (!part.empty() && part != ".") parts.emplace_back(part);
    at = slash + 1;
  }
  if (parts.empty()) {
    return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                  "not a regular file");
  }
  UniqueFd dir;
  int cur = root_fd;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    UniqueFd next(::openat(cur, parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) {
      const int err = errno;
      // A symlink fails with ENOTDIR or ELOOP depending on the kernel: say what it is.
      struct stat st {};
      if (::fstatat(cur, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
        return refusal_for_errno(ELOOP, "a directory on the path");
      }
      return refusal_for_errno(err, "a directory on the path");
    }
    dir = std::move(next);
    cur = dir.get();
  }
  // Look before opening, so devices and FIFOs are never opened at all; finish_open checks the
  // opened file again (the name may have changed in between).
  struct stat st {};
  if (::fstatat(cur, parts.back().c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return refusal_for_errno(errno, "the file");
  }
  if (S_ISLNK(st.st_mode)) return refusal_for_errno(ELOOP, "the file");
  if (!S_ISREG(st.st_mode)) {
    return refuse(RefuseReason::access_violation, ErrorCode::access_violation,
                  "not a regular file");
  }
  UniqueFd fd(::openat(cur, parts.back().c_str(), kOpenFlags | O_NOFOLLOW));
  if (!fd) return refusal_for_errno(errno, "the file");
  return finish_open(std::move(fd));
}

// Reads exactly out.size() bytes at `offset`; false on an error or a short file.
bool read_at(int fd, std::span<std::uint8_t> out, std::uint64_t offset, int& err) {
  std::size_t done = 0;
  while (done < out.size()) {
    const ssize_t n =
        ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : 0;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

std::map<std::string, std::string> debian_ipxe_files() {
  // /usr/lib/ipxe/ipxe.efi is a symlink to /boot/ipxe.efi in the package; name the target.
  return {
      {"undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe"},
      {"undionly.kkpxe", "/usr/lib/ipxe/undionly.kkpxe"},
      {"ipxe.pxe", "/usr/lib/ipxe/ipxe.pxe"},
      {"ipxe.efi", "/boot/ipxe.efi"},
      {"snponly.efi", "/usr/lib/ipxe/snponly.efi"},
  };
}

std::string_view to_string(RefuseReason reason) noexcept {
  switch (reason) {
    case RefuseReason::not_found:
      return "not_found";
    case RefuseReason::access_violation:
      return "access_violation";
    case RefuseReason::write_request:
      return "write_request";
    case RefuseReason::bad_mode:
      return "bad_mode";
    case RefuseReason::bad_request:
      return "bad_request";
    case RefuseReason::busy:
      return "busy";
    case RefuseReason::server_error:
      return "server_error";
  }
  return "unknown";
}

std::string_view to_string(FailReason reason) noexcept {
  switch (reason) {
    case FailReason::timeout:
      return "timeout";
    case FailReason::client_error:
      return "client_error";
    case FailReason::read_error:
      return "read_error";
    case FailReason::stopped:
      return "stopped";
  }
  return "unknown";
}

// One running RRQ: its own socket (the server's TID), the open file and the packet in flight.
struct Transfer {
  Transfer(const asio::strand<asio::io_context::executor_type>& ex, udp::socket s)
      : socket(std::move(s)), timer(ex) {}

  udp::socket socket;
  asio::steady_timer timer;
  udp::endpoint peer;
  std::string name;
  OpenFile file;
  std::uint16_t blksize = kDefaultBlksize;
  std::chrono::milliseconds timeout{1000};
  std::vector<Option> oack;  // empty: no OACK, the transfer starts with DATA 1
  Bytes packet;              // the DATA or OACK in flight, resent on timeout
  std::array<std::uint8_t, 1024> rx{};
  bool cancelled = false;
  Clock::time_point started = Clock::now();

  void cancel() {
    cancelled = true;
    error_code ec;
    socket.close(ec);
    timer.cancel();
  }
};

class TftpServer::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, ServerConfig config, log::Logger logger)
      : strand_(asio::make_strand(io)),
        config_(std::move(config)),
        log_(std::move(logger)),
        listener_(strand_) {}

  Expected<void> start();
  void stop();

  std::atomic<std::uint16_t> port_{0};
  ServerStats stats_;
  const ServerConfig& config() const { return config_; }

 private:
  enum class Wait { acked, timeout, client_error, stopped };

  static asio::awaitable<void> listen_loop(std::shared_ptr<Impl> self);
  static asio::awaitable<void> run(std::shared_ptr<Impl> self, std::shared_ptr<Transfer> t);
  asio::awaitable<Wait> await_ack(Transfer& t, const std::shared_ptr<Transfer>& keep,
                                  std::uint16_t expected, std::uint16_t previous);
  void on_datagram(ByteView bytes, const udp::endpoint& from);
  void on_request(Request request, const udp::endpoint& from);
  std::expected<OpenFile, Refusal> open_file(const std::string& name) const;
  void send_refusal(const udp::endpoint& to, const Refusal& r, std::string_view what);
  void send_error(udp::socket& socket, const udp::endpoint& to, ErrorCode code,
                  std::string_view message);
  bool fill_block(Transfer& t, std::uint64_t index);
  void end_transfer(const std::shared_ptr<Transfer>& t);
  void fail(Transfer& t, FailReason reason, std::string_view why);

  template <std::size_t N, class E>
  static void bump(std::array<ServerStats::Counter, N>& a, E e) {
    a[static_cast<std::size_t>(e)].fetch_add(1, std::memory_order_relaxed);
  }
  static void bump(ServerStats::Counter& c, std::uint64_t n = 1) {
    c.fetch_add(n, std::memory_order_relaxed);
  }

  asio::strand<asio::io_context::executor_type> strand_;
  const ServerConfig config_;
  log::Logger log_;
  udp::socket listener_;
  asio::ip::address address_;
  UniqueFd root_fd_;
  bool started_ = false;
  bool stopped_ = false;  // on the strand
  std::unordered_set<std::shared_ptr<Transfer>> transfers_;
  std::vector<std::uint8_t> rx_ = std::vector<std::uint8_t>(65536);
};

Expected<void> TftpServer::Impl::start() {
  if (started_) return neco::fail(Errc::failed_precondition, "the TFTP server was already started");
  if (config_.max_blksize < kMinBlksize || config_.max_blksize > kMaxBlksize) {
    return neco::fail(Errc::invalid_argument,
                      fmt::format("max_blksize {} is outside {}..{}", config_.max_blksize,
                                  kMinBlksize, kMaxBlksize));
  }
  if (config_.max_transfers == 0) {
    return neco::fail(Errc::invalid_argument, "max_transfers must be at least 1");
  }
  if (config_.timeout <= std::chrono::milliseconds::zero()) {
    return neco::fail(Errc::invalid_argument, "timeout must be positive");
  }
  if (config_.files.empty() && config_.root_dir.empty()) {
    return neco::fail(Errc::invalid_argument, "nothing to serve: set files or root_dir");
  }
  for (const auto& [name, path] : config_.files) {
    if (name.empty() || path.empty() || name.find('\0') != std::string::npos) {
      return neco::fail(Errc::invalid_argument,
                        fmt::format("files entry {} -> {} needs a name and a path", printable(name),
                                    printable(path)));
    }
  }
  error_code ec;
  address_ = asio::ip::make_address(config_.address, ec);
  if (ec) {
    return neco::fail(Errc::invalid_argument,
                      fmt::format("address {} is not an IP address", printable(config_.address)));
  }
  if (!config_.root_dir.empty()) {
    UniqueFd fd(::open(config_.root_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
      return neco::fail(Errc::invalid_argument,
                        fmt::format("Failed to open root_dir {}: {}", printable(config_.root_dir),
                                    std::strerror(errno)));
    }
    root_fd_ = std::move(fd);
  }
  const udp::endpoint ep(address_, config_.port);
  listener_.open(ep.protocol(), ec);
  if (!ec) listener_.bind(ep, ec);
  if (!ec) listener_.non_blocking(true, ec);
  if (ec) {
    listener_.close(ec);
    return neco::fail(Errc::unavailable, fmt::format("Failed to listen on UDP {}: {}",
                                                     endpoint_string(ep), ec.message()));
  }
  port_.store(listener_.local_endpoint(ec).port());
  started_ = true;
  log_.info("Serving TFTP on {} ({} named file(s){}{})",
            endpoint_string(listener_.local_endpoint(ec)), config_.files.size(),
            config_.root_dir.empty() ? "" : ", root ",
            config_.root_dir.empty() ? "" : printable(config_.root_dir));
  asio::co_spawn(strand_, listen_loop(shared_from_this()), asio::detached);
  return {};
}

void TftpServer::Impl::stop() {
  asio::dispatch(strand_, [self = shared_from_this()] {
    if (self->stopped_) return;
    self->stopped_ = true;
    error_code ec;
    self->listener_.close(ec);
    const std::vector<std::shared_ptr<Transfer>> all(self->transfers_.begin(),
                                                     self->transfers_.end());
    for (const auto& t : all)
      t->cancel();
  });
}

asio::awaitable<void> TftpServer::Impl::listen_loop(std::shared_ptr<Impl> self) {
  for (;;) {
    udp::endpoint from;
    error_code ec;
    const std::size_t n = co_await self->listener_.async_receive_from(
        asio::buffer(self->rx_), from, asio::redirect_error(asio::use_awaitable, ec));
    if (self->stopped_ || !self->listener_.is_open()) co_return;
    if (ec) {
      // Not expected on an unconnected UDP socket; pause instead of spinning if it persists.
      self->log_.warning("Failed to receive on the TFTP port: {}", ec.message());
      asio::steady_timer pause(self->strand_, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    try {
      self->on_datagram(ByteView(self->rx_.data(), n), from);
    } catch (const std::exception& e) {  // allocation failure: drop this request only
      self->log_.error("Failed to handle a TFTP request from {}: {}", endpoint_string(from),
                       e.what());
    }
  }
}

void TftpServer::Impl::on_datagram(ByteView bytes, const udp::endpoint& from) {
  auto packet = parse(bytes);
  if (!packet) {
    const auto& e = packet.error();
    bump(stats_.malformed_total, e.reason);
    const auto op = bytes.size() >= 2 ? (bytes[0] << 8) | bytes[1] : 0;
    if (op != static_cast<int>(Opcode::rrq) && op != static_cast<int>(Opcode::wrq)) {
      log_.debug("Dropped a malformed packet from {} ({}): {}", endpoint_string(from),
                 to_string(e.reason), e.message);
      return;
    }
    // Someone is trying to boot: tell them what is wrong rather than letting them time out.
    const bool option_problem = e.reason == ParseErrc::bad_option ||
                                e.reason == ParseErrc::duplicate_option ||
                                e.reason == ParseErrc::bad_option_value;
    send_refusal(from,
                 Refusal{RefuseReason::bad_request,
                         option_problem ? ErrorCode::option_refused : ErrorCode::illegal_operation,
                         e.message},
                 "a malformed request");
    return;
  }
  if (!std::holds_alternative<Request>(*packet)) {
    log_.debug("Ignored a {} from {} on the TFTP port", to_string(opcode_of(*packet)),
               endpoint_string(from));
    return;
  }
  bump(stats_.requests);
  on_request(std::get<Request>(std::move(*packet)), from);
}

void TftpServer::Impl::on_request(Request request, const udp::endpoint& from) {
  const auto what =
      fmt::format("{} for {}", to_string(request.opcode), printable(request.filename));
  if (request.opcode == Opcode::wrq) {
    send_refusal(from,
                 Refusal{RefuseReason::write_request, ErrorCode::access_violation,
                         "this server is read-only"},
                 what);
    return;
  }
  if (request.mode != Mode::octet) {
    send_refusal(from,
                 Refusal{RefuseReason::bad_mode, ErrorCode::not_defined,
                         fmt::format("{} mode is not supported, use octet (binary)",
                                     to_string(request.mode))},
                 what);
    return;
  }
  for (const auto& t : transfers_) {
    if (t->peer == from) {
      // The client resent its RRQ before our first packet arrived: the running transfer answers.
      bump(stats_.duplicate_requests);
      log_.debug("Ignored a repeated {} from {}", what, endpoint_string(from));
      return;
    }
  }
  if (transfers_.size() >= config_.max_transfers) {
    send_refusal(from,
                 Refusal{RefuseReason::busy, ErrorCode::not_defined,
                         fmt::format("server busy ({} transfers running), try again later",
                                     transfers_.size())},
                 what);
    return;
  }
  auto file = open_file(request.filename);
  if (!file) {
    send_refusal(from, file.error(), what);
    return;
  }
  const NegotiationLimits limits{
      .max_blksize = config_.max_blksize,
      .max_timeout = static_cast<unsigned>(
          std::clamp<std::int64_t>(config_.max_client_timeout.count(), 0, kMaxTimeout)),
  };
  auto negotiation = negotiate(request, limits, file->size);
  if (!negotiation) {  // parse() already checked the options; kept for hand-made requests
    send_refusal(
        from,
        Refusal{RefuseReason::bad_request, ErrorCode::option_refused, negotiation.error().message},
        what);
    return;
  }
  udp::socket socket(strand_);
  error_code ec;
  socket.open(listener_.local_endpoint(ec).protocol(), ec);
  if (!ec) socket.bind(udp::endpoint(address_, 0), ec);
  if (!ec) socket.non_blocking(true, ec);
  if (ec) {
    send_refusal(from,
                 Refusal{RefuseReason::server_error, ErrorCode::not_defined,
                         fmt::format("cannot open a transfer socket: {}", ec.message())},
                 what);
    return;
  }
  auto t = std::make_shared<Transfer>(strand_, std::move(socket));
  t->peer = from;
  t->name = std::move(request.filename);
  t->file = std::move(*file);
  t->blksize = negotiation->blksize;
  t->timeout = negotiation->timeout_seconds
                   ? std::chrono::milliseconds(*negotiation->timeout_seconds * 1000U)
                   : config_.timeout;
  t->oack = std::move(negotiation->reply);
  transfers_.insert(t);
  bump(stats_.active_transfers);
  asio::co_spawn(strand_, run(shared_from_this(), std::move(t)), asio::detached);
}

std::expected<OpenFile, Refusal> TftpServer::Impl::open_file(const std::string& name) const {
  if (const auto it = config_.files.find(name); it != config_.files.end()) {
    UniqueFd fd(::open(it->second.c_str(), kOpenFlags));
    if (!fd) {
      const int err = errno;
      log_.warning("Failed to open {} (served as {}): {}", printable(it->second), printable(name),
                   std::strerror(err));
      return refusal_for_errno(err, "the file");
    }
    return finish_open(std::move(fd));
  }
  if (!root_fd_)
    return refuse(RefuseReason::not_found, ErrorCode::file_not_found, "file not found");
  return open_under(root_fd_.get(), name);
}

void TftpServer::Impl::send_refusal(const udp::endpoint& to, const Refusal& r,
                                    std::string_view what) {
  bump(stats_.refused_total, r.reason);
  log_.info("Refused {} from {} ({}): {}", what, endpoint_string(to), to_string(r.reason),
            r.message);
  // From the listening port: a refusal needs no TID of its own, and a busy server should not
  // spend a socket on saying so. Clients take the first reply's port, whichever it is.
  send_error(listener_, to, r.code, r.message);
}

void TftpServer::Impl::send_error(udp::socket& socket, const udp::endpoint& to, ErrorCode code,
                                  std::string_view message) {
  const auto bytes = serialize(ErrorPacket{static_cast<std::uint16_t>(code), std::string(message)});
  error_code ec;
  socket.send_to(asio::buffer(bytes), to, 0, ec);  // best effort: an ERROR is never resent
}

bool TftpServer::Impl::fill_block(Transfer& t, std::uint64_t index) {
  const std::uint64_t offset = index * t.blksize;
  const std::uint64_t len =
      offset >= t.file.size ? 0 : std::min<std::uint64_t>(t.blksize, t.file.size - offset);
  t.packet.resize(kDataHeaderSize + len);
  // Block numbers wrap from 65535 to 0 for files of more than 65535 blocks.
  write_data_header(std::span<std::uint8_t, kDataHeaderSize>(t.packet.data(), kDataHeaderSize),
                    static_cast<std::uint16_t>(index + 1));
  int err = 0;
  if (!read_at(t.file.fd.get(), std::span(t.packet).subspan(kDataHeaderSize), offset, err)) {
    const auto why =
        err != 0 ? fmt::format("cannot read the file at offset {}: {}", offset, std::strerror(err))
                 : fmt::format("the file shrank below {} bytes during the transfer", t.file.size);
    send_error(t.socket, t.peer, ErrorCode::not_defined, why);
    fail(t, FailReason::read_error, why);
    return false;
  }
  return true;
}

void TftpServer::Impl::fail(Transfer& t, FailReason reason, std::string_view why) {
  bump(stats_.failed_total, reason);
  if (reason == FailReason::stopped) {
    log_.info("Stopped sending {} to {}", printable(t.name), endpoint_string(t.peer));
  } else {
    log_.warning("Failed to send {} to {}: {}", printable(t.name), endpoint_string(t.peer), why);
  }
}

void TftpServer::Impl::end_transfer(const std::shared_ptr<Transfer>& t) {
  if (transfers_.erase(t) > 0) stats_.active_transfers.fetch_sub(1, std::memory_order_relaxed);
  error_code ec;
  t->socket.close(ec);
  t->timer.cancel();
  t->file.fd.reset();
}

asio::awaitable<void> TftpServer::Impl::run(std::shared_ptr<Impl> self,
                                            std::shared_ptr<Transfer> t) {
  Impl& s = *self;
  struct EndGuard {
    Impl& s;
    const std::shared_ptr<Transfer>& t;
    ~EndGuard() { s.end_transfer(t); }
  } guard{s, t};

  bump(s.stats_.transfers_started);
  const auto send = [&] {
    error_code ec;
    // A failed send is a lost packet: the timeout resends it.
    t->socket.send_to(asio::buffer(t->packet), t->peer, 0, ec);
    if (ec) s.log_.debug("Failed to send to {}: {}", endpoint_string(t->peer), ec.message());
  };

  std::uint64_t index = 0;  // of the block in flight (block number index + 1, modulo 2^16)
  bool in_oack = !t->oack.empty();
  if (in_oack) {
    t->packet = serialize(OptionAck{t->oack});
  } else if (!s.fill_block(*t, 0)) {
    co_return;
  }
  unsigned retries = 0;
  send();
  if (!in_oack) bump(s.stats_.bytes_sent, t->packet.size() - kDataHeaderSize);
  for (;;) {
    const auto expected = static_cast<std::uint16_t>(in_oack ? 0 : index + 1);
    const auto previous = static_cast<std::uint16_t>(expected - 1);
    const Wait w = co_await s.await_ack(*t, t, expected, previous);
    if (w == Wait::stopped) {
      s.fail(*t, FailReason::stopped, "server stopped");
      co_return;
    }
    if (w == Wait::client_error) co_return;  // counted and logged by await_ack
    if (w == Wait::timeout) {
      if (retries >= s.config_.max_retries) {
        s.fail(*t, FailReason::timeout,
               fmt::format("no ACK of block {} after {} retransmissions", expected, retries));
        co_return;
      }
      ++retries;
      bump(s.stats_.retransmissions);
      send();
      continue;
    }
    // Acknowledged.
    retries = 0;
    if (in_oack) {
      in_oack = false;
    } else {
      if (t->packet.size() - kDataHeaderSize < t->blksize) {
        bump(s.stats_.transfers_completed);
        const auto secs = std::chrono::duration<double>(Clock::now() - t->started).count();
        s.log_.info("Sent {} to {} ({} bytes, blksize {}, {:.3f}s)", printable(t->name),
                    endpoint_string(t->peer), t->file.size, t->blksize, secs);
        co_return;
      }
      ++index;
    }
    if (!s.fill_block(*t, index)) co_return;
    send();
    bump(s.stats_.bytes_sent, t->packet.size() - kDataHeaderSize);
  }
}

asio::awaitable<TftpServer::Impl::Wait> TftpServer::Impl::await_ack(
    Transfer& t, const std::shared_ptr<Transfer>& keep, std::uint16_t expected,
    std::uint16_t previous) {
  const auto deadline = Clock::now() + t.timeout;
  for (;;) {
    if (t.cancelled) co_return Wait::stopped;
    // The timer cancels the receive. A late firing from an earlier round may cancel this one
    // early too: that is told apart by the deadline, and no datagram is lost by a cancel.
    t.timer.expires_at(deadline);
    t.timer.async_wait([weak = std::weak_ptr<Transfer>(keep)](error_code ec) {
      if (ec) return;
      if (auto tr = weak.lock()) {
        error_code ignored;
        tr->socket.cancel(ignored);
      }
    });
    udp::endpoint from;
    error_code ec;
    const std::size_t n = co_await t.socket.async_receive_from(
        asio::buffer(t.rx), from, asio::redirect_error(asio::use_awaitable, ec));
    t.timer.cancel();
    if (t.cancelled) co_return Wait::stopped;
    if (ec == asio::error::operation_aborted) {
      if (Clock::now() >= deadline) co_return Wait::timeout;
      continue;
    }
    if (ec) {
      log_.debug("Failed to receive from {}: {}", endpoint_string(t.peer), ec.message());
      t.timer.expires_at(deadline);
      co_await t.timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      co_return t.cancelled ? Wait::stopped : Wait::timeout;
    }
    const ByteView bytes(t.rx.data(), n);
    auto packet = parse(bytes);
    if (from != t.peer) {
      // RFC 1350 §4: another endpoint's packet gets ERROR 5 and the transfer goes on. An ERROR
      // is never answered, so two confused peers cannot bounce errors forever.
      bump(stats_.unknown_tid);
      const bool is_error = packet && std::holds_alternative<ErrorPacket>(*packet);
      log_.debug("Packet from {} on the transfer port of {}: unknown transfer ID",
                 endpoint_string(from), endpoint_string(t.peer));
      if (!is_error) send_error(t.socket, from, ErrorCode::unknown_tid, "unknown transfer ID");
      continue;
    }
    if (!packet) {
      bump(stats_.malformed_total, packet.error().reason);
      log_.debug("Dropped a malformed packet from {} ({}): {}", endpoint_string(from),
                 to_string(packet.error().reason), packet.error().message);
      continue;
    }
    if (const auto* err = std::get_if<ErrorPacket>(&*packet)) {
      bump(stats_.failed_total, FailReason::client_error);
      log_.warning("Failed to send {} to {}: the client sent ERROR {} {}", printable(t.name),
                   endpoint_string(t.peer), err->code, printable(err->message));
      co_return Wait::client_error;
    }
    if (const auto* ack = std::get_if<Ack>(&*packet)) {
      if (ack->block == expected) co_return Wait::acked;
      // A duplicate ACK means a retransmission crossed it: resending now would double every
      // packet from here on (Sorcerer's Apprentice). Only the timeout resends.
      if (ack->block == previous) bump(stats_.duplicate_acks);
      continue;
    }
    // DATA, OACK or a request on a transfer port: not ours to answer; keep waiting.
  }
}

TftpServer::TftpServer(asio::io_context& io, ServerConfig config, log::Logger logger)
    : impl_(std::make_shared<Impl>(io, std::move(config), std::move(logger))) {}

TftpServer::~TftpServer() {
  impl_->stop();
}

Expected<void> TftpServer::start() {
  return impl_->start();
}

void TftpServer::stop() {
  impl_->stop();
}

std::uint16_t TftpServer::port() const {
  return impl_->port_.load();
}

const ServerStats& TftpServer::stats() const {
  return impl_->stats_;
}

const ServerConfig& TftpServer::config() const {
  return impl_->config();
}

}  // namespace neco::netboot::tftp
