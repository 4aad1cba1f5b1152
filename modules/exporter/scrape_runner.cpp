#include "modules/exporter/scrape_runner.hpp"

#include <exception>
#include <string>

#include "agent/log/log.hpp"

namespace neco::exporter {
namespace {

const log::Logger& logger() {
  static const log::Logger l("exporter");
  return l;
}

// What one collector produced in one scrape.
struct Slot {
  bool done = false;
  bool ok = false;
  double seconds = 0;
  std::vector<metrics::MetricFamily> families;
};

// Shared by a scrape and its tasks; a task finishing after the deadline writes into a round
// nobody reads any more, which is how its result is dropped.
struct Round {
  std::mutex mutex;
  std::condition_variable finished;
  std::vector<Slot> slots;
  std::size_t remaining = 0;
};

}  // namespace

ThreadPool::ThreadPool(std::size_t threads) {
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock lock(mutex_);
          wake_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
          if (tasks_.empty()) return;  // stopping and drained
          task = std::move(tasks_.front());
          tasks_.pop_front();
        }
        task();
      }
    });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_)
    t.join();
}

void ThreadPool::post(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  wake_.notify_one();
}

ScrapeRunner::ScrapeRunner(std::vector<std::unique_ptr<Collector>> collectors, Paths paths,
                           std::chrono::milliseconds timeout)
    : paths_(std::move(paths)),
      timeout_(timeout),
      pool_(collectors.empty() ? 1 : collectors.size()) {
  for (auto& c : collectors) {
    auto e = std::make_unique<Entry>();
    e->collector = std::move(c);
    entries_.push_back(std::move(e));
  }
}

ScrapeRunner::~ScrapeRunner() = default;

void ScrapeRunner::scrape(std::vector<metrics::MetricFamily>& out) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = start + timeout_;
  auto round = std::make_shared<Round>();
  round->slots.resize(entries_.size());

  for (std::size_t i = 0; i < entries_.size(); ++i) {
    Entry* entry = entries_[i].get();
    if (entry->busy.exchange(true)) {
      // Still running from an earlier scrape: not started twice.
      round->slots[i].done = true;
      logger().warning("Collector \"{}\" is still running from an earlier scrape",
                       entry->collector->name());
      continue;
    }
    ++round->remaining;
    pool_.post([round, i, entry, paths = &paths_] {
      const auto t0 = Clock::now();
      std::vector<metrics::MetricFamily> families;
      Expected<void> result;
      try {
        result = entry->collector->collect(*paths, families);
      } catch (const std::exception& e) {
        result = fail(Errc::internal, e.what());
      }
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!result && result.error().code == Errc::unavailable) {
        logger().debug("Collector \"{}\" has no data: {}", entry->collector->name(),
                       result.error().message);
      } else if (!result) {
        logger().warning("Collector \"{}\" failed: {}", entry->collector->name(),
                         result.error().message);
      }
      entry->busy.store(false);
      std::lock_guard lock(round->mutex);
      Slot& slot = round->slots[i];
      slot.done = true;
      slot.ok = result.has_value();
      slot.seconds = seconds;
      if (slot.ok) slot.families = std::move(families);
      --round->remaining;
      round->finished.notify_all();
    });
  }

  std::unique_lock lock(round->mutex);
  round->finished.wait_until(lock, deadline, [&] { return round->remaining == 0; });
  const double waited = std::chrono::duration<double>(Clock::now() - start).count();

  metrics::MetricFamily duration{.name = "node_scrape_collector_duration_seconds",
                                 .help = "node_exporter: Duration of a collector scrape.",
                                 .type = metrics::MetricType::gauge,
                                 .unit = "seconds"};
  metrics::MetricFamily success{.name = "node_scrape_collector_success",
                                .help = "node_exporter: Whether a collector succeeded.",
                                .type = metrics::MetricType::gauge};
  for (std::size_t i = 0; i < entries_.size(); ++i) {
    Slot& slot = round->slots[i];
    const std::string_view name = entries_[i]->collector->name();
    if (!slot.done) {
      logger().warning("Collector \"{}\" missed its {}ms deadline", name, timeout_.count());
      slot.seconds = waited;
    }
    duration.add(slot.seconds, {{"collector", name}});
    success.add(slot.ok ? 1 : 0, {{"collector", name}});
    for (auto& f : slot.families)
      out.push_back(std::move(f));
    slot.families.clear();
  }
  out.push_back(std::move(duration));
  out.push_back(std::move(success));
}

}  // namespace neco::exporter
