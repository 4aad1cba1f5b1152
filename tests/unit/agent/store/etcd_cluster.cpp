#include "tests/unit/agent/store/etcd_cluster.hpp"

#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace neco::store::testing {

// The CA, client certificate and key a curl handle needs for a TLS cluster (empty for plain).
struct TlsFiles {
  std::string ca, cert, key;
};

namespace {

using namespace std::chrono_literals;

// Forks and execs `argv` (looked up on PATH) with stdout and stderr appended to `log_path`.
// The child gets SIGKILL when its parent dies, so a crashed test leaves no etcd behind. (Linux
// means the forking thread: members must be started from a thread that outlives them.)
pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  std::vector<char*> args;
  for (const auto& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (log_fd < 0 || null_fd < 0) throw std::runtime_error("cannot open " + log_path);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls until exec: the test process has other threads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(null_fd, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    // An inherited client socket of the test would keep that connection open after the test
    // closes it.
    ::close_range(3, ~0U, 0);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(log_fd);
  ::close(null_fd);
  if (pid < 0) throw std::runtime_error("fork failed");
  return pid;
}

void run_command(const std::vector<std::string>& argv, const std::string& log_path) {
  const pid_t pid = spawn(argv, log_path);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(fmt::format("'{}' failed; see {}", fmt::join(argv, " "), log_path));
  }
}

void configure_tls(CURL* h, const TlsFiles& tls) {
  if (tls.ca.empty()) return;
  curl_easy_setopt(h, CURLOPT_CAINFO, tls.ca.c_str());
  curl_easy_setopt(h, CURLOPT_SSLCERT, tls.cert.c_str());
  curl_easy_setopt(h, CURLOPT_SSLKEY, tls.key.c_str());
}

size_t append(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

}  // namespace

std::string EtcdCluster::binary() {
  if (const char* env = std::getenv("NECO_ETCD"); env && *env) return env;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    auto candidate = (dir.empty() ? std::string(".") : dir) + "/etcd";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

EtcdCluster::EtcdCluster(EtcdClusterOptions options)
    : options_(std::move(options)), binary_(binary()) {
  if (binary_.empty()) throw std::runtime_error("etcd is not installed (PATH or $NECO_ETCD)");
  curl_global_init(CURL_GLOBAL_DEFAULT);
  static std::atomic<int> sequence{0};
  token_ = fmt::format("neco-test-{}-{}", ::getpid(), sequence++);
  if (options_.tls) make_certificates();
  const std::string scheme = options_.tls ? "https" : "http";
  members_.resize(options_.members);
  for (size_t i = 0; i < members_.size(); ++i) {
    auto& m = members_[i];
    m.name = fmt::format("m{}", i);
    m.client_port = neco::testing::free_port();
    m.peer_port = neco::testing::free_port();
    m.client_url = fmt::format("{}://127.0.0.1:{}", scheme, m.client_port);
    m.peer_url = fmt::format("http://127.0.0.1:{}", m.peer_port);
    initial_cluster_ += fmt::format("{}{}={}", i == 0 ? "" : ",", m.name, m.peer_url);
  }
  for (size_t i = 0; i < members_.size(); ++i)
    start(i);
  for (size_t i = 0; i < members_.size(); ++i) {
    if (!wait_healthy(i, 30s)) {
      auto message = fmt::format("etcd member {} did not become healthy; log:\n{}",
                                 members_[i].name, log_tail(i));
      for (size_t k = 0; k < members_.size(); ++k)
        kill(k);
      throw std::runtime_error(message);
    }
  }
}

EtcdCluster::~EtcdCluster() {
  for (size_t i = 0; i < members_.size(); ++i)
    kill(i);
}

std::vector<std::string> EtcdCluster::client_endpoints() const {
  std::vector<std::string> out;
  for (const auto& m : members_)
    out.push_back(m.client_url);
  return out;
}

void EtcdCluster::make_certificates() {
  const auto log = dir_.file("openssl.log");
  const std::vector<std::string> ec_key = {"-newkey", "ec", "-pkeyopt",
                                           "ec_paramgen_curve:prime256v1", "-nodes"};
  auto with = [](std::vector<std::string> a, const std::vector<std::string>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  run_command(with(with({"openssl", "req", "-x509"}, ec_key),
                   {"-keyout", dir_.file("ca.key"), "-out", ca_file(), "-days", "2", "-subj",
                    "/CN=neco-test-ca", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign"}),
              log);
  for (const std::string name : {"server", "client"}) {
    neco::testing::write_file(dir_ / (name + ".ext"),
                              name == "server"
                                  // etcd's gateway dials its own gRPC port with
                                  // the server certificate: it must be a client one too.
                                  ? "subjectAltName=IP:127.0.0.1\n"
                                    "extendedKeyUsage=serverAuth,clientAuth\n"
                                  : "extendedKeyUsage=clientAuth\n");
    run_command(with(with({"openssl", "req"}, ec_key),
                     {"-keyout", dir_.file(name + ".key"), "-out", dir_.file(name + ".csr"),
                      "-subj", "/CN=neco-test-" + name}),
                log);
    run_command({"openssl", "x509", "-req", "-in", dir_.file(name + ".csr"), "-CA", ca_file(),
                 "-CAkey", dir_.file("ca.key"), "-CAcreateserial", "-out", dir_.file(name + ".crt"),
                 "-days", "2", "-extfile", dir_.file(name + ".ext")},
                log);
  }
}

std::vector<std::string> EtcdCluster::member_args(size_t i) const {
  const auto& m = members_[i];
  std::vector<std::pair<std::string, std::string>> flags = {
      {"--name", m.name},
      {"--data-dir", dir_.file(m.name + ".etcd")},
      {"--listen-client-urls", m.client_url},
      {"--advertise-client-urls", m.client_url},
      {"--listen-peer-urls", m.peer_url},
      {"--initial-advertise-peer-urls", m.peer_url},
      {"--initial-cluster", initial_cluster_},
      // Ignored when the data dir exists, which is how start() restarts a member.
      {"--initial-cluster-state", "new"},
      {"--initial-cluster-token", token_},
      // Fast elections (the defaults are 100/1000): failover tests wait less.
      {"--heartbeat-interval", "50"},
      {"--election-timeout", "500"},
      {"--experimental-watch-progress-notify-interval", options_.progress_notify_interval},
      {"--logger", "zap"},
      {"--log-outputs", "stderr"},
  };
  if (options_.tls) {
    flags.insert(flags.end(), {{"--cert-file", dir_.file("server.crt")},
                               {"--key-file", dir_.file("server.key")},
                               {"--trusted-ca-file", ca_file()},
                               {"--client-cert-auth", "true"}});
  }
  std::vector<std::string> args = {binary_};
  for (auto& [flag, value] : flags)
    args.push_back(flag + "=" + value);
  return args;
}

void EtcdCluster::start(size_t i) {
  auto& m = members_.at(i);
  if (m.pid > 0) return;
  m.pid = spawn(member_args(i), dir_.file(m.name + ".log"));
}

void EtcdCluster::reap(size_t i) {
  auto& m = members_.at(i);
  int status = 0;
  while (::waitpid(m.pid, &status, 0) < 0 && errno == EINTR) {
  }
  m.pid = 0;
}

void EtcdCluster::stop(size_t i) {
  auto& m = members_.at(i);
  if (m.pid <= 0) return;
  ::kill(m.pid, SIGCONT);  // a paused member could not act on SIGTERM
  ::kill(m.pid, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(m.pid, &status, WNOHANG);
    if (r == m.pid || (r < 0 && errno != EINTR)) break;
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(m.pid, SIGKILL);
      ::waitpid(m.pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(5ms);
  }
  m.pid = 0;
}

void EtcdCluster::kill(size_t i) {
  auto& m = members_.at(i);
  if (m.pid <= 0) return;
  ::kill(m.pid, SIGKILL);
  reap(i);
}

void EtcdCluster::pause(size_t i) {
  auto& m = members_.at(i);
  if (m.pid <= 0) return;
  ::kill(m.pid, SIGSTOP);
  int status = 0;
  ::waitpid(m.pid, &status, WUNTRACED);  // returns once it is really stopped
}

void EtcdCluster::resume(size_t i) {
  auto& m = members_.at(i);
  if (m.pid > 0) ::kill(m.pid, SIGCONT);
}

TlsFiles EtcdCluster::tls_files() const {
  if (!options_.tls) return {};
  return {ca_file(), client_cert_file(), client_key_file()};
}

bool EtcdCluster::healthy(size_t i) {
  std::unique_ptr<CURL, void (*)(CURL*)> h(curl_easy_init(), curl_easy_cleanup);
  if (!h) return false;
  std::string body;
  const auto url = members_[i].client_url + "/health";
  curl_easy_setopt(h.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(h.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h.get(), CURLOPT_NOPROXY, "*");
  curl_easy_setopt(h.get(), CURLOPT_TIMEOUT_MS, 1000L);
  curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, append);
  curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &body);
  const auto tls = tls_files();
  configure_tls(h.get(), tls);
  long status = 0;
  if (curl_easy_perform(h.get()) != CURLE_OK) return false;
  curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &status);
  return status == 200 && body.find("\"health\":\"true\"") != std::string::npos;
}

bool EtcdCluster::wait_healthy(size_t i, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!running(i)) return false;
    if (healthy(i)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

bool EtcdCluster::wait_all_healthy(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (size_t i = 0; i < members_.size(); ++i) {
    if (!running(i)) continue;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!wait_healthy(i, std::max(left, std::chrono::milliseconds(1)))) return false;
  }
  return true;
}

std::string EtcdCluster::post(const std::string& path, const std::string& body) {
  for (const auto& m : members_) {
    if (m.pid <= 0) continue;
    std::unique_ptr<CURL, void (*)(CURL*)> h(curl_easy_init(), curl_easy_cleanup);
    std::string answer;
    const auto url = m.client_url + path;
    curl_easy_setopt(h.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(h.get(), CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h.get(), CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h.get(), CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(h.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, append);
    curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &answer);
    const auto tls = tls_files();
    configure_tls(h.get(), tls);
    long status = 0;
    if (curl_easy_perform(h.get()) != CURLE_OK) continue;
    curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &status);
    if (status == 200) return answer;
  }
  return {};
}

void EtcdCluster::revoke_all_leases() {
  auto answer = post("/v3/lease/leases", "{}");
  if (answer.empty()) throw std::runtime_error("cannot list leases");
  auto leases = nlohmann::json::parse(answer).value("leases", nlohmann::json::array());
  for (const auto& l : leases) {
    nlohmann::json req = {{"ID", l.at("ID")}};
    post("/v3/lease/revoke", req.dump());  // a lease that expired meanwhile is fine
  }
}

std::string EtcdCluster::log_tail(size_t i, size_t lines) const {
  std::ifstream in(dir_.file(members_.at(i).name + ".log"));
  std::vector<std::string> all;
  for (std::string line; std::getline(in, line);)
    all.push_back(std::move(line));
  std::string out;
  for (size_t k = all.size() > lines ? all.size() - lines : 0; k < all.size(); ++k)
    out += all[k] + "\n";
  return out;
}

}  // namespace neco::store::testing
