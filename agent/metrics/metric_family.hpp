// The scrape-time data model: what the registry's own families and every collector produce,
// and what the exposition renders. Modules fill MetricFamily values; they never format text.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace neco::metrics {

// The metric types both exposition formats can carry (untyped is OpenMetrics' "unknown").
enum class MetricType : std::uint8_t { counter, gauge, histogram, untyped };

// Lower-case name as written in text format 0.0.4 `# TYPE` lines.
std::string_view to_string(MetricType type) noexcept;

// Which sample of a family a value is: histograms have bucket/sum/count, others only none.
// An enum rather than a string so collectors emitting thousands of samples allocate nothing.
enum class Suffix : std::uint8_t { none, bucket, sum, count };

// A (name, value) pair used to pass labels without copying.
using LabelView = std::pair<std::string_view, std::string_view>;

struct Label {
  std::string name;   // label name, [a-zA-Z_][a-zA-Z0-9_]*, no "__" prefix
  std::string value;  // any UTF-8; escaped by the exposition
};

struct Sample {
  Suffix suffix = Suffix::none;              // which series of the family this is
  std::uint32_t first_label = 0;             // index into MetricFamily::labels
  std::uint32_t label_count = 0;             // number of labels from first_label on
  double value = 0;                          // the sample value
  std::optional<std::int64_t> timestamp_ms;  // milliseconds since the epoch; usually absent
};

// One family at scrape time. Labels of all samples live in one flat pool so a sample costs
// no allocation of its own beyond the label strings (short ones fit std::string's SSO).
struct MetricFamily {
  // Counters: the name may end in "_total" (Prometheus convention); text format 0.0.4 uses
  // it as given, OpenMetrics strips "_total" for the family and appends it to samples.
  std::string name;
  std::string help;                       // free text; escaped by the exposition
  MetricType type = MetricType::untyped;  // the family's type
  std::string unit;                       // optional; the name must then end in "_<unit>"
  std::vector<Label> labels;              // label pool shared by all samples
  std::vector<Sample> samples;            // in exposition order

  // Appends a plain sample (counter, gauge, untyped).
  MetricFamily& add(double value, std::initializer_list<LabelView> labels = {},
                    std::optional<std::int64_t> timestamp_ms = {});
  // Appends a plain sample with a runtime-sized label list.
  MetricFamily& add(double value, std::span<const LabelView> labels,
                    std::optional<std::int64_t> timestamp_ms = {});
  // Appends a sample with an explicit suffix (histogram parts); `le` must be in labels for
  // buckets.
  MetricFamily& add(Suffix suffix, double value, std::span<const LabelView> labels,
                    std::optional<std::int64_t> timestamp_ms = {});
  // Appends a whole histogram for one label set: bounds ascending without +Inf, cumulative
  // counts for each bound, the total count (the +Inf bucket) and the sum.
  MetricFamily& add_histogram(std::span<const LabelView> labels, std::span<const double> bounds,
                              std::span<const std::uint64_t> cumulative_counts, std::uint64_t count,
                              double sum);
  // The labels of one sample of this family.
  std::span<const Label> labels_of(const Sample& sample) const {
    return {labels.data() + sample.first_label, sample.label_count};
  }
};

// The family named `name` in a scrape, or nullptr.
const MetricFamily* find_family(std::span<const MetricFamily> families, std::string_view name);

// Prometheus metric name rule for instrumentation: [a-zA-Z_][a-zA-Z0-9_]*, no "__" prefix.
// Colons are refused: Prometheus reserves them for recording rules.
bool valid_metric_name(std::string_view name) noexcept;
// Prometheus label name rule: [a-zA-Z_][a-zA-Z0-9_]*, no "__" prefix (reserved).
bool valid_label_name(std::string_view name) noexcept;
// A unit is lower-case-ish [a-zA-Z0-9_]+ and must be the name's final "_<unit>" component
// (for counters, before "_total"), as OpenMetrics requires.
bool valid_unit_for(std::string_view name, MetricType type, std::string_view unit) noexcept;

// Renders a double as both formats expect: "+Inf", "-Inf", "NaN", integral values as plain
// integers (no "1e+06" noise), everything else as the shortest round-trippable form.
std::string format_value(double value);
// Appends format_value(value) to out without a temporary string.
void append_value(std::string& out, double value);

}  // namespace neco::metrics
