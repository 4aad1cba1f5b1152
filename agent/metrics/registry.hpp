// The agent's one metrics registry: counters, gauges and histograms with label sets, plus
// collectors that produce whole families at scrape time.
//
// Hot path: a module looks a child up once (`family.with({"GET", "200"})`), keeps the
// reference (stable for the registry's life) and then each inc()/set()/observe() is one
// relaxed atomic operation, no lock, no map lookup.
//
// Declaration errors (bad name, bad label name, the same name declared again with another
// type, labels, unit or buckets) are programming errors: metric names are constants in code.
// try_counter()/try_gauge()/try_histogram() return them as neco::Expected (used by tests and
// by code declaring metrics from runtime data); counter()/gauge()/histogram() log the error
// and abort, so a typo fails the first test run instead of silently dropping a metric.
// Declaring the identical family twice returns the existing one.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agent/metrics/metric_family.hpp"
#include "agent/util/error.hpp"

namespace neco::metrics {

// What a module declares about one family; designated initialisers keep declarations short:
// `reg.counter({.name = "neco_http_requests_total", .help = "...", .labels = {"code"}})`.
struct Desc {
  std::string name;                 // full metric name; counters must end in "_total"
  std::string help;                 // one line saying what is counted
  std::vector<std::string> labels;  // label names, in exposition order
  std::string unit;                 // optional OpenMetrics unit ("seconds", "bytes")
  std::vector<double> buckets;      // histograms only: upper bounds, empty = default_buckets()
};

// Prometheus' default latency buckets, in seconds: .005 … 10.
std::span<const double> default_buckets() noexcept;
// `count` bounds start, start*factor, … (start > 0, factor > 1).
std::vector<double> exponential_buckets(double start, double factor, std::size_t count);
// `count` bounds start, start+width, … (width > 0).
std::vector<double> linear_buckets(double start, double width, std::size_t count);

// Base of every child so a family can snapshot children of any type; the hot-path members of
// the derived classes are not virtual.
class ChildBase {
 public:
  virtual ~ChildBase() = default;
  // Appends this child's samples to `out`, with `labels` (the family's names and this child's
  // values) on each.
  virtual void snapshot(MetricFamily& out, std::span<const LabelView> labels) const = 0;
};

// A monotonically increasing value.
class Counter final : public ChildBase {
 public:
  // Adds n; one relaxed integer fetch_add.
  void inc(std::uint64_t n = 1) noexcept { whole_.fetch_add(n, std::memory_order_relaxed); }
  // Adds a non-integral amount (e.g. CPU seconds); negative or NaN amounts are ignored because
  // a counter never goes down.
  void add(double amount) noexcept;
  // The current value.
  double value() const noexcept;
  void snapshot(MetricFamily& out, std::span<const LabelView> labels) const override;

 private:
  // Integer increments stay exact beyond 2^53 and need no CAS loop; fractional ones go apart.
  std::atomic<std::uint64_t> whole_{0};
  std::atomic<double> fraction_{0};
};

// A value that goes up and down.
class Gauge final : public ChildBase {
 public:
  // Sets the value.
  void set(double value) noexcept { value_.store(value, std::memory_order_relaxed); }
  // Adds `amount` (may be negative).
  void add(double amount) noexcept { value_.fetch_add(amount, std::memory_order_relaxed); }
  // Adds 1 (or `amount`).
  void inc(double amount = 1) noexcept { add(amount); }
  // Subtracts 1 (or `amount`).
  void dec(double amount = 1) noexcept { add(-amount); }
  // The current value.
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }
  void snapshot(MetricFamily& out, std::span<const LabelView> labels) const override;

 private:
  std::atomic<double> value_{0};
};

// Observations counted in buckets with upper bounds `le`, plus their sum and count.
class Histogram final : public ChildBase {
 public:
  // `bounds`: ascending, finite, owned by the family (outlives the child).
  explicit Histogram(std::span<const double> bounds);
  // Records one observation: a bucket increment and a sum add, both relaxed.
  void observe(double value) noexcept;
  // Observations so far (the +Inf bucket).
  std::uint64_t count() const noexcept;
  // Sum of observations so far.
  double sum() const noexcept { return sum_.load(std::memory_order_relaxed); }
  // Cumulative count of observations <= bounds[i] (i < bounds.size()).
  std::uint64_t cumulative_count(std::size_t i) const noexcept;
  void snapshot(MetricFamily& out, std::span<const LabelView> labels) const override;

 private:
  std::span<const double> bounds_;
  // Per-bucket (not cumulative) counts, bounds_.size() + 1 entries (the last is +Inf), so an
  // observation touches one counter; cumulating happens at scrape time.
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  std::atomic<double> sum_{0};
};

// Type-independent part of a family: its description and its children by label values.
class FamilyBase {
 public:
  FamilyBase(Desc desc, MetricType type);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;

  // The declaration this family was created from (buckets filled in for histograms).
  const Desc& desc() const { return desc_; }
  // The family's type.
  MetricType type() const { return type_; }
  // Appends this family with all its children, ordered by label values.
  void snapshot(std::vector<MetricFamily>& out) const;

 protected:
  // The child for these label values, created on first use; aborts on a wrong value count
  // (a programming error, like indexing past an array).
  ChildBase& child(std::span<const std::string_view> values);
  // Creates a child of the concrete type.
  virtual std::unique_ptr<ChildBase> make_child() const = 0;

 private:
  // Transparent so lookups by string_view values allocate nothing.
  struct KeyLess {
    using is_transparent = void;
    template <class A, class B>
    bool operator()(const A& a, const B& b) const {
      return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
    }
  };

  Desc desc_;
  MetricType type_;
  mutable std::mutex mutex_;  // guards children_ (map shape only; values are atomics)
  std::map<std::vector<std::string>, std::unique_ptr<ChildBase>, KeyLess> children_;
};

// A family of children of one type; with() returns a reference stable for the family's life.
template <class Child>
class Family final : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;
  // The child for these label values (in declared label order); cache the reference.
  Child& with(std::initializer_list<std::string_view> values = {}) {
    return static_cast<Child&>(child({values.begin(), values.size()}));
  }
  // Same, for label values known only at run time.
  Child& with(std::span<const std::string_view> values) {
    return static_cast<Child&>(child(values));
  }

 private:
  std::unique_ptr<ChildBase> make_child() const override;
};

extern template class Family<Counter>;
extern template class Family<Gauge>;
extern template class Family<Histogram>;

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// Produces whole families at scrape time by appending to the vector it is given. Runs on the
// scraping thread, never concurrently with itself (scrapes serialise on collectors); must not
// add or remove collectors.
using Collector = std::function<void(std::vector<MetricFamily>& out)>;

// What a scraper asked for beyond the format: the URL query of its request, in order, names
// possibly repeated (node_exporter's `collect[]=cpu&collect[]=meminfo`). Empty for internal
// collections.
struct ScrapeRequest {
  std::vector<std::pair<std::string, std::string>> query;

  // Every value of a parameter, in request order.
  std::vector<std::string_view> values(std::string_view name) const;
};

// A collector that reads the scrape request and may refuse it. An error with
// Errc::invalid_argument rejects the whole scrape (the endpoint answers 400 with its message);
// any other error is logged and drops only this collector's output. Same threading contract
// as Collector.
using RequestCollector =
    std::function<Expected<void>(const ScrapeRequest& request, std::vector<MetricFamily>& out)>;

class Registry;

// Keeps a collector registered; destroying (or reset()) unregisters it and waits for a scrape
// running it to finish, so the callback may capture `this` of its owner safely. The registry
// must outlive its handles (it is the agent's, created first and destroyed last). Do not
// destroy a handle while holding a lock its callback takes (that wait would deadlock).
class CollectorHandle {
 public:
  CollectorHandle() = default;
  CollectorHandle(CollectorHandle&& other) noexcept;
  CollectorHandle& operator=(CollectorHandle&& other) noexcept;
  CollectorHandle(const CollectorHandle&) = delete;
  CollectorHandle& operator=(const CollectorHandle&) = delete;
  ~CollectorHandle() { reset(); }

  // Unregisters now (idempotent).
  void reset() noexcept;
  // Whether a collector is still registered through this handle.
  explicit operator bool() const { return registry_ != nullptr; }

 private:
  friend class Registry;
  CollectorHandle(Registry* registry, std::uint64_t id) : registry_(registry), id_(id) {}

  Registry* registry_ = nullptr;
  std::uint64_t id_ = 0;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Declares (or finds the identical) counter family; errors as values.
  Expected<CounterFamily*> try_counter(Desc desc);
  // Declares (or finds the identical) gauge family; errors as values.
  Expected<GaugeFamily*> try_gauge(Desc desc);
  // Declares (or finds the identical) histogram family; errors as values.
  Expected<HistogramFamily*> try_histogram(Desc desc);

  // Declares a counter family; aborts with a logged message on a declaration error.
  CounterFamily& counter(Desc desc);
  // Declares a gauge family; aborts with a logged message on a declaration error.
  GaugeFamily& gauge(Desc desc);
  // Declares a histogram family; aborts with a logged message on a declaration error.
  HistogramFamily& histogram(Desc desc);

  // Registers a scrape-time collector; it runs until the handle is destroyed.
  [[nodiscard]] CollectorHandle add_collector(Collector collector);
  // Registers a collector that sees (and may refuse) the scrape request.
  [[nodiscard]] CollectorHandle add_collector(RequestCollector collector);

  // Snapshot of every family and every collector's output, unsorted and unvalidated; the
  // exposition sorts, validates and merges.
  std::vector<MetricFamily> collect() const;
  // The same for a scraper's request; fails with the first collector's invalid_argument when
  // a collector refuses the request (nothing is returned then).
  Expected<std::vector<MetricFamily>> collect(const ScrapeRequest& request) const;

  // Number of registered collectors (for tests and /status).
  std::size_t collector_count() const;

 private:
  friend class CollectorHandle;
  Expected<FamilyBase*> declare(Desc desc, MetricType type);
  void remove_collector(std::uint64_t id) noexcept;

  mutable std::mutex families_mutex_;  // guards families_
  std::map<std::string, std::unique_ptr<FamilyBase>, std::less<>> families_;

  // Held while collectors run, so removal waits for a running scrape: "handle destroyed"
  // means "callback no longer running". Scrapes are rare; serialising them is cheap.
  mutable std::mutex collectors_mutex_;
  std::map<std::uint64_t, RequestCollector> collectors_;
  std::uint64_t next_collector_id_ = 1;
};

}  // namespace neco::metrics
