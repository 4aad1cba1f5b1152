#include "agent/metrics/metric_family.hpp"

#include <charconv>
#include <cmath>
#include <limits>

namespace neco::metrics {

std::string_view to_string(MetricType type) noexcept {
  switch (type) {
    case MetricType::counter:
      return "counter";
    case MetricType::gauge:
      return "gauge";
    case MetricType::histogram:
      return "histogram";
    case MetricType::untyped:
      return "untyped";
  }
  return "untyped";
}

MetricFamily& MetricFamily::add(double value, std::initializer_list<LabelView> label_list,
                                std::optional<std::int64_t> timestamp_ms) {
  return add(Suffix::none, value, std::span<const LabelView>(label_list.begin(), label_list.size()),
             timestamp_ms);
}

MetricFamily& MetricFamily::add(double value, std::span<const LabelView> label_list,
                                std::optional<std::int64_t> timestamp_ms) {
  return add(Suffix::none, value, label_list, timestamp_ms);
}

MetricFamily& MetricFamily::add(Suffix suffix, double value, std::span<const LabelView> label_list,
                                std::optional<std::int64_t> timestamp_ms) {
  Sample sample;
  sample.suffix = suffix;
  sample.first_label = static_cast<std::uint32_t>(labels.size());
  sample.label_count = static_cast<std::uint32_t>(label_list.size());
  sample.value = value;
  sample.timestamp_ms = timestamp_ms;
  for (const auto& [name, label_value] : label_list) {
    labels.push_back(Label{std::string(name), std::string(label_value)});
  }
  samples.push_back(sample);
  return *this;
}

MetricFamily& MetricFamily::add_histogram(std::span<const LabelView> label_list,
                                          std::span<const double> bounds,
                                          std::span<const std::uint64_t> cumulative_counts,
                                          std::uint64_t count, double sum) {
  // One copy of the label list per histogram (not per bucket), with room for `le`.
  std::vector<LabelView> with_le(label_list.begin(), label_list.end());
  with_le.emplace_back("le", std::string_view{});
  std::string le;
  for (std::size_t i = 0; i < bounds.size() && i < cumulative_counts.size(); ++i) {
    le = format_value(bounds[i]);
    with_le.back().second = le;
    add(Suffix::bucket, static_cast<double>(cumulative_counts[i]), with_le);
  }
  with_le.back().second = "+Inf";
  add(Suffix::bucket, static_cast<double>(count), with_le);
  add(Suffix::sum, sum, label_list);
  add(Suffix::count, static_cast<double>(count), label_list);
  return *this;
}

namespace {

bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || (c >= '0' && c <= '9');
}

bool valid_identifier(std::string_view name) {
  if (name.empty() || !is_name_start(name[0])) return false;
  if (name.starts_with("__")) return false;
  for (char c : name) {
    if (!is_name_char(c)) return false;
  }
  return true;
}

}  // namespace

bool valid_metric_name(std::string_view name) noexcept {
  return valid_identifier(name);
}

bool valid_label_name(std::string_view name) noexcept {
  return valid_identifier(name);
}

bool valid_unit_for(std::string_view name, MetricType type, std::string_view unit) noexcept {
  if (unit.empty()) return true;
  for (char c : unit) {
    if (!is_name_char(c)) return false;
  }
  std::string_view base = name;
  if (type == MetricType::counter && base.ends_with("_total")) base.remove_suffix(6);
  return base.size() > unit.size() + 1 && base.ends_with(unit) &&
         base[base.size() - unit.size() - 1] == '_';
}

void append_value(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
    return;
  }
  if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
    return;
  }
  char buf[32];
  // Integral values up to 2^53 print as integers: "1000000", not "1e+06". Beyond that the
  // shortest form is both exact and shorter.
  constexpr double exact_limit = 9007199254740992.0;
  std::to_chars_result r;
  if (value == std::trunc(value) && std::fabs(value) <= exact_limit) {
    r = std::to_chars(buf, buf + sizeof buf, static_cast<std::int64_t>(value));
  } else {
    r = std::to_chars(buf, buf + sizeof buf, value);  // shortest round-trippable
  }
  out.append(buf, r.ptr);
}

std::string format_value(double value) {
  std::string out;
  append_value(out, value);
  return out;
}

const MetricFamily* find_family(std::span<const MetricFamily> families, std::string_view name) {
  for (const auto& f : families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

}  // namespace neco::metrics
