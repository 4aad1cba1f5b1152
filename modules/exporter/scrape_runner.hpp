// Runs the enabled collectors of one scrape off the scraping thread, each bounded by its own
// deadline, and adds node_exporter's per-collector duration and success gauges.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "modules/exporter/collector.hpp"
#include "modules/exporter/file_cache.hpp"
#include "modules/exporter/lane_pool.hpp"

namespace neco::exporter {

class ScrapeRunner {
 public:
  // Collectors run one after another on a lane of a LanePool (one wake-up per scrape); one
  // that misses its deadline keeps its lane and the rest go on on another, so a hung
  // collector never delays another. At most one run of each collector is in flight.
  ScrapeRunner(std::vector<std::unique_ptr<Collector>> collectors, Paths paths,
               std::chrono::milliseconds timeout);
  ~ScrapeRunner();
  ScrapeRunner(const ScrapeRunner&) = delete;
  ScrapeRunner& operator=(const ScrapeRunner&) = delete;

  // Runs the collectors named in `only` (every one when empty) and appends their families
  // plus node_scrape_collector_*; returns within about the timeout. A collector that misses
  // it, or whose previous run is still going, contributes nothing and reports success 0.
  void scrape(std::vector<metrics::MetricFamily>& out, std::span<const std::string> only = {});

 private:
  struct Entry {
    std::unique_ptr<Collector> collector;
    std::atomic<bool> busy{false};  // a run is in flight (possibly from an earlier scrape)
    bool failing = false;           // its last run failed; only its (serial) runs touch it
    FileCache files;                // its open pseudo files, kept between runs
  };

  // Shared with the lane tasks: a collector still running when the runner goes away keeps
  // its entry and the paths alive.
  std::vector<std::shared_ptr<Entry>> entries_;
  std::shared_ptr<const Paths> paths_;
  std::chrono::milliseconds timeout_;
  LanePool lanes_;
};

}  // namespace neco::exporter
