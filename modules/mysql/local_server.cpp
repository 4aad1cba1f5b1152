// The agent beside its local mariadbd (see local_server.hpp): option file, optional
// initialization and supervision of a detached mariadbd, health checks.
#include "modules/mysql/local_server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "agent/log/log.hpp"
#include "modules/mysql/cluster_loop.hpp"

namespace neco::mysql {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

constexpr milliseconds kMaxBackoff = seconds(30);
// A mariadbd that stayed up this long has its restart backoff reset.
constexpr milliseconds kStableAfter = seconds(30);
constexpr seconds kInstallDbBound = seconds(180);

log::Logger& logger() {
  static log::Logger l("mysql");
  return l;
}

bool executable(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

Expected<std::string> resolve_binary(const std::string& given, const std::string& name,
                                     std::initializer_list<const char*> dirs,
                                     const std::string& field) {
  if (given.empty()) {
    std::string found = find_executable(name, dirs);
    if (found.empty()) {
      std::string where = "PATH";
      for (const char* d : dirs)
        where += std::string(", ") + d;
      return fail(
          Errc::invalid_argument,
          fmt::format("{}: no {} found in {} (install it or set {})", field, name, where, field));
    }
    return found;
  }
  if (given.front() != '/') {
    return fail(Errc::invalid_argument,
                fmt::format("{} \"{}\" is not an absolute path", field, given));
  }
  if (!executable(given)) {
    return fail(Errc::invalid_argument,
                fmt::format("{} \"{}\" is not an executable file", field, given));
  }
  return given;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return {};
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The process's command line as arguments ("" entries dropped), empty when it is gone.
std::vector<std::string> cmdline(pid_t pid) {
  const std::string text = read_text(fs::path("/proc") / std::to_string(pid) / "cmdline");
  std::vector<std::string> args;
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t end = text.find('\0', start);
    const std::size_t stop = end == std::string::npos ? text.size() : end;
    if (stop > start) args.push_back(text.substr(start, stop - start));
    start = stop + 1;
  }
  return args;
}

// Alive and not a zombie (a detached child is reaped by init, which may take a moment).
bool alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  const std::string stat = read_text(fs::path("/proc") / std::to_string(pid) / "stat");
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return false;
  const char state = stat[paren + 2];
  return state != 'Z' && state != 'X';
}

// A mariadbd (or mysqld) whose command line names this data directory.
bool is_our_mariadbd(pid_t pid, const std::string& datadir) {
  const auto args = cmdline(pid);
  if (args.empty()) return false;
  const std::string exe = fs::path(args[0]).filename().string();
  if (exe != "mariadbd" && exe != "mysqld") return false;
  return std::any_of(args.begin() + 1, args.end(), [&](const std::string& a) {
    return a == "--datadir=" + datadir || a == "--datadir=" + datadir + "/";
  });
}

std::optional<pid_t> parse_pid(const std::string& text) {
  std::string t = text;
  while (!t.empty() && (t.back() == '\n' || t.back() == ' '))
    t.pop_back();
  if (t.empty() || t.size() > 10 ||
      !std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const long v = std::strtol(t.c_str(), nullptr, 10);
  if (v <= 1) return std::nullopt;
  return static_cast<pid_t>(v);
}

// The owner of files mariadbd must write, from os_user; nullopt when it does not exist.
std::optional<std::pair<uid_t, gid_t>> lookup_user(const std::string& user) {
  std::array<char, 4096> buffer{};
  struct passwd pw {};
  struct passwd* result = nullptr;
  if (::getpwnam_r(user.c_str(), &pw, buffer.data(), buffer.size(), &result) != 0 ||
      result == nullptr) {
    return std::nullopt;
  }
  return std::pair{pw.pw_uid, pw.pw_gid};
}

// Runs a program to completion with output appended to `log`, bounded; error with the exit
// status and the log's tail.
Expected<void> run_to_completion(const std::vector<std::string>& args, const fs::path& log,
                                 seconds bound) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd < 0) {
    return fail(Errc::internal,
                fmt::format("cannot open log file {}: {}", log.string(), std::strerror(errno)));
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return fail(Errc::internal, fmt::format("fork: {}", std::strerror(errno)));
  }
  if (pid == 0) {
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, STDIN_FILENO);
    ::close_range(3, ~0U, 0);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fd);
  const auto deadline = Clock::now() + bound;
  int status = 0;
  while (true) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      return fail(Errc::internal, fmt::format("waiting for {}: {}", args[0], std::strerror(errno)));
    }
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return fail(Errc::deadline_exceeded,
                  fmt::format("{} did not finish within {} s", args[0], bound.count()));
    }
    std::this_thread::sleep_for(milliseconds(50));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string text = read_text(log);
    if (text.size() > 2000) text = text.substr(text.size() - 2000);
    return fail(Errc::internal, fmt::format("{} failed (wait status {}); end of {}:\n{}", args[0],
                                            status, log.string(), text));
  }
  return {};
}

}  // namespace

std::string find_executable(const std::string& name,
                            std::initializer_list<const char*> extra_dirs) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH"); path != nullptr) {
    std::stringstream s(path);
    for (std::string d; std::getline(s, d, ':');) {
      if (!d.empty()) dirs.push_back(d);
    }
  }
  for (const char* d : extra_dirs)
    dirs.emplace_back(d);
  for (const auto& d : dirs) {
    std::string candidate = (fs::path(d) / name).string();
    if (candidate.front() == '/' && executable(candidate)) return candidate;
  }
  return {};
}

const config::Schema<LocalSection>& local_schema() {
  static const auto schema = [] {
    config::Schema<LocalSection> s;
    s.field("server_id", &LocalSection::server_id, "server_id, unique in the cluster (required)",
            {.min = 1, .max = 4294967295});
    s.field("port", &LocalSection::port, "TCP port", {.min = 1, .max = 65535});
    s.field("bind_address", &LocalSection::bind_address, "address mariadbd listens on");
    s.field("datadir", &LocalSection::datadir, "data directory, absolute (required)");
    s.field("socket", &LocalSection::socket, "unix socket, absolute (required)");
    s.field("gtid_domain_id", &LocalSection::gtid_domain_id,
            "GTID domain this instance writes in when primary", {.min = 0, .max = 4294967295});
    s.field("slave_net_timeout", &LocalSection::slave_net_timeout,
            "a replica declares its primary dead after this (whole seconds)",
            {.min = std::chrono::seconds(2)});
    s.field("option_file", &LocalSection::option_file,
            "where the rendered option file is written, absolute (required)");
    s.field("start", &LocalSection::start,
            "the agent starts mariadbd itself (detached; restarted when it dies)");
    s.field("mariadbd", &LocalSection::mariadbd, "mariadbd binary (default: PATH, /usr/sbin)");
    s.field("initialize", &LocalSection::initialize,
            "run mariadb-install-db on an empty data directory before the first start");
    s.field("install_db", &LocalSection::install_db,
            "mariadb-install-db binary (default: PATH, /usr/bin)");
    s.field("os_user", &LocalSection::os_user, "system user mariadbd runs as (--user)");
    s.field("pid_file", &LocalSection::pid_file,
            "pid file of a started mariadbd (default: DATADIR/mariadbd.pid)");
    s.field("log_file", &LocalSection::log_file,
            "output of a started mariadbd (default: mariadbd.log beside DATADIR)");
    s.field("admin_user", &LocalSection::admin_user,
            "user the health check connects as (default: root over the unix socket)");
    s.field("admin_password_file", &LocalSection::admin_password_file,
            "file holding admin_user's password (read at start)");
    s.field("health_interval", &LocalSection::health_interval, "between health checks",
            {.min = std::chrono::milliseconds(100)});
    s.field("connect_timeout", &LocalSection::connect_timeout,
            "health check connect timeout (whole seconds)", {.min = std::chrono::seconds(1)});
    s.field("read_timeout", &LocalSection::read_timeout,
            "health check reply timeout (whole seconds)", {.min = std::chrono::seconds(1)});
    return s;
  }();
  return schema;
}

Expected<LocalSpec> local_spec(const LocalSection& s, const std::string& path) {
  auto bad = [&path](const std::string& field, const std::string& what) -> Expected<LocalSpec> {
    return fail(Errc::invalid_argument, fmt::format("{}.{}: {}", path, field, what));
  };
  if (s.server_id <= 0 || s.server_id > 4294967295) {
    return bad("server_id", fmt::format("{} is not allowed (1..4294967295, unique in the cluster)",
                                        s.server_id));
  }
  if (s.port <= 0 || s.port > 65535) {
    return bad("port", fmt::format("{} is not allowed (1..65535)", s.port));
  }
  if (s.datadir.empty()) return bad("datadir", "required (an absolute path)");
  if (s.socket.empty()) return bad("socket", "required (an absolute path)");
  if (s.option_file.empty()) return bad("option_file", "required (an absolute path)");
  LocalSpec spec;
  spec.server.server_id = static_cast<std::uint32_t>(s.server_id);
  spec.server.port = static_cast<std::uint16_t>(s.port);
  spec.server.bind_address = s.bind_address;
  spec.server.datadir = s.datadir;
  spec.server.socket = s.socket;
  spec.server.gtid_domain_id = static_cast<std::uint32_t>(s.gtid_domain_id);
  spec.server.slave_net_timeout_s = static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::seconds>(s.slave_net_timeout).count());
  if (auto ok = validate(spec.server); !ok) {
    // validate() starts its message with the field name (slave_net_timeout_s is ours).
    return fail(Errc::invalid_argument, path + "." + ok.error().message);
  }
  for (const auto& [field, value] :
       {std::pair<const char*, const std::string*>{"option_file", &s.option_file},
        {"pid_file", &s.pid_file},
        {"log_file", &s.log_file},
        {"admin_password_file", &s.admin_password_file}}) {
    if (!value->empty() && value->front() != '/') {
      return bad(field, fmt::format("\"{}\" is not an absolute path", *value));
    }
  }
  const fs::path datadir = fs::path(s.datadir).lexically_normal();
  if (datadir == "/" || !datadir.has_parent_path()) {
    return bad("datadir", fmt::format("\"{}\" cannot be the root directory", s.datadir));
  }
  if (!s.admin_user.empty() && s.admin_password_file.empty()) {
    return bad("admin_password_file", "required with admin_user");
  }
  if (s.admin_user.empty() && !s.admin_password_file.empty()) {
    return bad("admin_user",
               "required with admin_password_file (or remove both to connect as "
               "root over the unix socket)");
  }
  if (s.os_user.empty()) return bad("os_user", "must not be empty");
  spec.option_file = s.option_file;
  spec.start = s.start;
  spec.initialize = s.initialize;
  spec.os_user = s.os_user;
  if (s.start) {
    auto mariadbd = resolve_binary(s.mariadbd, "mariadbd", {"/usr/sbin", "/usr/local/sbin"},
                                   path + ".mariadbd");
    if (!mariadbd) return std::unexpected(mariadbd.error());
    spec.mariadbd = std::move(*mariadbd);
    if (s.initialize) {
      auto install = resolve_binary(s.install_db, "mariadb-install-db", {"/usr/bin", "/usr/sbin"},
                                    path + ".install_db");
      if (!install) return std::unexpected(install.error());
      spec.install_db = std::move(*install);
    }
  } else if (s.initialize) {
    return bad("initialize", "needs start: true (the agent initializes what it starts)");
  }
  spec.pid_file = s.pid_file.empty() ? datadir / "mariadbd.pid" : fs::path(s.pid_file);
  spec.log_file =
      s.log_file.empty() ? datadir.parent_path() / "mariadbd.log" : fs::path(s.log_file);
  spec.admin_user = s.admin_user;
  spec.admin_password_file = s.admin_password_file;
  spec.health_interval = std::chrono::duration_cast<milliseconds>(s.health_interval);
  spec.connect_timeout = std::chrono::duration_cast<seconds>(s.connect_timeout);
  spec.read_timeout = std::chrono::duration_cast<seconds>(s.read_timeout);
  return spec;
}

LocalServer::LocalServer(LocalSpec spec) : spec_(std::move(spec)) {
  status_.managed_process = spec_.start;
  status_.problem = "not checked yet";
}

LocalServer::~LocalServer() {
  stop();
}

Expected<void> LocalServer::start() {
  if (thread_.joinable()) return fail(Errc::failed_precondition, "already started");
  if (!spec_.admin_user.empty()) {
    auto password =
        read_password_file(spec_.admin_password_file, "modules.mysql.local.admin_password_file");
    if (!password) return std::unexpected(password.error());
    password_ = std::move(*password);
  }
  {
    const std::lock_guard lock(wake_mutex_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
  return {};
}

void LocalServer::stop() {
  {
    const std::lock_guard lock(wake_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool LocalServer::wait(milliseconds d) {
  std::unique_lock lock(wake_mutex_);
  wake_.wait_for(lock, d, [this] { return stopping_; });
  return !stopping_;
}

void LocalServer::run() {
  do {
    step();
  } while (wait(spec_.health_interval));
}

Expected<void> LocalServer::write_option_file() {
  auto text = render_server_config(spec_.server);
  if (!text) return std::unexpected(text.error());
  if (written_ && *written_ == *text) return {};
  const fs::path& file = spec_.option_file;
  if (read_text(file) == *text) {
    written_ = *text;
    return {};
  }
  std::error_code ec;
  fs::create_directories(file.parent_path(), ec);
  if (ec) {
    return fail(Errc::internal,
                fmt::format("creating {}: {}", file.parent_path().string(), ec.message()));
  }
  const fs::path tmp = file.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return fail(Errc::internal, fmt::format("writing {}: {}", tmp.string(), std::strerror(errno)));
  }
  std::size_t done = 0;
  while (done < text->size()) {
    const ssize_t n = ::write(fd, text->data() + done, text->size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      return fail(Errc::internal, fmt::format("writing {}: {}", tmp.string(), std::strerror(err)));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    return fail(Errc::internal, fmt::format("syncing {}: {}", tmp.string(), std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) {
    return fail(Errc::internal, fmt::format("renaming {} to {}: {}", tmp.string(), file.string(),
                                            std::strerror(errno)));
  }
  logger().info("local: wrote the option file {}", file.string());
  written_ = *text;
  return {};
}

std::optional<pid_t> LocalServer::find_running() const {
  const auto pid = parse_pid(read_text(spec_.pid_file));
  if (!pid || !alive(*pid) || !is_our_mariadbd(*pid, spec_.server.datadir)) return std::nullopt;
  return pid;
}

Expected<void> LocalServer::initialize_datadir() {
  const fs::path datadir = spec_.server.datadir;
  std::error_code ec;
  if (fs::exists(datadir / "mysql", ec)) return {};
  const bool empty = !fs::exists(datadir, ec) || fs::is_empty(datadir, ec);
  if (!empty) {
    return fail(Errc::failed_precondition,
                fmt::format("datadir {} is neither empty nor initialized (no mysql/ system "
                            "tables): not touching it",
                            datadir.string()));
  }
  if (!spec_.initialize) {
    return fail(Errc::failed_precondition,
                fmt::format("datadir {} is not initialized (set initialize: true, or run "
                            "mariadb-install-db)",
                            datadir.string()));
  }
  logger().info("local: initializing {} with {}", datadir.string(), spec_.install_db);
  fs::create_directories(datadir.parent_path(), ec);
  // Root authenticates over the unix socket only (no password to keep anywhere).
  auto ok = run_to_completion(
      {spec_.install_db, "--no-defaults", "--datadir=" + datadir.string(),
       "--user=" + spec_.os_user, "--auth-root-authentication-method=socket", "--skip-test-db"},
      spec_.log_file, kInstallDbBound);
  if (!ok) {
    // A half-made directory would be refused next time; start from empty again.
    fs::remove_all(datadir, ec);
    return fail(ok.error().code, "initializing the datadir: " + ok.error().message);
  }
  return {};
}

Expected<pid_t> LocalServer::spawn_detached() {
  const fs::path socket_dir = fs::path(spec_.server.socket).parent_path();
  std::error_code ec;
  if (!fs::exists(socket_dir, ec)) {
    fs::create_directories(socket_dir, ec);
    if (ec) {
      return fail(Errc::internal, fmt::format("creating the socket directory {}: {}",
                                              socket_dir.string(), ec.message()));
    }
    if (auto owner = lookup_user(spec_.os_user)) {
      (void)::chown(socket_dir.c_str(), owner->first, owner->second);
    }
  }
  const std::vector<std::string> args = {
      spec_.mariadbd, "--defaults-file=" + spec_.option_file.string(),
      "--datadir=" + spec_.server.datadir, "--pid-file=" + spec_.pid_file.string(),
      "--user=" + spec_.os_user};
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int log = ::open(spec_.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (log < 0) {
    return fail(Errc::internal, fmt::format("opening the log file {}: {}", spec_.log_file.string(),
                                            std::strerror(errno)));
  }
  std::array<int, 2> pipe_fds{};
  if (::pipe2(pipe_fds.data(), O_CLOEXEC) != 0) {
    ::close(log);
    return fail(Errc::internal, fmt::format("pipe: {}", std::strerror(errno)));
  }
  // Double fork: the intermediate child starts a new session and exits, so mariadbd belongs
  // to no process group or session of the agent and is not its child: stopping, restarting or
  // upgrading the agent (or its systemd unit with KillMode=process) leaves it running.
  const pid_t middle = ::fork();
  if (middle < 0) {
    ::close(log);
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    return fail(Errc::internal, fmt::format("fork: {}", std::strerror(errno)));
  }
  if (middle == 0) {
    ::setsid();
    const pid_t server = ::fork();
    if (server == 0) {
      sigset_t none;
      ::sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      const int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0) ::dup2(null, STDIN_FILENO);
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
      ::close_range(3, ~0U, 0);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const ssize_t n = ::write(pipe_fds[1], &server, sizeof server);
    ::_exit(n == static_cast<ssize_t>(sizeof server) && server > 0 ? 0 : 1);
  }
  ::close(log);
  ::close(pipe_fds[1]);
  pid_t server = -1;
  ssize_t n = -1;
  do {
    n = ::read(pipe_fds[0], &server, sizeof server);
  } while (n < 0 && errno == EINTR);
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(middle, &status, 0);
  if (n != static_cast<ssize_t>(sizeof server) || server <= 0) {
    return fail(Errc::internal, "starting mariadbd: the second fork failed");
  }
  return server;
}

void LocalServer::step() {
  std::string problem;
  if (auto ok = write_option_file(); !ok) {
    problem = "option file: " + ok.error().message;
    logger().error("local: failed to write the option file: {}", ok.error().message);
  }
  if (spec_.start && problem.empty()) {
    if (pid_ && !alive(*pid_)) {
      logger().warning("local: mariadbd (pid {}) is gone; starting it again in {} ms", *pid_,
                       backoff_.count());
      pid_.reset();
      next_spawn_ = Clock::now() + backoff_;
      backoff_ = std::min(backoff_ * 2, kMaxBackoff);
    }
    if (!pid_) {
      if (auto running = find_running()) {
        pid_ = running;
        spawned_at_ = Clock::now();
        if (!seen_running_) {
          logger().info("local: adopted the running mariadbd (pid {})", *running);
          const std::lock_guard lock(mutex_);
          status_.adopted = true;
        }
        seen_running_ = true;
      }
    }
    if (!pid_) {
      if (Clock::now() < next_spawn_) {
        problem = "mariadbd is not running (restart pending)";
      } else if (auto init = initialize_datadir(); !init) {
        problem = init.error().message;
        logger().error("local: failed to start mariadbd: {}", problem);
        next_spawn_ = Clock::now() + backoff_;
        backoff_ = std::min(backoff_ * 2, kMaxBackoff);
      } else if (auto pid = spawn_detached(); !pid) {
        problem = pid.error().message;
        logger().error("local: failed to start mariadbd: {}", problem);
        next_spawn_ = Clock::now() + backoff_;
        backoff_ = std::min(backoff_ * 2, kMaxBackoff);
      } else {
        pid_ = *pid;
        spawned_at_ = Clock::now();
        logger().info("local: started mariadbd (pid {}), output in {}", *pid,
                      spec_.log_file.string());
        const std::lock_guard lock(mutex_);
        if (seen_running_) ++status_.restarts;
        status_.adopted = false;
        seen_running_ = true;
      }
    }
    if (pid_ && Clock::now() - spawned_at_ >= kStableAfter) backoff_ = milliseconds(1000);
  }
  {
    const std::lock_guard lock(mutex_);
    status_.pid = pid_;
  }
  if (!problem.empty()) {
    const std::lock_guard lock(mutex_);
    status_.up = false;
    status_.problem = problem;
    status_.checked_at_ms = wall_clock_ms();
    return;
  }
  check_health();
}

void LocalServer::check_health() {
  ConnectOptions o;
  o.unix_socket = spec_.server.socket;
  o.user = spec_.admin_user.empty() ? "root" : spec_.admin_user;
  o.password = password_;
  o.connect_timeout = spec_.connect_timeout;
  o.read_timeout = spec_.read_timeout;
  o.write_timeout = spec_.read_timeout;
  LocalStatus next;
  {
    const std::lock_guard lock(mutex_);
    next = status_;
  }
  next.checked_at_ms = wall_clock_ms();
  auto client = Client::connect(o);
  Expected<InstanceStatus> st = client ? read_instance_status(*client)
                                       : Expected<InstanceStatus>(std::unexpected(client.error()));
  if (!st) {
    next.up = false;
    next.replication_configured = false;
    next.io_running.clear();
    next.sql_running = false;
    if (spec_.start && !pid_) {
      next.problem = "mariadbd is not running";
    } else if (!spec_.start && !fs::exists(spec_.server.socket)) {
      next.problem = fmt::format("mariadbd is not running (no socket {})", spec_.server.socket);
    } else {
      next.problem = "mariadbd is not reachable: " + st.error().message;
    }
  } else {
    next.up = true;
    next.read_only = st->read_only;
    next.server_id = st->server_id;
    next.gtid_current_pos = to_string(st->gtid_current_pos);
    next.gtid_binlog_pos = to_string(st->gtid_binlog_pos);
    next.replication_configured = false;
    next.io_running.clear();
    next.sql_running = false;
    next.replication_error.clear();
    for (const auto& r : st->replication) {
      if (!r.connection_name.empty()) continue;
      next.replication_configured = true;
      next.io_running = r.io_running;
      next.sql_running = r.sql_running;
      next.replication_error = !r.last_io_error.empty() ? r.last_io_error : r.last_sql_error;
    }
    if (!next.replication_error.empty()) {
      next.problem = "replication error: " + next.replication_error;
    } else if (next.server_id != spec_.server.server_id) {
      next.problem = fmt::format("server_id is {}, the option file says {} (restart mariadbd)",
                                 next.server_id, spec_.server.server_id);
    } else {
      next.problem.clear();
    }
  }
  bool changed = false;
  {
    const std::lock_guard lock(mutex_);
    changed = next.problem != status_.problem;
    status_ = next;
  }
  if (changed) {
    if (next.problem.empty()) {
      logger().info("local: mariadbd is healthy (read_only {})", next.read_only ? "ON" : "OFF");
    } else {
      logger().warning("local: {}", next.problem);
    }
  }
}

LocalStatus LocalServer::status() const {
  const std::lock_guard lock(mutex_);
  return status_;
}

nlohmann::json LocalServer::status_json() const {
  const LocalStatus s = status();
  nlohmann::json replication = nullptr;
  if (s.replication_configured) {
    replication = {{"io_running", s.io_running},
                   {"sql_running", s.sql_running},
                   {"error", s.replication_error}};
  }
  return nlohmann::json{
      {"healthy", s.problem.empty()},
      {"problem", s.problem},
      {"managed_process", s.managed_process},
      {"pid", s.pid ? nlohmann::json(*s.pid) : nlohmann::json(nullptr)},
      {"adopted", s.adopted},
      {"up", s.up},
      {"read_only", s.read_only},
      {"server_id", s.server_id},
      {"gtid_current_pos", s.gtid_current_pos},
      {"gtid_binlog_pos", s.gtid_binlog_pos},
      {"replication", replication},
      {"restarts", s.restarts},
      {"option_file", spec_.option_file.string()},
      {"datadir", spec_.server.datadir},
      {"socket", spec_.server.socket},
      {"checked_at_ms", s.checked_at_ms},
  };
}

}  // namespace neco::mysql
