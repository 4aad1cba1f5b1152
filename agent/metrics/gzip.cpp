#include "agent/metrics/gzip.hpp"

#include <libdeflate.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <new>

#include "agent/util/text.hpp"

namespace neco::metrics {

namespace {

// One libdeflate compressor per level, kept per thread: allocating one costs more than
// compressing a typical scrape body.
class Compressors {
 public:
  Compressors() = default;
  Compressors(const Compressors&) = delete;
  Compressors& operator=(const Compressors&) = delete;
  ~Compressors() {
    for (auto* c : by_level_)
      libdeflate_free_compressor(c);
  }

  libdeflate_compressor* get(int level) {
    auto*& c = by_level_.at(static_cast<std::size_t>(level));
    if (c == nullptr) c = libdeflate_alloc_compressor(level);
    if (c == nullptr) throw std::bad_alloc();
    return c;
  }

 private:
  std::array<libdeflate_compressor*, 10> by_level_{};
};

}  // namespace

std::string gzip_compress(std::string_view data, int level) {
  thread_local Compressors compressors;
  libdeflate_compressor* c = compressors.get(std::clamp(level, 1, 9));
  std::string out;
  // The bound is exact for libdeflate's worst case (stored blocks), so one pass suffices.
  out.resize(libdeflate_gzip_compress_bound(c, data.size()));
  const std::size_t n =
      libdeflate_gzip_compress(c, data.data(), data.size(), out.data(), out.size());
  if (n == 0) throw std::bad_alloc();  // cannot happen with the bound above
  out.resize(n);
  return out;
}

bool accepts_gzip(std::string_view accept_encoding) {
  double gzip_q = -1;  // -1: not mentioned
  double star_q = -1;
  while (!accept_encoding.empty()) {
    auto comma = accept_encoding.find(',');
    std::string_view item = accept_encoding.substr(0, comma);
    accept_encoding.remove_prefix(comma == std::string_view::npos ? accept_encoding.size()
                                                                  : comma + 1);
    auto semi = item.find(';');
    std::string_view coding = trim_ows(item.substr(0, semi));
    double q = 1;
    while (semi != std::string_view::npos) {
      item.remove_prefix(semi + 1);
      semi = item.find(';');
      std::string_view param = trim_ows(item.substr(0, semi));
      if (param.size() > 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        param.remove_prefix(2);
        auto [ptr, ec] = std::from_chars(param.data(), param.data() + param.size(), q);
        if (ec != std::errc() || ptr != param.data() + param.size()) q = 0;
      }
    }
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      gzip_q = std::max(gzip_q, q);
    } else if (coding == "*") {
      star_q = std::max(star_q, q);
    }
  }
  if (gzip_q >= 0) return gzip_q > 0;
  return star_q > 0;
}

}  // namespace neco::metrics
