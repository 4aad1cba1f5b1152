#include "agent/metrics/gzip.hpp"

#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <new>
#include <stdexcept>

#include "agent/util/text.hpp"

namespace neco::metrics {

namespace {
// Largest amount handed to zlib at once; its counters are 32-bit.
constexpr std::size_t kChunk = std::size_t{1} << 30;
}  // namespace

namespace {

// A compressor kept per thread and reset between bodies: setting one up allocates and clears
// ~70 KiB, which cost more than compressing a typical scrape body.
class Deflater {
 public:
  Deflater() = default;
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;
  ~Deflater() {
    if (ready_) deflateEnd(&stream_);
  }

  // A stream ready for a new body at `level`.
  z_stream& begin(int level) {
    if (ready_ && level == level_ && deflateReset(&stream_) == Z_OK) {
      // deflateReset keeps the buffer pointers of the last body, which is gone.
      stream_.next_in = nullptr;
      stream_.avail_in = 0;
      stream_.next_out = nullptr;
      stream_.avail_out = 0;
      return stream_;
    }
    if (ready_) deflateEnd(&stream_);
    ready_ = false;
    stream_ = z_stream{};
    // windowBits 13 (8 KiB) + 16 asks zlib for the gzip header and trailer instead of the
    // zlib ones; with memLevel 7 the compressor's state is 64 KiB instead of 256 KiB.
    // With constant valid parameters the only possible failure is memory.
    if (deflateInit2(&stream_, level, Z_DEFLATED, 13 + 16, 7, Z_DEFAULT_STRATEGY) != Z_OK) {
      throw std::bad_alloc();
    }
    ready_ = true;
    level_ = level;
    return stream_;
  }

  // After an error the stream's state is unknown: start from scratch next time.
  void discard() {
    if (ready_) deflateEnd(&stream_);
    ready_ = false;
  }

 private:
  z_stream stream_{};
  bool ready_ = false;
  int level_ = 0;
};

}  // namespace

std::string gzip_compress(std::string_view data, int level) {
  thread_local Deflater deflater;
  z_stream& stream = deflater.begin(std::clamp(level, 1, 9));
  std::string out;
  // deflateBound covers the zlib framing; gzip's header and trailer add 18 bytes to it. One
  // allocation then suffices; the growth below is only a safety net.
  out.resize(deflateBound(&stream, static_cast<uLong>(data.size())) + 18);
  std::size_t in_pos = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    // zlib's counters are 32-bit: hand it at most kChunk bytes of input and output at a time.
    if (stream.avail_in == 0 && in_pos < data.size()) {
      std::size_t n = std::min(data.size() - in_pos, kChunk);
      // zlib's API is not const-correct; it never writes through next_in.
      stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data() + in_pos));
      stream.avail_in = static_cast<uInt>(n);
      in_pos += n;
    }
    if (stream.avail_out == 0) {
      if (stream.total_out == out.size()) out.resize(out.size() * 2);
      std::size_t n = std::min(out.size() - stream.total_out, kChunk);
      stream.next_out = reinterpret_cast<Bytef*>(out.data() + stream.total_out);
      stream.avail_out = static_cast<uInt>(n);
    }
    rc = deflate(&stream, in_pos == data.size() ? Z_FINISH : Z_NO_FLUSH);
    // Z_BUF_ERROR only means "no progress without more room"; the refill above provides it.
    if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
      deflater.discard();
      throw std::runtime_error("deflate failed");
    }
  }
  out.resize(stream.total_out);
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
