#include "modules/exporter/scrape_runner.hpp"

#include <algorithm>
#include <exception>
#include <string>

#include "agent/log/log.hpp"
#include "modules/exporter/file_cache.hpp"

namespace neco::exporter {
namespace {

const log::Logger& logger() {
  static const log::Logger l("exporter");
  return l;
}

// What one collector produced in one scrape; written by its task, read by the scrape once
// the pool reports the task done.
struct Slot {
  bool ok = false;
  double seconds = 0;
  std::vector<metrics::MetricFamily> families;
};

}  // namespace

ScrapeRunner::ScrapeRunner(std::vector<std::unique_ptr<Collector>> collectors, Paths paths,
                           std::chrono::milliseconds timeout)
    : paths_(std::make_shared<const Paths>(std::move(paths))),
      timeout_(timeout),
      // One lane for the scrape plus one per collector that may be stuck in a run.
      lanes_(collectors.size() + 1) {
  for (auto& c : collectors) {
    auto e = std::make_shared<Entry>();
    e->collector = std::move(c);
    entries_.push_back(std::move(e));
  }
}

ScrapeRunner::~ScrapeRunner() = default;

void ScrapeRunner::scrape(std::vector<metrics::MetricFamily>& out,
                          std::span<const std::string> only) {
  using Clock = std::chrono::steady_clock;
  struct Run {
    std::string_view name;
    Entry* entry;
    std::shared_ptr<Slot> slot;  // null: not started (a previous run is still going)
  };
  std::vector<Run> runs;
  std::vector<std::function<void()>> tasks;
  for (const auto& entry : entries_) {
    const std::string_view name = entry->collector->name();
    if (!only.empty() && std::find(only.begin(), only.end(), name) == only.end()) continue;
    if (entry->busy.exchange(true)) {
      logger().warning("Collector \"{}\" is still running from an earlier scrape", name);
      runs.push_back({name, entry.get(), nullptr});
      continue;
    }
    auto slot = std::make_shared<Slot>();
    runs.push_back({name, entry.get(), slot});
    tasks.emplace_back([entry, slot, paths = paths_] {
      const auto t0 = Clock::now();
      Expected<void> result;
      try {
        const FileCacheScope files(entry->files);
        result = entry->collector->collect(*paths, slot->families);
      } catch (const std::exception& e) {
        result = fail(Errc::internal, e.what());
      }
      slot->seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      slot->ok = result.has_value();
      if (!result) slot->families.clear();
      // Logged when the collector starts or stops failing, not on every scrape. A missing
      // source (no /proc/pressure on this kernel, say) is routine: debug, as node_exporter.
      if (!result && !entry->failing) {
        const auto code = result.error().code;
        if (code == Errc::not_found || code == Errc::unavailable) {
          logger().debug("Collector \"{}\" has no data: {}", entry->collector->name(),
                         result.error().message);
        } else {
          logger().warning("Collector \"{}\" failed: {}", entry->collector->name(),
                           result.error().message);
        }
      } else if (result && entry->failing) {
        logger().info("Collector \"{}\" succeeds again", entry->collector->name());
      }
      entry->failing = !result;
      entry->busy.store(false);
    });
  }
  const auto outcomes = lanes_.run(std::move(tasks), {.task_timeout = timeout_});

  metrics::MetricFamily duration{.name = "node_scrape_collector_duration_seconds",
                                 .help = "node_exporter: Duration of a collector scrape.",
                                 .type = metrics::MetricType::gauge,
                                 .unit = "seconds"};
  metrics::MetricFamily success{.name = "node_scrape_collector_success",
                                .help = "node_exporter: Whether a collector succeeded.",
                                .type = metrics::MetricType::gauge};
  std::size_t k = 0;  // index into outcomes: one per run that got a task
  for (auto& run : runs) {
    bool ok = false;
    double seconds = 0;
    if (run.slot != nullptr) {
      switch (outcomes[k++]) {
        case LanePool::Outcome::done:
          ok = run.slot->ok;
          seconds = run.slot->seconds;
          if (ok) {
            for (auto& f : run.slot->families)
              out.push_back(std::move(f));
          }
          break;
        case LanePool::Outcome::timed_out:
          logger().warning("Collector \"{}\" missed its {}ms deadline", run.name, timeout_.count());
          seconds = std::chrono::duration<double>(timeout_).count();
          break;
        case LanePool::Outcome::not_run:
          // No lane left (every one is stuck in a collector): it was never started.
          logger().warning("Collector \"{}\" not run: no free lane", run.name);
          run.entry->busy.store(false);
          break;
      }
    }
    duration.add(seconds, {{"collector", run.name}});
    success.add(ok ? 1 : 0, {{"collector", run.name}});
  }
  out.push_back(std::move(duration));
  out.push_back(std::move(success));
}

}  // namespace neco::exporter
