// gzip (RFC 1952) compression of response bodies, and the Accept-Encoding check for it.
#pragma once

#include <string>
#include <string_view>

namespace neco::metrics {

// Compresses `data` into one gzip member (zlib, level 1-9). The default suits scrape bodies:
// level 1 with an 8 KiB window and a smaller hash costs about a quarter of zlib's level 6 on a
// 33 KB exposition and only ~10% more bytes, since metric lines repeat close together (measured
// in the exporter benchmark). Cannot fail on valid input: out of memory throws std::bad_alloc.
std::string gzip_compress(std::string_view data, int level = 1);

// Whether an Accept-Encoding header allows gzip: "gzip" or "x-gzip" with q > 0, or else "*"
// with q > 0. An explicit "gzip;q=0" refuses even when "*" is allowed; an empty header allows
// only identity.
bool accepts_gzip(std::string_view accept_encoding);

}  // namespace neco::metrics
