// gzip (RFC 1952) compression of response bodies, and the Accept-Encoding check for it.
#pragma once

#include <string>
#include <string_view>

namespace neco::metrics {

// Compresses `data` into one gzip member (zlib, level 1-9; 6 is zlib's default trade-off).
// Cannot fail on valid input: out of memory throws std::bad_alloc like any allocation.
std::string gzip_compress(std::string_view data, int level = 6);

// Whether an Accept-Encoding header allows gzip: "gzip" or "x-gzip" with q > 0, or else "*"
// with q > 0. An explicit "gzip;q=0" refuses even when "*" is allowed; an empty header allows
// only identity.
bool accepts_gzip(std::string_view accept_encoding);

}  // namespace neco::metrics
