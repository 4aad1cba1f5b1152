// A real etcd cluster for tests and benchmarks: N members of the installed etcd on 127.0.0.1
// free ports, with their data and logs in a temp dir, tuned for fast elections. Members can
// be stopped, killed, paused and restarted to exercise failover.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace neco::store::testing {

struct TlsFiles;

struct EtcdClusterOptions {
  size_t members = 3;
  // Client URLs become https with --client-cert-auth; a CA, a server certificate for
  // IP:127.0.0.1 and a client certificate are made with the openssl CLI. Peers stay plain.
  bool tls = false;
  // etcd's --experimental-watch-progress-notify-interval (10m by default, far too slow for
  // tests that need a quiet watch to prove it is alive).
  std::string progress_notify_interval = "500ms";
};

class EtcdCluster {
 public:
  // The etcd binary to run ($NECO_ETCD, else "etcd" on PATH); empty when there is none.
  static std::string binary();

  // Starts every member and waits until each reports healthy; throws std::runtime_error with
  // the tail of the failing member's log otherwise.
  explicit EtcdCluster(EtcdClusterOptions options = {});
  // Kills every member and removes the directory.
  ~EtcdCluster();
  EtcdCluster(const EtcdCluster&) = delete;
  EtcdCluster& operator=(const EtcdCluster&) = delete;

  size_t size() const { return members_.size(); }
  std::vector<std::string> client_endpoints() const;
  const std::string& client_endpoint(size_t i) const { return members_.at(i).client_url; }

  // SIGTERM, then waits for the exit (SIGKILL after 10 s).
  void stop(size_t i);
  // SIGKILL and reap.
  void kill(size_t i);
  // SIGSTOP / SIGCONT: the member keeps its sockets but answers nothing.
  void pause(size_t i);
  void resume(size_t i);
  // Starts a stopped or killed member again on its data dir and ports.
  void start(size_t i);
  bool running(size_t i) const { return members_.at(i).pid > 0; }

  // Whether member i answers GET /health with "true" within `timeout`.
  bool wait_healthy(size_t i, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Every running member healthy (resumes none: a paused member never becomes healthy).
  bool wait_all_healthy(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // Revokes every lease, for tests that need a store free of leftovers of earlier ones.
  void revoke_all_leases();

  // TLS material (tls mode only): the CA that signed the server, and the client cert and key.
  std::string ca_file() const { return dir_.file("ca.crt"); }
  std::string client_cert_file() const { return dir_.file("client.crt"); }
  std::string client_key_file() const { return dir_.file("client.key"); }

  // The last lines of member i's log, for failure messages.
  std::string log_tail(size_t i, size_t lines = 20) const;

 private:
  struct Member {
    std::string name;
    uint16_t client_port = 0;
    uint16_t peer_port = 0;
    std::string client_url;
    std::string peer_url;
    pid_t pid = 0;
  };

  void make_certificates();
  std::vector<std::string> member_args(size_t i) const;
  void reap(size_t i);
  // POSTs `body` to `path` on the first running member; the answer body, or "" on failure.
  std::string post(const std::string& path, const std::string& body);
  bool healthy(size_t i);
  TlsFiles tls_files() const;

  EtcdClusterOptions options_;
  neco::testing::TempDir dir_;
  std::string binary_;
  std::string token_;
  std::string initial_cluster_;
  std::vector<Member> members_;
};

}  // namespace neco::store::testing
