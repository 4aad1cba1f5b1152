#include "agent/metrics/exposition.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>

#include "agent/log/log.hpp"
#include "agent/util/text.hpp"

namespace neco::metrics {

namespace {

const log::Logger& logger() {
  static const log::Logger instance("metrics");
  return instance;
}

// ---- negotiation ----

struct MediaRange {
  std::string_view type;     // "text", "application", "*"
  std::string_view subtype;  // "plain", "openmetrics-text", "*"
  std::string_view version;  // the version parameter, empty when absent
  double q = 1;
};

MediaRange parse_range(std::string_view text) {
  MediaRange range;
  bool first = true;
  for_each_item(text, ';', [&](std::string_view part) {
    if (first) {
      first = false;
      auto slash = part.find('/');
      range.type = trim_ows(part.substr(0, slash));
      range.subtype = slash == std::string_view::npos ? "" : trim_ows(part.substr(slash + 1));
      return;
    }
    auto eq = part.find('=');
    if (eq == std::string_view::npos) return;
    auto key = trim_ows(part.substr(0, eq));
    auto value = trim_ows(part.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (iequals(key, "q")) {
      double q = 0;
      auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), q);
      // A malformed q makes the range unusable rather than preferred.
      range.q =
          (ec == std::errc() && ptr == value.data() + value.size()) ? std::clamp(q, 0.0, 1.0) : 0.0;
    } else if (iequals(key, "version")) {
      range.version = value;
    }
  });
  return range;
}

struct Offer {
  std::string_view type;
  std::string_view subtype;
  std::string_view version;
};

// How specifically `range` names `offer`: -1 no match, 0 */*, 1 type/*, 2 type/subtype,
// 3 type/subtype;version=….
int specificity(const MediaRange& range, const Offer& offer) {
  if (range.type == "*" && range.subtype == "*") return 0;
  if (!iequals(range.type, offer.type)) return -1;
  if (range.subtype == "*") return 1;
  if (!iequals(range.subtype, offer.subtype)) return -1;
  if (range.version.empty()) return 2;
  return range.version == offer.version ? 3 : -1;
}

struct Match {
  double q = 0;
  std::size_t index = SIZE_MAX;  // position of the deciding range in the header
};

Match best_match(std::span<const MediaRange> ranges, const Offer& offer) {
  Match match;
  int best = -1;
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    int s = specificity(ranges[i], offer);
    if (s > best) {
      best = s;
      match = {ranges[i].q, i};
    }
  }
  return match;
}

// ---- normalisation ----

bool valid_sample_labels(const MetricFamily& family, const Sample& sample) {
  if (std::size_t(sample.first_label) + sample.label_count > family.labels.size()) return false;
  for (const auto& label : family.labels_of(sample)) {
    if (!valid_label_name(label.name)) return false;
  }
  return true;
}

// ---- rendering ----

void append_escaped(std::string& out, std::string_view text, bool escape_quote) {
  // Runs without special characters (nearly all text) are appended whole.
  const std::string_view special = escape_quote ? std::string_view("\\\n\"", 3) : "\\\n";
  for (;;) {
    const std::size_t at = text.find_first_of(special);
    if (at == std::string_view::npos) {
      out += text;
      return;
    }
    out += text.substr(0, at);
    out += text[at] == '\n' ? "\\n" : text[at] == '"' ? "\\\"" : "\\\\";
    text.remove_prefix(at + 1);
  }
}

std::string_view suffix_text(Suffix suffix) {
  switch (suffix) {
    case Suffix::none:
      return "";
    case Suffix::bucket:
      return "_bucket";
    case Suffix::sum:
      return "_sum";
    case Suffix::count:
      return "_count";
  }
  return "";
}

// OpenMetrics timestamps are seconds; ours are integer milliseconds, so print them exactly.
void append_seconds(std::string& out, std::int64_t ms) {
  // Sign and magnitude, so -1 ms prints as "-0.001" (unsigned: INT64_MIN has no positive).
  std::uint64_t magnitude =
      ms < 0 ? 0 - static_cast<std::uint64_t>(ms) : static_cast<std::uint64_t>(ms);
  if (ms < 0) out += '-';
  std::uint64_t millis = magnitude % 1000;
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, magnitude / 1000);
  out.append(buf, r.ptr);
  if (millis != 0) {
    char frac[4] = {'.', char('0' + millis / 100), char('0' + millis / 10 % 10),
                    char('0' + millis % 10)};
    std::size_t len = 4;
    while (frac[len - 1] == '0')
      --len;
    out.append(frac, len);
  }
}

void render_family(std::string& out, const MetricFamily& family, Format format) {
  const bool om = format == Format::openmetrics_100;
  std::string_view name = family.name;
  std::string_view sample_base = name;
  if (om && family.type == MetricType::counter && name.ends_with("_total")) {
    // OpenMetrics names the counter family without "_total" and puts it on the samples.
    name.remove_suffix(6);
    sample_base = name;
  }
  if (!family.help.empty()) {
    out += "# HELP ";
    out += name;
    out += ' ';
    append_escaped(out, family.help, om);
    out += '\n';
  }
  out += "# TYPE ";
  out += name;
  out += ' ';
  out += (om && family.type == MetricType::untyped) ? "unknown" : to_string(family.type);
  out += '\n';
  if (om && !family.unit.empty()) {
    out += "# UNIT ";
    out += name;
    out += ' ';
    out += family.unit;
    out += '\n';
  }
  for (const auto& sample : family.samples) {
    out += sample_base;
    if (om && family.type == MetricType::counter && sample.suffix == Suffix::none) {
      out += "_total";
    } else {
      out += suffix_text(sample.suffix);
    }
    auto labels = family.labels_of(sample);
    if (!labels.empty()) {
      out += '{';
      bool first = true;
      for (const auto& label : labels) {
        if (!first) out += ',';
        first = false;
        out += label.name;
        out += "=\"";
        append_escaped(out, label.value, true);
        out += '"';
      }
      out += '}';
    }
    out += ' ';
    append_value(out, sample.value);
    if (sample.timestamp_ms) {
      out += ' ';
      if (om) {
        append_seconds(out, *sample.timestamp_ms);
      } else {
        char buf[24];
        auto r = std::to_chars(buf, buf + sizeof buf, *sample.timestamp_ms);
        out.append(buf, r.ptr);
      }
    }
    out += '\n';
  }
}

}  // namespace

std::string_view content_type(Format format) noexcept {
  return format == Format::openmetrics_100 ? kOpenMetricsContentType : kTextContentType;
}

Format negotiate(std::string_view accept_header) {
  std::vector<MediaRange> ranges;
  for_each_item(accept_header, ',', [&](std::string_view part) {
    if (!part.empty()) ranges.push_back(parse_range(part));
  });
  Match om = best_match(ranges, {"application", "openmetrics-text", "1.0.0"});
  Match text = best_match(ranges, {"text", "plain", "0.0.4"});
  if (om.q > 0 && (om.q > text.q || (om.q == text.q && om.index < text.index))) {
    return Format::openmetrics_100;
  }
  return Format::text_004;
}

void normalize(std::vector<MetricFamily>& families) {
  // Validate in place, dropping what would make the scrape unparsable.
  std::erase_if(families, [](const MetricFamily& family) {
    if (!valid_metric_name(family.name)) {
      logger().warning("Dropping metric family with invalid name \"{}\"", family.name);
      return true;
    }
    return false;
  });
  for (auto& family : families) {
    if (!valid_unit_for(family.name, family.type, family.unit)) {
      logger().warning("Dropping unit \"{}\" of metric \"{}\": not the name's last component",
                       family.unit, family.name);
      family.unit.clear();
    }
    auto dropped = std::erase_if(
        family.samples, [&](const Sample& sample) { return !valid_sample_labels(family, sample); });
    if (dropped > 0) {
      logger().warning("Dropping {} samples of metric \"{}\" with invalid label names", dropped,
                       family.name);
    }
  }
  // Stable, so families of one name keep their collection order for the merge below.
  std::stable_sort(families.begin(), families.end(),
                   [](const MetricFamily& a, const MetricFamily& b) { return a.name < b.name; });
  std::size_t kept = 0;
  for (std::size_t i = 0; i < families.size(); ++i) {
    if (kept > 0 && families[kept - 1].name == families[i].name) {
      MetricFamily& into = families[kept - 1];
      MetricFamily& from = families[i];
      if (into.type != from.type) {
        logger().warning("Dropping duplicate metric family \"{}\" of type {} (already {})",
                         from.name, to_string(from.type), to_string(into.type));
        continue;
      }
      // The text formats allow one block per family: merge the samples, shifting label indices.
      auto offset = static_cast<std::uint32_t>(into.labels.size());
      std::move(from.labels.begin(), from.labels.end(), std::back_inserter(into.labels));
      for (Sample sample : from.samples) {
        sample.first_label += offset;
        into.samples.push_back(sample);
      }
      if (into.help.empty()) into.help = std::move(from.help);
      continue;
    }
    if (kept != i) families[kept] = std::move(families[i]);
    ++kept;
  }
  families.resize(kept);
}

std::string render(std::span<const MetricFamily> families, Format format) {
  std::string out;
  std::size_t samples = 0;
  for (const auto& family : families)
    samples += family.samples.size();
  out.reserve(families.size() * 96 + samples * 64);  // typical line lengths; avoids regrowth
  for (const auto& family : families)
    render_family(out, family, format);
  if (format == Format::openmetrics_100) out += "# EOF\n";
  return out;
}

Exposition render(const Registry& registry, std::string_view accept_header) {
  Format format = negotiate(accept_header);
  auto families = registry.collect();
  normalize(families);
  return {std::string(content_type(format)), render(families, format)};
}

Expected<Exposition> render(const Registry& registry, std::string_view accept_header,
                            const ScrapeRequest& request) {
  Format format = negotiate(accept_header);
  auto families = registry.collect(request);
  if (!families) return std::unexpected(families.error());
  normalize(*families);
  return Exposition{std::string(content_type(format)), render(*families, format)};
}

}  // namespace neco::metrics
