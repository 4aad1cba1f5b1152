// Serving a file over HTTP the way boot firmware expects (iPXE and UEFI HTTP boot probe with
// HEAD and fetch with byte ranges): whole or one range, strong validators, conditional GETs.
// The answer streams from an open descriptor (Response::file), so image size costs no memory.
// The Range parser is pure and separate so it can be tested byte for byte.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "agent/http/request.hpp"
#include "agent/http/response.hpp"

namespace neco::http {

// What to do with a Range header field for a representation of a given size (RFC 9110 §14).
struct ByteRange {
  enum class Kind {
    invalid,        // not a valid "bytes" ranges-specifier (or another unit): ignore it, send 200
    whole,          // valid, answered with the whole representation (200): several ranges, or a
                    // suffix range of an empty file (a 206 cannot describe zero bytes)
    partial,        // one satisfiable range: 206 with bytes [first, last]
    unsatisfiable,  // no range-spec is satisfiable: 416 with "Content-Range: bytes */SIZE"
  };
  Kind kind = Kind::invalid;  // see above
  std::uint64_t first = 0;    // partial only: offset of the first byte sent
  std::uint64_t last = 0;     // partial only: offset of the last byte sent (inclusive, < size)

  bool operator==(const ByteRange&) const = default;
};

// Parses a Range field value against a representation of `size` bytes. Accepts "bytes=a-b",
// "bytes=a-" and "bytes=-n" (unit case-insensitive, optional whitespace around list elements,
// empty list elements skipped); clamps a last-pos beyond the end; numbers too large for 64 bits
// compare by their digits (a huge first-pos is unsatisfiable, a huge last-pos or suffix means
// "to the end"). A last-pos below its first-pos, a sign, spaces inside a range-spec or any other
// garbage makes the whole field invalid.
ByteRange parse_byte_range(std::string_view header, std::uint64_t size);

// Serves the regular file at `path` for GET and HEAD (other methods: 405):
// - 200 with the whole file, or 206 with Content-Range for one satisfiable Range on a GET; 416
//   with "Content-Range: bytes */SIZE" when no range is satisfiable; several ranges get 200;
// - Accept-Ranges: bytes, ETag and Last-Modified on every success. `etag` is the caller's
//   strong validator (opaque-tag with or without the quotes, e.g. a content hash); empty means
//   one made of inode, size and mtime. If-None-Match (weak comparison, or "*") gives 304;
//   If-Range (a strong ETag match, or the exact Last-Modified date) gates the Range;
// - a missing path is a 404 JSON error, an unreadable one 403, a directory, FIFO, device or a
//   symlink as the last component 404 ("not a regular file"). Only `path` itself is opened,
//   nothing derived from the request, and a final symlink is never followed.
// The response holds the open file: a file replaced or deleted afterwards still sends the
// content that was checked here.
Response file_response(const Request& request, const std::filesystem::path& path,
                       std::string content_type, std::string etag = {});

}  // namespace neco::http
