// Renders registry snapshots as Prometheus text format 0.0.4 or OpenMetrics 1.0, chosen from
// the scraper's Accept header. The only place in the agent that formats metrics text.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agent/metrics/metric_family.hpp"
#include "agent/metrics/registry.hpp"

namespace neco::metrics {

enum class Format { text_004, openmetrics_100 };

// Content-Type value for text format 0.0.4.
inline constexpr std::string_view kTextContentType = "text/plain; version=0.0.4; charset=utf-8";
// Content-Type value for OpenMetrics 1.0.0.
inline constexpr std::string_view kOpenMetricsContentType =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

// Content-Type value of a format.
std::string_view content_type(Format format) noexcept;

// Picks the format from an Accept header, honouring q-values and the most specific matching
// range (RFC 9110 12.5.1). OpenMetrics matches `application/openmetrics-text` with version
// 1.0.0 or none; text matches `text/plain` with version 0.0.4 or none; wildcards match both.
// Equal q: the range listed first wins, and for one wildcard range text wins. Nothing
// acceptable (or an empty header) gives text 0.0.4, as Prometheus clients do, rather than 406.
Format negotiate(std::string_view accept_header);

// Prepares collected families for rendering: drops families or samples with invalid names
// (logged; one bad collector must not break the scrape), merges families of the same name and
// type, drops later ones of another type, and sorts by name. Deterministic for a given input.
void normalize(std::vector<MetricFamily>& families);

// Renders normalized families in the given format.
std::string render(std::span<const MetricFamily> families, Format format);

struct Exposition {
  std::string content_type;  // the Content-Type header value to send
  std::string body;          // the response body (uncompressed)
};

// Collects, normalizes and renders a registry for a scraper's Accept header.
Exposition render(const Registry& registry, std::string_view accept_header);
// The same for a scraper's request; invalid_argument when a collector refuses it.
Expected<Exposition> render(const Registry& registry, std::string_view accept_header,
                            const ScrapeRequest& request);

}  // namespace neco::metrics
