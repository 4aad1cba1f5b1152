// What the failover tests against real mariadbd share (failover_test.cpp and
// failover_faults_test.cpp): the test cluster's spec and access, a Writer that records every id
// the servers acknowledged, a Sampler that remembers the most instances ever writable at once,
// a ClusterLoop wrapper that keeps and prints its decisions, and the checks at the end (every
// acknowledged id on an instance). Catch2 macros fail the calling test.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "modules/mysql/cluster_loop.hpp"
#include "tests/unit/modules/mysql/mariadb_cluster.hpp"

namespace neco::mysql::testing {

using Clock = std::chrono::steady_clock;

long long ms_since(Clock::time_point start, Clock::time_point end = Clock::now());

// The cluster's spec with the tests' short policy (300 ms confirmation, 2 s replica silence);
// instance 0 ("primary") is the declared primary.
ClusterSpec spec_of(const MariadbCluster& cluster);
Access access();

// MariadbCluster::start(3) with the table t.w (id BIGINT PRIMARY KEY) the Writer fills; exits
// 77 without MariaDB.
std::unique_ptr<MariadbCluster> start_cluster();

std::size_t index_of(const MariadbCluster& cluster, const std::string& name);

// Inserts increasing ids (from 1) with autocommit as the application user, into whichever
// instance accepts them (a read-only or dead one refuses; it then tries the next), never
// retrying an id whose fate is unknown. Records every id the server acknowledged, when, and
// where.
class Writer {
 public:
  struct Ack {
    std::int64_t id;
    Clock::time_point at;
    std::size_t instance;
  };

  explicit Writer(const MariadbCluster& cluster);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;
  void stop();
  std::vector<Ack> acks() const;
  std::size_t count() const;
  // The first acknowledgement at or after `t` by an instance other than `not_instance`.
  std::optional<Ack> first_after(Clock::time_point t, std::size_t not_instance) const;
  // The last acknowledgement by `instance`, if any.
  std::optional<Ack> last_by(std::size_t instance) const;

 private:
  void run();

  const MariadbCluster& cluster_;
  std::atomic<bool> stop_{false};
  mutable std::mutex mutex_;
  std::vector<Ack> acks_;
  std::thread thread_;
};

// Samples @@read_only of every reachable instance in turn and remembers the most instances
// seen writable in one pass.
class Sampler {
 public:
  explicit Sampler(const MariadbCluster& cluster);
  ~Sampler();
  Sampler(const Sampler&) = delete;
  Sampler& operator=(const Sampler&) = delete;
  void stop();
  int max_writable() const { return max_writable_; }
  int passes() const { return passes_; }

 private:
  void run();

  const MariadbCluster& cluster_;
  std::atomic<bool> stop_{false};
  std::atomic<int> max_writable_{0};
  std::atomic<int> passes_{0};
  std::thread thread_;
};

// The loop (100 ms period), with its last decision kept for the test and every state change,
// operation and error printed to stderr.
struct Loop {
  explicit Loop(const ClusterSpec& spec, ClusterMemory memory = {}, Gate gate = {});
  Decision decision();
  bool settled_on_new_primary(const std::string& old);
  // The kinds of the operations other than none that were decided (executed or not).
  std::vector<std::string> operations();

  const Clock::time_point started = Clock::now();
  std::mutex mutex;
  Decision last;
  std::vector<std::string> operation_kinds;
  ClusterLoop loop;
};

std::set<std::int64_t> ids_on(const MariadbCluster& cluster, std::size_t i);
// Every acknowledged id is on instance i.
void require_all_acked_on(const MariadbCluster& cluster, std::size_t i,
                          const std::vector<Writer::Ack>& acks);
InstanceStatus status_of(const MariadbCluster& cluster, std::size_t i);

}  // namespace neco::mysql::testing
