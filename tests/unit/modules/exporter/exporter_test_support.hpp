// Helpers shared by the exporter's unit tests: fixture paths, golden-file comparison and
// running one collector by name.
#pragma once

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "agent/metrics/exposition.hpp"
#include "modules/exporter/collector.hpp"
#include "tests/support/test_support.hpp"

namespace neco::exporter::testing {

namespace ex = neco::exporter;
using neco::metrics::MetricFamily;

inline const std::filesystem::path kData = EXPORTER_TEST_DATA;  // NOLINT(cert-err58-cpp): test data

inline ex::Paths fixture_paths() {
  return {kData / "fixtures/proc", kData / "fixtures/sys", "/"};
}

inline std::string render(std::vector<MetricFamily> families) {
  neco::metrics::normalize(families);
  return neco::metrics::render(families, neco::metrics::Format::text_004);
}

inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Compares with golden/<name>.prom; NECO_UPDATE_GOLDEN=1 rewrites the file instead.
inline void check_golden(const std::string& name, const std::string& actual) {
  const auto path = kData / "golden" / (name + ".prom");
  if (std::getenv("NECO_UPDATE_GOLDEN") != nullptr) {
    std::filesystem::create_directories(path.parent_path());
    neco::testing::write_file(path, actual);
  }
  INFO("golden file " << path.string());
  CHECK(slurp(path) == actual);
}

inline std::vector<MetricFamily> run_collector(std::string_view name, const ex::Paths& paths,
                                               const ex::CollectorOptions& options = {}) {
  const auto* info = ex::find_collector(name);
  REQUIRE(info != nullptr);
  auto c = info->make(options);
  REQUIRE(c->name() == name);
  std::vector<MetricFamily> out;
  auto ok = c->collect(paths, out);
  INFO(name << ": " << (ok ? "" : ok.error().message));
  REQUIRE(ok.has_value());
  return out;
}

inline double value_of(const std::vector<MetricFamily>& fams, std::string_view family,
                       std::string_view label = {}, std::string_view value = {}) {
  const auto* f = neco::metrics::find_family(fams, family);
  REQUIRE(f != nullptr);
  for (const auto& s : f->samples) {
    if (label.empty()) return s.value;
    for (const auto& l : f->labels_of(s)) {
      if (l.name == label && l.value == value) return s.value;
    }
  }
  FAIL("no sample " << family << "{" << label << "=" << value << "}");
  return 0;
}

}  // namespace neco::exporter::testing
