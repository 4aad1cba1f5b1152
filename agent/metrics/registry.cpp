#include "agent/metrics/registry.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <cstdlib>
#include <exception>
#include <set>
#include <type_traits>

#include "agent/log/log.hpp"

namespace neco::metrics {

namespace {

const log::Logger& logger() {
  static const log::Logger instance("metrics");
  return instance;
}

constexpr double kDefaultBuckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};

// Checks everything about a declaration that does not depend on other families, and fills in
// default buckets.
Expected<Desc> validate(Desc desc, MetricType type) {
  if (!valid_metric_name(desc.name)) {
    return fail(Errc::invalid_argument,
                fmt::format("invalid metric name \"{}\": want [a-zA-Z_][a-zA-Z0-9_]* without a "
                            "\"__\" prefix",
                            desc.name));
  }
  if (type == MetricType::counter && !desc.name.ends_with("_total")) {
    return fail(Errc::invalid_argument,
                fmt::format("counter \"{}\" must end in \"_total\"", desc.name));
  }
  if (type == MetricType::histogram &&
      (desc.name.ends_with("_bucket") || desc.name.ends_with("_sum") ||
       desc.name.ends_with("_count"))) {
    return fail(Errc::invalid_argument,
                fmt::format("histogram \"{}\" must not end in _bucket, _sum or _count", desc.name));
  }
  std::set<std::string_view> seen;
  for (const auto& label : desc.labels) {
    if (!valid_label_name(label)) {
      return fail(Errc::invalid_argument,
                  fmt::format("metric \"{}\": invalid label name \"{}\"", desc.name, label));
    }
    if (type == MetricType::histogram && label == "le") {
      return fail(Errc::invalid_argument,
                  fmt::format("histogram \"{}\": label \"le\" is reserved", desc.name));
    }
    if (!seen.insert(label).second) {
      return fail(Errc::invalid_argument,
                  fmt::format("metric \"{}\": duplicate label name \"{}\"", desc.name, label));
    }
  }
  if (!valid_unit_for(desc.name, type, desc.unit)) {
    return fail(Errc::invalid_argument,
                fmt::format("metric \"{}\": unit \"{}\" must be the name's last component",
                            desc.name, desc.unit));
  }
  if (type == MetricType::histogram) {
    if (desc.buckets.empty()) {
      desc.buckets.assign(std::begin(kDefaultBuckets), std::end(kDefaultBuckets));
    }
    // A trailing +Inf is implicit; accept it for callers who spell it out.
    if (std::isinf(desc.buckets.back()) && desc.buckets.back() > 0) desc.buckets.pop_back();
    for (std::size_t i = 0; i < desc.buckets.size(); ++i) {
      if (!std::isfinite(desc.buckets[i]) || (i > 0 && desc.buckets[i] <= desc.buckets[i - 1])) {
        return fail(Errc::invalid_argument,
                    fmt::format("histogram \"{}\": buckets must be finite and strictly ascending",
                                desc.name));
      }
    }
  } else if (!desc.buckets.empty()) {
    return fail(Errc::invalid_argument,
                fmt::format("metric \"{}\": only histograms have buckets", desc.name));
  }
  return desc;
}

template <class T>
T& or_abort(Expected<T*> declared) {
  if (!declared) {
    // Metric declarations are constants in code: an error here is a bug to fix, not a state
    // to run in.
    logger().error("Failed to declare metric: {}", declared.error().message);
    std::abort();
  }
  return **declared;
}

}  // namespace

std::span<const double> default_buckets() noexcept {
  return kDefaultBuckets;
}

std::vector<double> exponential_buckets(double start, double factor, std::size_t count) {
  std::vector<double> out;
  out.reserve(count);
  for (double bound = start; out.size() < count; bound *= factor)
    out.push_back(bound);
  return out;
}

std::vector<double> linear_buckets(double start, double width, std::size_t count) {
  std::vector<double> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i)
    out.push_back(start + width * static_cast<double>(i));
  return out;
}

// ---- children ----

void Counter::add(double amount) noexcept {
  if (!(amount > 0)) return;  // also drops NaN
  fraction_.fetch_add(amount, std::memory_order_relaxed);
}

double Counter::value() const noexcept {
  return static_cast<double>(whole_.load(std::memory_order_relaxed)) +
         fraction_.load(std::memory_order_relaxed);
}

void Counter::snapshot(MetricFamily& out, std::span<const LabelView> labels) const {
  out.add(value(), labels);
}

void Gauge::snapshot(MetricFamily& out, std::span<const LabelView> labels) const {
  out.add(value(), labels);
}

Histogram::Histogram(std::span<const double> bounds)
    : bounds_(bounds), counts_(new std::atomic<std::uint64_t>[bounds.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i)
    counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double value) noexcept {
  // First bound >= value: "le" is inclusive. NaN lands in +Inf (and poisons the sum, as in
  // the Prometheus clients).
  auto it = std::lower_bound(bounds_.begin(), bounds_.end(), value);
  counts_[static_cast<std::size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::uint64_t Histogram::count() const noexcept {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
  }
  return total;
}

std::uint64_t Histogram::cumulative_count(std::size_t i) const noexcept {
  std::uint64_t total = 0;
  for (std::size_t j = 0; j <= i && j <= bounds_.size(); ++j) {
    total += counts_[j].load(std::memory_order_relaxed);
  }
  return total;
}

void Histogram::snapshot(MetricFamily& out, std::span<const LabelView> labels) const {
  // Read each bucket once so the cumulative counts and the total are mutually consistent even
  // while observations land (the sum may lag by the observations in flight).
  std::vector<std::uint64_t> cumulative(bounds_.size());
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    cumulative[i] = running;
  }
  running += counts_[bounds_.size()].load(std::memory_order_relaxed);
  out.add_histogram(labels, bounds_, cumulative, running, sum());
}

// ---- families ----

FamilyBase::FamilyBase(Desc desc, MetricType type) : desc_(std::move(desc)), type_(type) {}

ChildBase& FamilyBase::child(std::span<const std::string_view> values) {
  if (values.size() != desc_.labels.size()) {
    logger().error("Metric \"{}\" has {} labels but was given {} values", desc_.name,
                   desc_.labels.size(), values.size());
    std::abort();
  }
  std::lock_guard lock(mutex_);
  auto it = children_.find(values);
  if (it == children_.end()) {
    it = children_.emplace(std::vector<std::string>(values.begin(), values.end()), make_child())
             .first;
  }
  return *it->second;
}

void FamilyBase::snapshot(std::vector<MetricFamily>& out) const {
  MetricFamily& family = out.emplace_back();
  family.name = desc_.name;
  family.help = desc_.help;
  family.type = type_;
  family.unit = desc_.unit;
  std::vector<LabelView> labels(desc_.labels.size());
  for (std::size_t i = 0; i < labels.size(); ++i)
    labels[i].first = desc_.labels[i];
  std::lock_guard lock(mutex_);
  for (const auto& [values, child] : children_) {
    for (std::size_t i = 0; i < labels.size(); ++i)
      labels[i].second = values[i];
    child->snapshot(family, labels);
  }
}

template <class Child>
std::unique_ptr<ChildBase> Family<Child>::make_child() const {
  if constexpr (std::is_same_v<Child, Histogram>) {
    // desc().buckets never changes after declaration, so the span stays valid.
    return std::make_unique<Histogram>(desc().buckets);
  } else {
    return std::make_unique<Child>();
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

// ---- registry ----

Expected<FamilyBase*> Registry::declare(Desc desc, MetricType type) {
  auto valid = validate(std::move(desc), type);
  if (!valid) return std::unexpected(std::move(valid.error()));
  std::lock_guard lock(families_mutex_);
  auto it = families_.find(valid->name);
  if (it != families_.end()) {
    const FamilyBase& existing = *it->second;
    const Desc& old = existing.desc();
    if (existing.type() != type || old.labels != valid->labels || old.unit != valid->unit ||
        old.buckets != valid->buckets || old.help != valid->help) {
      return fail(Errc::already_exists,
                  fmt::format("metric \"{}\" already declared as a {} with labels [{}]", old.name,
                              to_string(existing.type()), fmt::join(old.labels, ", ")));
    }
    return it->second.get();
  }
  std::unique_ptr<FamilyBase> family;
  switch (type) {
    case MetricType::counter:
      family = std::make_unique<CounterFamily>(std::move(*valid), type);
      break;
    case MetricType::gauge:
      family = std::make_unique<GaugeFamily>(std::move(*valid), type);
      break;
    case MetricType::histogram:
      family = std::make_unique<HistogramFamily>(std::move(*valid), type);
      break;
    case MetricType::untyped:
      return fail(Errc::invalid_argument, "untyped families come from collectors only");
  }
  FamilyBase* raw = family.get();
  families_.emplace(raw->desc().name, std::move(family));
  return raw;
}

Expected<CounterFamily*> Registry::try_counter(Desc desc) {
  auto declared = declare(std::move(desc), MetricType::counter);
  if (!declared) return std::unexpected(std::move(declared.error()));
  return static_cast<CounterFamily*>(*declared);
}

Expected<GaugeFamily*> Registry::try_gauge(Desc desc) {
  auto declared = declare(std::move(desc), MetricType::gauge);
  if (!declared) return std::unexpected(std::move(declared.error()));
  return static_cast<GaugeFamily*>(*declared);
}

Expected<HistogramFamily*> Registry::try_histogram(Desc desc) {
  auto declared = declare(std::move(desc), MetricType::histogram);
  if (!declared) return std::unexpected(std::move(declared.error()));
  return static_cast<HistogramFamily*>(*declared);
}

CounterFamily& Registry::counter(Desc desc) {
  return or_abort(try_counter(std::move(desc)));
}
GaugeFamily& Registry::gauge(Desc desc) {
  return or_abort(try_gauge(std::move(desc)));
}
HistogramFamily& Registry::histogram(Desc desc) {
  return or_abort(try_histogram(std::move(desc)));
}

CollectorHandle Registry::add_collector(Collector collector) {
  return add_collector(
      RequestCollector([c = std::move(collector)](
                           const ScrapeRequest&, std::vector<MetricFamily>& out) -> Expected<void> {
        c(out);
        return {};
      }));
}

CollectorHandle Registry::add_collector(RequestCollector collector) {
  std::lock_guard lock(collectors_mutex_);
  std::uint64_t id = next_collector_id_++;
  collectors_.emplace(id, std::move(collector));
  return CollectorHandle(this, id);
}

std::vector<std::string_view> ScrapeRequest::values(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const auto& [k, v] : query) {
    if (k == name) out.emplace_back(v);
  }
  return out;
}

void Registry::remove_collector(std::uint64_t id) noexcept {
  std::lock_guard lock(collectors_mutex_);
  collectors_.erase(id);
}

std::size_t Registry::collector_count() const {
  std::lock_guard lock(collectors_mutex_);
  return collectors_.size();
}

std::vector<MetricFamily> Registry::collect() const {
  // The empty request is one no collector may refuse; a refusal would be a collector bug.
  auto out = collect(ScrapeRequest{});
  if (!out) {
    logger().warning("A metrics collector refused an internal collection: {}", out.error().message);
    return {};
  }
  return std::move(*out);
}

Expected<std::vector<MetricFamily>> Registry::collect(const ScrapeRequest& request) const {
  std::vector<MetricFamily> out;
  {
    std::lock_guard lock(families_mutex_);
    out.reserve(families_.size());
    for (const auto& [name, family] : families_)
      family->snapshot(out);
  }
  std::lock_guard lock(collectors_mutex_);
  for (const auto& [id, collector] : collectors_) {
    std::size_t before = out.size();
    try {
      auto ok = collector(request, out);
      if (ok) continue;
      if (ok.error().code == Errc::invalid_argument) return std::unexpected(ok.error());
      logger().warning("Metrics collector {} failed: {}", id, ok.error().message);
    } catch (const std::exception& e) {
      // One broken collector must not take the whole scrape down: drop its partial output.
      logger().warning("Failed to run metrics collector {}: {}", id, e.what());
    }
    out.resize(before);
  }
  return out;
}

// ---- handle ----

CollectorHandle::CollectorHandle(CollectorHandle&& other) noexcept
    : registry_(std::exchange(other.registry_, nullptr)), id_(other.id_) {}

CollectorHandle& CollectorHandle::operator=(CollectorHandle&& other) noexcept {
  if (this != &other) {
    reset();
    registry_ = std::exchange(other.registry_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

void CollectorHandle::reset() noexcept {
  if (registry_ != nullptr) {
    std::exchange(registry_, nullptr)->remove_collector(id_);
  }
}

}  // namespace neco::metrics
