// The shared pieces of the failover tests against real mariadbd (see failover_harness.hpp).
#include "tests/unit/modules/mysql/failover_harness.hpp"

#include <fmt/format.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdio>

namespace neco::mysql::testing {

using std::chrono::milliseconds;

long long ms_since(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration_cast<milliseconds>(end - start).count();
}

ClusterSpec spec_of(const MariadbCluster& cluster) {
  ClusterSpec spec;
  spec.name = "test";
  for (const auto& instance : cluster.instances()) {
    spec.instances.push_back(
        {instance.name, "127.0.0.1", instance.port, instance.name == "primary"});
  }
  spec.policy.failure_confirm = milliseconds(300);
  spec.policy.replica_silence = milliseconds(2000);
  spec.policy.relay_apply_timeout = milliseconds(3000);
  spec.policy.kill_grace = milliseconds(200);
  spec.policy.catchup_timeout = milliseconds(3000);
  REQUIRE(validate(spec));
  return spec;
}

Access access() {
  Access a;
  a.admin_user = kAdminUser;
  a.admin_password = kAdminPassword;
  a.repl_user = kReplUser;
  a.repl_password = kReplPassword;
  return a;
}

std::unique_ptr<MariadbCluster> start_cluster() {
  skip_unless_installed();
  auto cluster = MariadbCluster::start(3);
  if (!cluster) FAIL("starting the MariaDB cluster failed: " << cluster.error().message);
  auto admin = (*cluster)->admin(0);
  REQUIRE(admin);
  REQUIRE(admin->exec("CREATE DATABASE t"));
  REQUIRE(admin->exec("CREATE TABLE t.w (id BIGINT PRIMARY KEY, at TIMESTAMP(6) DEFAULT NOW(6))"));
  return std::move(*cluster);
}

std::size_t index_of(const MariadbCluster& cluster, const std::string& name) {
  for (std::size_t i = 0; i < cluster.instances().size(); ++i) {
    if (cluster.at(i).name == name) return i;
  }
  FAIL("no instance " << name);
  return 0;
}

Writer::Writer(const MariadbCluster& cluster) : cluster_(cluster) {
  thread_ = std::thread([this] { run(); });
}

Writer::~Writer() {
  stop();
}

void Writer::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

std::vector<Writer::Ack> Writer::acks() const {
  const std::lock_guard lock(mutex_);
  return acks_;
}

std::size_t Writer::count() const {
  const std::lock_guard lock(mutex_);
  return acks_.size();
}

std::optional<Writer::Ack> Writer::first_after(Clock::time_point t,
                                               std::size_t not_instance) const {
  const std::lock_guard lock(mutex_);
  for (const Ack& ack : acks_) {
    if (ack.at >= t && ack.instance != not_instance) return ack;
  }
  return std::nullopt;
}

std::optional<Writer::Ack> Writer::last_by(std::size_t instance) const {
  const std::lock_guard lock(mutex_);
  for (auto it = acks_.rbegin(); it != acks_.rend(); ++it) {
    if (it->instance == instance) return *it;
  }
  return std::nullopt;
}

void Writer::run() {
  std::size_t target = 0;
  std::optional<Client> client;
  std::int64_t next_id = 1;
  while (!stop_) {
    if (!client) {
      auto c = Client::connect(cluster_.options(target, kAppUser, kAppPassword));
      if (c) client = std::move(*c);
    }
    const std::int64_t id = next_id++;
    if (client && client->exec(fmt::format("INSERT INTO t.w (id) VALUES ({})", id))) {
      const std::lock_guard lock(mutex_);
      acks_.push_back({id, Clock::now(), target});
      continue;
    }
    client.reset();
    target = (target + 1) % cluster_.instances().size();
    std::this_thread::sleep_for(milliseconds(5));
  }
}

Sampler::Sampler(const MariadbCluster& cluster) : cluster_(cluster) {
  thread_ = std::thread([this] { run(); });
}

Sampler::~Sampler() {
  stop();
}

void Sampler::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void Sampler::run() {
  std::vector<std::optional<Client>> clients(cluster_.instances().size());
  while (!stop_) {
    int writable = 0;
    for (std::size_t i = 0; i < clients.size(); ++i) {
      if (!clients[i]) {
        auto c = cluster_.admin(i);
        if (!c) continue;
        clients[i] = std::move(*c);
      }
      auto rows = clients[i]->query("SELECT @@read_only");
      if (!rows) {
        clients[i].reset();
        continue;
      }
      if (rows->rows.at(0).at(0) == "0") ++writable;
    }
    max_writable_ = std::max(max_writable_.load(), writable);
    ++passes_;
    std::this_thread::sleep_for(milliseconds(10));
  }
}

Loop::Loop(const ClusterSpec& spec, ClusterMemory memory, Gate gate)
    : loop(
          spec, access(), std::move(memory), milliseconds(100),
          [this](const RunResult& r, const ClusterMemory&) {
            const std::lock_guard lock(mutex);
            const bool changed = r.decision.state != last.state;
            const bool operation = !std::holds_alternative<op::None>(r.decision.operation);
            last = r.decision;
            if (operation) operation_kinds.emplace_back(kind(r.decision.operation));
            if (changed || operation || r.error) {
              std::fprintf(stderr, "  loop +%lld ms: %s: %s -> %s%s%s\n", ms_since(started),
                           std::string(to_string(r.decision.state)).c_str(),
                           r.decision.reason.c_str(), describe(r.decision.operation).c_str(),
                           r.error ? " FAILED: " : "", r.error ? r.error->message.c_str() : "");
            }
          },
          std::move(gate)) {}

Decision Loop::decision() {
  const std::lock_guard lock(mutex);
  return last;
}

bool Loop::settled_on_new_primary(const std::string& old) {
  const ClusterMemory m = loop.memory();
  return !m.failover && !m.primary.empty() && m.primary != old;
}

std::vector<std::string> Loop::operations() {
  const std::lock_guard lock(mutex);
  return operation_kinds;
}

std::set<std::int64_t> ids_on(const MariadbCluster& cluster, std::size_t i) {
  auto admin = cluster.admin(i);
  REQUIRE(admin);
  auto rows = admin->query("SELECT id FROM t.w");
  REQUIRE(rows);
  std::set<std::int64_t> ids;
  for (const auto& row : rows->rows)
    ids.insert(std::stoll(*row.at(0)));
  return ids;
}

void require_all_acked_on(const MariadbCluster& cluster, std::size_t i,
                          const std::vector<Writer::Ack>& acks) {
  const auto ids = ids_on(cluster, i);
  std::size_t missing = 0;
  for (const auto& ack : acks)
    missing += ids.count(ack.id) == 0 ? 1 : 0;
  INFO(acks.size() << " acknowledged ids, " << ids.size() << " on " << cluster.at(i).name);
  CHECK(missing == 0);
}

InstanceStatus status_of(const MariadbCluster& cluster, std::size_t i) {
  auto admin = cluster.admin(i);
  REQUIRE(admin);
  auto status = read_instance_status(*admin);
  REQUIRE(status);
  return *status;
}

}  // namespace neco::mysql::testing
