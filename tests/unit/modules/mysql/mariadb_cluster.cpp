// Real mariadbd instances for the mysql module's tests (see mariadb_cluster.hpp).
#include "tests/unit/modules/mysql/mariadb_cluster.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <array>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "modules/mysql/server_config.hpp"
#include "tests/support/test_support.hpp"

namespace neco::mysql::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

namespace {

// Sizes for tests: the defaults (128 MiB buffer pool, 96 MiB redo log) cost disk and time.
constexpr std::array<const char*, 2> kSmallServer = {"--innodb-buffer-pool-size=32M",
                                                     "--innodb-log-file-size=4M"};

std::string env_path(const char* var) {
  const char* value = std::getenv(var);
  return value == nullptr ? std::string() : std::string(value);
}

std::string tail(const fs::path& file, std::size_t lines) {
  std::ifstream in(file);
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);)
    all.push_back(line);
  std::ostringstream out;
  for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i) {
    out << all[i] << '\n';
  }
  return out.str();
}

// fork + exec with stdout/stderr into `log`; the child dies with this process.
Expected<pid_t> spawn_process(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (const auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return fail(Errc::internal, fmt::format("cannot open {}", log.string()));
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return fail(Errc::internal, "fork failed");
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fd);
  return pid;
}

// Runs a command to completion (bounded), returning its exit status.
Expected<void> run_bounded(const std::vector<std::string>& args, const fs::path& log,
                           std::chrono::seconds bound) {
  auto pid = spawn_process(args, log);
  if (!pid) return std::unexpected(pid.error());
  const auto deadline = Clock::now() + bound;
  int status = 0;
  while (true) {
    const pid_t r = ::waitpid(*pid, &status, WNOHANG);
    if (r == *pid) break;
    if (Clock::now() > deadline) {
      ::kill(*pid, SIGKILL);
      ::waitpid(*pid, &status, 0);
      return fail(Errc::deadline_exceeded,
                  fmt::format("{} did not finish within {} s", args[0], bound.count()));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return fail(Errc::internal,
                fmt::format("{} failed (status {}):\n{}", args[0], status, tail(log, 40)));
  }
  return {};
}

// Stops a server: SIGTERM, then SIGKILL if it is still there after `bound`.
void stop_process(pid_t pid, milliseconds bound) {
  if (pid <= 0) return;
  ::kill(pid, SIGCONT);  // a paused server cannot act on SIGTERM
  ::kill(pid, SIGTERM);
  const auto deadline = Clock::now() + bound;
  int status = 0;
  while (Clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return;
    std::this_thread::sleep_for(milliseconds(10));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
}

// The process's seed data directory (mariadb-install-db runs once per process: it takes
// seconds), and how long making it took (0 when it already existed). Removed at exit.
Expected<std::pair<fs::path, milliseconds>> seed_datadir(const std::string& install_db) {
  static std::mutex mutex;
  static fs::path seed;
  const std::lock_guard lock(mutex);
  if (!seed.empty()) return std::pair{seed, milliseconds(0)};
  std::string tmpl = (fs::temp_directory_path() / "neco-mariadb-seed-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return fail(Errc::internal, "mkdtemp failed");
  const fs::path root = tmpl;
  const auto start = Clock::now();
  std::vector<std::string> install = {install_db,
                                      "--no-defaults",
                                      "--datadir=" + (root / "data").string(),
                                      "--auth-root-authentication-method=normal",
                                      "--skip-test-db",
                                      "--user=root"};
  install.insert(install.end(), kSmallServer.begin(), kSmallServer.end());
  // Once more on failure (seen once with several test processes starting servers at the same
  // time), from an empty directory; the error is the last attempt's.
  Expected<void> installed;
  for (int attempt = 0; attempt < 2; ++attempt) {
    std::error_code ec;
    fs::remove_all(root / "data", ec);
    installed = run_bounded(install, root / "install-db.log", std::chrono::seconds(60));
    if (installed) break;
    std::fprintf(stderr, "mariadb-install-db attempt %d failed: %s\n", attempt + 1,
                 installed.error().message.c_str());
  }
  if (!installed) {
    std::error_code ec;
    fs::remove_all(root, ec);
    return std::unexpected(installed.error());
  }
  seed = root / "data";
  std::atexit([] {
    std::error_code ec;
    fs::remove_all(seed.parent_path(), ec);
  });
  return std::pair{seed, duration_cast<milliseconds>(Clock::now() - start)};
}

}  // namespace

bool poll_until(const std::function<bool()>& condition, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return condition();
}

void skip_unless_installed() {
  for (const char* var : {"MARIADBD", "MARIADB_INSTALL_DB"}) {
    const std::string path = env_path(var);
    if (path.empty() || ::access(path.c_str(), X_OK) != 0) {
      std::fprintf(stderr,
                   "SKIP: %s not found (install the Debian package mariadb-server; "
                   "tools/install-deps)\n",
                   var);
      std::exit(77);
    }
  }
}

ConnectOptions MariadbCluster::options(std::size_t i, const char* user,
                                       const char* password) const {
  ConnectOptions o;
  o.host = "127.0.0.1";
  o.port = at(i).port;
  o.user = user;
  o.password = password;
  o.connect_timeout = std::chrono::seconds(1);
  o.read_timeout = std::chrono::seconds(2);
  o.write_timeout = std::chrono::seconds(2);
  return o;
}

Expected<void> MariadbCluster::spawn(Instance& instance, const std::string& mariadbd,
                                     const std::vector<std::string>& extra) {
  std::vector<std::string> args = {
      mariadbd, "--defaults-file=" + (instance.dir / "my.cnf").string(), "--user=root",
      "--skip-name-resolve", "--pid-file=" + (instance.dir / "mariadbd.pid").string()};
  args.insert(args.end(), kSmallServer.begin(), kSmallServer.end());
  args.insert(args.end(), extra.begin(), extra.end());
  auto pid = spawn_process(args, instance.dir / "error.log");
  if (!pid) return std::unexpected(pid.error());
  instance.pid = *pid;
  instance.spawned_at = Clock::now();
  return {};
}

Expected<void> MariadbCluster::wait_connectable(Instance& instance, bool create_accounts) {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::seconds(30);
  ConnectOptions root;
  root.unix_socket = instance.socket.string();
  root.user = "root";
  root.connect_timeout = std::chrono::seconds(1);
  while (true) {
    int status = 0;
    if (::waitpid(instance.pid, &status, WNOHANG) == instance.pid) {
      instance.pid = -1;
      return fail(Errc::unavailable,
                  fmt::format("mariadbd {} exited (status {}):\n{}", instance.name, status,
                              tail(instance.dir / "error.log", 20)));
    }
    if (fs::exists(instance.socket)) {
      auto client = Client::connect(root);
      if (client) break;
      if (Clock::now() > deadline) return std::unexpected(client.error());
    } else if (Clock::now() > deadline) {
      return fail(Errc::deadline_exceeded,
                  fmt::format("mariadbd {}: no socket after 30 s:\n{}", instance.name,
                              tail(instance.dir / "error.log", 20)));
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  instance.startup = duration_cast<milliseconds>(Clock::now() - instance.spawned_at);
  if (!create_accounts) return {};

  // Accounts, without binary logging: they are no transaction of the cluster's history.
  auto client = Client::connect(root);
  if (!client) return std::unexpected(client.error());
  for (const std::string& sql : {
           std::string("SET SESSION sql_log_bin = 0"),
           fmt::format("CREATE USER '{}'@'127.0.0.1' IDENTIFIED BY '{}'", kAdminUser,
                       kAdminPassword),
           fmt::format("GRANT ALL PRIVILEGES ON *.* TO '{}'@'127.0.0.1' WITH GRANT OPTION",
                       kAdminUser),
           fmt::format("CREATE USER '{}'@'127.0.0.1' IDENTIFIED BY '{}'", kReplUser, kReplPassword),
           fmt::format("GRANT REPLICATION SLAVE ON *.* TO '{}'@'127.0.0.1'", kReplUser),
           fmt::format("CREATE USER '{}'@'127.0.0.1' IDENTIFIED BY '{}'", kAppUser, kAppPassword),
           fmt::format("GRANT SELECT, INSERT, UPDATE, DELETE, CREATE ON t.* TO '{}'@'127.0.0.1'",
                       kAppUser),
       }) {
    if (auto ok = client->exec(sql); !ok) return ok;
  }
  return {};
}

Expected<std::unique_ptr<MariadbCluster>> MariadbCluster::start(std::size_t replicas) {
  const std::string mariadbd = env_path("MARIADBD");
  const std::string install_db = env_path("MARIADB_INSTALL_DB");
  std::unique_ptr<MariadbCluster> cluster(new MariadbCluster());
  std::string tmpl = (fs::temp_directory_path() / "neco-mariadb-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) return fail(Errc::internal, "mkdtemp failed");
  cluster->root_ = tmpl;

  // One data directory per process, copied for every instance of every cluster.
  auto seed = seed_datadir(install_db);
  if (!seed) return std::unexpected(seed.error());
  cluster->install_db_time_ = seed->second;
  for (std::size_t i = 0; i <= replicas; ++i) {
    Instance instance;
    instance.name = i == 0 ? "primary" : fmt::format("r{}", i);
    instance.server_id = static_cast<std::uint32_t>(i + 1);
    instance.port = neco::testing::free_port();
    instance.dir = cluster->root_ / instance.name;
    instance.socket = instance.dir / "mariadbd.sock";
    std::error_code ec;
    fs::create_directories(instance.dir, ec);
    fs::copy(seed->first, instance.dir / "data", fs::copy_options::recursive, ec);
    if (ec) {
      return fail(Errc::internal, fmt::format("copying the seed data directory: {}", ec.message()));
    }
    ServerConfig config;
    config.server_id = instance.server_id;
    config.port = instance.port;
    config.socket = instance.socket.string();
    config.datadir = (instance.dir / "data").string();
    auto text = render_server_config(config);
    if (!text) return std::unexpected(text.error());
    neco::testing::write_file(instance.dir / "my.cnf", *text);
    cluster->instances_.push_back(std::move(instance));
  }
  // Start all, then wait for all: the servers boot in parallel.
  for (Instance& instance : cluster->instances_) {
    if (auto ok = cluster->spawn(instance, mariadbd); !ok) return std::unexpected(ok.error());
  }
  for (Instance& instance : cluster->instances_) {
    if (auto ok = cluster->wait_connectable(instance); !ok) return std::unexpected(ok.error());
  }

  // Replication: every replica follows the primary by GTID.
  ReplicationSource source;
  source.host = "127.0.0.1";
  source.port = cluster->at(0).port;
  source.user = kReplUser;
  source.password = kReplPassword;
  source.heartbeat_period_ms = 1000;
  source.connect_retry_s = 1;
  auto change = render_change_master(source, ServerConfig{}.slave_net_timeout_s);
  if (!change) return std::unexpected(change.error());
  // The primary's semi-sync side goes on before replicas connect: a replica negotiates
  // semi-sync when its IO thread connects.
  auto primary = cluster->admin(0);
  if (!primary) return std::unexpected(primary.error());
  for (const char* sql :
       {"SET GLOBAL rpl_semi_sync_master_enabled = ON", "SET GLOBAL read_only = OFF"}) {
    if (auto ok = primary->exec(sql); !ok) return std::unexpected(ok.error());
  }
  for (std::size_t i = 1; i <= replicas; ++i) {
    auto client = cluster->admin(i);
    if (!client) return std::unexpected(client.error());
    if (auto ok = client->exec(*change); !ok) return std::unexpected(ok.error());
    if (auto ok = client->exec("START SLAVE"); !ok) return std::unexpected(ok.error());
  }
  // Writes on the primary wait for a semi-sync ack: wait until every replica is connected.
  const bool connected = poll_until(
      [&] {
        auto status = read_instance_status(*primary);
        return status && status->semi_sync_master_clients == replicas;
      },
      std::chrono::seconds(20));
  if (!connected) {
    return fail(Errc::deadline_exceeded,
                fmt::format("not all {} replicas connected to the primary within 20 s", replicas));
  }
  std::fprintf(stderr, "mariadb cluster: install-db %lld ms; startup",
               static_cast<long long>(cluster->install_db_time_.count()));
  for (const Instance& instance : cluster->instances_) {
    std::fprintf(stderr, " %s %lld ms", instance.name.c_str(),
                 static_cast<long long>(instance.startup.count()));
  }
  std::fprintf(stderr, "\n");
  return cluster;
}

MariadbCluster::~MariadbCluster() {
  // Replicas first, so the primary's shutdown does not wait for their disconnects.
  for (auto it = instances_.rbegin(); it != instances_.rend(); ++it) {
    stop_process(it->pid, milliseconds(10000));
  }
  std::error_code ec;
  if (!root_.empty()) fs::remove_all(root_, ec);
}

bool MariadbCluster::wait_applied(std::size_t i, const GtidPosition& target,
                                  milliseconds timeout) const {
  auto client = admin(i);
  if (!client) return false;
  return poll_until(
      [&] {
        auto status = read_instance_status(*client);
        return status && contains(status->gtid_current_pos, target);
      },
      timeout);
}

bool MariadbCluster::pause(std::size_t i) const {
  const pid_t pid = at(i).pid;
  if (::kill(pid, SIGSTOP) != 0) return false;
  // kill() returns before the group stop completes: wait until every thread shows 'T'.
  const fs::path tasks = fs::path("/proc") / std::to_string(pid) / "task";
  return poll_until(
      [&] {
        std::error_code ec;
        for (const auto& task : fs::directory_iterator(tasks, ec)) {
          std::ifstream in(task.path() / "stat");
          std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
          const auto paren = stat.rfind(')');
          if (paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'T') {
            return false;
          }
        }
        return !ec;
      },
      milliseconds(2000));
}
void MariadbCluster::resume(std::size_t i) const {
  ::kill(at(i).pid, SIGCONT);
}

void MariadbCluster::kill(std::size_t i) {
  Instance& instance = instances_.at(i);
  if (instance.pid <= 0) return;
  ::kill(instance.pid, SIGKILL);
  int status = 0;
  ::waitpid(instance.pid, &status, 0);
  instance.pid = -1;
}

Expected<void> MariadbCluster::restart(std::size_t i, const std::vector<std::string>& extra) {
  Instance& instance = instances_.at(i);
  if (instance.pid > 0) {
    return fail(Errc::failed_precondition,
                fmt::format("mariadbd {} is still running (pid {})", instance.name, instance.pid));
  }
  if (auto ok = spawn(instance, env_path("MARIADBD"), extra); !ok) return ok;
  return wait_connectable(instance, false);
}

MariadbCluster& shared_cluster() {
  skip_unless_installed();
  static Expected<std::unique_ptr<MariadbCluster>> cluster = MariadbCluster::start(3);
  if (!cluster) FAIL("starting the MariaDB cluster failed: " << cluster.error().message);
  return **cluster;
}

}  // namespace neco::mysql::testing
