// Runs the enabled collectors of one scrape concurrently on threads of its own, each bounded
// by a deadline, and adds node_exporter's per-collector duration and success gauges.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "modules/exporter/collector.hpp"

namespace neco::exporter {

// A fixed set of threads draining a task queue. Destruction waits for running tasks.
class ThreadPool {
 public:
  explicit ThreadPool(std::size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues a task; it runs on one of the pool's threads.
  void post(std::function<void()> task);

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

class ScrapeRunner {
 public:
  // One pool thread per collector: at most one run of each is in flight, so a hung collector
  // never delays another.
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
  };

  std::vector<std::unique_ptr<Entry>> entries_;
  Paths paths_;
  std::chrono::milliseconds timeout_;
  ThreadPool pool_;  // declared last: destroyed (joined) before the entries its tasks use
};

}  // namespace neco::exporter
