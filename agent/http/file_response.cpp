// file_response() and the Range parser behind it; see file_response.hpp for the rules.
#include "agent/http/file_response.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "agent/util/text.hpp"

namespace neco::http {
namespace {

bool all_digits(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::string_view strip_zeros(std::string_view digits) noexcept {
  while (digits.size() > 1 && digits.front() == '0')
    digits.remove_prefix(1);
  return digits;
}

// a < b for decimal digit strings of any length.
bool digits_less(std::string_view a, std::string_view b) noexcept {
  a = strip_zeros(a);
  b = strip_zeros(b);
  if (a.size() != b.size()) return a.size() < b.size();
  return a < b;
}

// The value of a digit string, saturated at the largest uint64 (which exceeds every file size).
std::uint64_t saturating_value(std::string_view digits) noexcept {
  std::uint64_t v = 0;
  const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
  if (ec == std::errc::result_out_of_range) return std::numeric_limits<std::uint64_t>::max();
  return v;
}

// One range-spec resolved against the size: nullopt when invalid, else satisfiable or not.
struct Spec {
  bool satisfiable = false;
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};

std::optional<Spec> parse_spec(std::string_view item, std::uint64_t size) {
  const auto dash = item.find('-');
  if (dash == std::string_view::npos) return std::nullopt;
  const auto first_text = item.substr(0, dash);
  const auto last_text = item.substr(dash + 1);
  Spec spec;
  if (first_text.empty()) {  // suffix-range: the last N bytes
    if (!all_digits(last_text)) return std::nullopt;
    const auto suffix = saturating_value(last_text);
    spec.satisfiable = suffix > 0;
    if (spec.satisfiable && size > 0) {
      spec.first = size - std::min(suffix, size);
      spec.last = size - 1;
    }
    return spec;
  }
  if (!all_digits(first_text)) return std::nullopt;
  if (!last_text.empty()) {
    if (!all_digits(last_text) || digits_less(last_text, first_text)) return std::nullopt;
  }
  const auto first = saturating_value(first_text);
  if (first >= size) return spec;  // valid, but starts at or after the end
  spec.satisfiable = true;
  spec.first = first;
  spec.last = last_text.empty() ? size - 1 : std::min(saturating_value(last_text), size - 1);
  return spec;
}

// etagc = %x21 / %x23-7E / obs-text
bool is_etagc(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return u == 0x21 || (u >= 0x23 && u != 0x7f);
}

struct EntityTag {
  bool weak = false;
  std::string_view opaque;  // with its quotes
};

// Parses an entity-tag at the start of `s` and removes it; nullopt when there is none.
std::optional<EntityTag> take_entity_tag(std::string_view& s) {
  EntityTag tag;
  if (s.starts_with("W/")) {
    tag.weak = true;
    s.remove_prefix(2);
  }
  if (s.empty() || s.front() != '"') return std::nullopt;
  const auto close = s.find('"', 1);
  if (close == std::string_view::npos) return std::nullopt;
  for (const char c : s.substr(1, close - 1)) {
    if (!is_etagc(c)) return std::nullopt;
  }
  tag.opaque = s.substr(0, close + 1);
  s.remove_prefix(close + 1);
  return tag;
}

// The entity-tags of an If-None-Match list; nullopt when the field is malformed.
std::optional<std::vector<EntityTag>> parse_entity_tags(std::string_view s) {
  std::vector<EntityTag> tags;
  for (;;) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == ','))
      s.remove_prefix(1);
    if (s.empty()) return tags;
    auto tag = take_entity_tag(s);
    if (!tag) return std::nullopt;
    tags.push_back(*tag);
    s = trim_ows(s);
    if (!s.empty() && s.front() != ',') return std::nullopt;
  }
}

// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), independent of the C locale.
std::string http_date(std::time_t t) {
  static constexpr std::array<const char*, 7> days = {"Sun", "Mon", "Tue", "Wed",
                                                      "Thu", "Fri", "Sat"};
  static constexpr std::array<const char*, 12> months = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  if (::gmtime_r(&t, &tm) == nullptr) return {};
  std::array<char, 40> out{};
  const int n = std::snprintf(out.data(), out.size(), "%s, %02d %s %04d %02d:%02d:%02d GMT",
                              days.at(static_cast<std::size_t>(tm.tm_wday)), tm.tm_mday,
                              months.at(static_cast<std::size_t>(tm.tm_mon)), tm.tm_year + 1900,
                              tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (n <= 0 || static_cast<std::size_t>(n) >= out.size()) return {};
  return {out.data(), static_cast<std::size_t>(n)};
}

void append_hex(std::string& out, std::uint64_t v) {
  std::array<char, 16> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v, 16);
  out.append(buf.data(), end);
}

// The strong validator: the caller's, quoted, or one from inode, size and mtime (nanoseconds),
// which changes whenever the file is replaced or rewritten in place.
std::optional<std::string> make_etag(std::string etag, const struct stat& st) {
  if (etag.empty()) {
    std::string out = "\"";
    append_hex(out, static_cast<std::uint64_t>(st.st_ino));
    out += '-';
    append_hex(out, static_cast<std::uint64_t>(st.st_size));
    out += '-';
    append_hex(out, static_cast<std::uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ULL +
                        static_cast<std::uint64_t>(st.st_mtim.tv_nsec));
    out += '"';
    return out;
  }
  if (etag.size() < 2 || etag.front() != '"' || etag.back() != '"') etag = '"' + etag + '"';
  std::string_view rest = etag;
  const auto tag = take_entity_tag(rest);
  if (!tag || !rest.empty()) return std::nullopt;
  return etag;
}

}  // namespace

ByteRange parse_byte_range(std::string_view header, std::uint64_t size) {
  header = trim_ows(header);
  const auto eq = header.find('=');
  if (eq == std::string_view::npos || !iequals(header.substr(0, eq), "bytes")) return {};
  std::size_t specs = 0;
  std::size_t satisfiable = 0;
  bool invalid = false;
  Spec chosen;
  for_each_item(header.substr(eq + 1), ',', [&](std::string_view item) {
    if (invalid || item.empty()) return;  // "a recipient MUST ignore empty list elements"
    const auto spec = parse_spec(item, size);
    if (!spec) {
      invalid = true;
      return;
    }
    ++specs;
    if (spec->satisfiable) {
      ++satisfiable;
      chosen = *spec;
    }
  });
  if (invalid || specs == 0) return {};
  if (satisfiable == 0) return {ByteRange::Kind::unsatisfiable};
  if (specs > 1 || size == 0) return {ByteRange::Kind::whole};
  return {ByteRange::Kind::partial, chosen.first, chosen.last};
}

Response file_response(const Request& request, const std::filesystem::path& path,
                       std::string content_type, std::string etag) {
  const auto quoted = "\"" + request.path + "\"";
  if (request.method != Verb::get && request.method != Verb::head) {
    auto res = Response::error(Status::method_not_allowed, "method_not_allowed",
                               "only GET and HEAD are allowed on " + quoted);
    res.headers.emplace_back("Allow", "GET, HEAD");
    return res;
  }
  auto file = FileHandle::open(path);
  if (!file) {
    switch (file.error().code) {
      case Errc::not_found:
        return Response::error(Status::not_found, "not_found", "no file at " + quoted);
      case Errc::permission_denied:
        return Response::error(Status::forbidden, "forbidden", quoted + " is not readable");
      case Errc::invalid_argument:  // a symlink
        return Response::error(Status::not_found, "not_found", quoted + " is not a regular file");
      default:
        return Response::error(Status::service_unavailable, "unavailable",
                               "cannot open " + quoted + " right now");
    }
  }
  struct stat st {};
  if (::fstat((*file)->fd(), &st) != 0) {
    return Response::error(Status::internal_server_error, "internal", "cannot stat " + quoted);
  }
  if (!S_ISREG(st.st_mode)) {
    return Response::error(Status::not_found, "not_found", quoted + " is not a regular file");
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  auto tag = make_etag(std::move(etag), st);
  if (!tag) {
    return Response::error(Status::internal_server_error, "internal",
                           "the ETag given for " + quoted + " is not a valid entity-tag");
  }
  const auto last_modified = http_date(st.st_mtim.tv_sec);

  Response res;
  res.headers.emplace_back("Accept-Ranges", "bytes");
  res.headers.emplace_back("ETag", *tag);
  if (!last_modified.empty()) res.headers.emplace_back("Last-Modified", last_modified);

  // If-None-Match comes first (RFC 9110 §13.2.2): a cached copy beats any range.
  if (const auto inm = request.header("if-none-match")) {
    bool match = trim_ows(*inm) == "*";
    if (!match) {
      if (const auto tags = parse_entity_tags(*inm)) {
        for (const auto& t : *tags)
          match = match || t.opaque == *tag;  // weak comparison: W/ does not matter
      }
    }
    if (match) {
      res.status = Status::not_modified;
      res.content_type.clear();
      return res;
    }
  }

  ByteRange range;  // invalid: the whole file
  const auto range_header = request.header("range");
  // Range is defined for GET only; HEAD and others ignore it (RFC 9110 §14.2).
  if (range_header && request.method == Verb::get) {
    bool use_range = true;
    if (const auto if_range = request.header("if-range")) {
      std::string_view value = trim_ows(*if_range);
      if (value.starts_with('"') || value.starts_with("W/")) {
        const auto t = take_entity_tag(value);
        use_range = t && value.empty() && !t->weak && t->opaque == *tag;  // strong comparison
      } else {
        use_range = !last_modified.empty() && value == last_modified;
      }
    }
    if (use_range) range = parse_byte_range(*range_header, size);
  }

  switch (range.kind) {
    case ByteRange::Kind::unsatisfiable: {
      auto error = Response::error(Status::range_not_satisfiable, "range_not_satisfiable",
                                   "no satisfiable range in \"" + std::string(*range_header) +
                                       "\" for " + std::to_string(size) + " bytes");
      error.headers = std::move(res.headers);
      error.headers.emplace_back("Content-Range", "bytes */" + std::to_string(size));
      return error;
    }
    case ByteRange::Kind::partial:
      res.status = Status::partial_content;
      res.headers.emplace_back("Content-Range", "bytes " + std::to_string(range.first) + "-" +
                                                    std::to_string(range.last) + "/" +
                                                    std::to_string(size));
      res.file = FileBody{std::move(*file), range.first, range.last - range.first + 1};
      break;
    case ByteRange::Kind::invalid:
    case ByteRange::Kind::whole:
      res.file = FileBody{std::move(*file), 0, size};
      break;
  }
  res.content_type = std::move(content_type);
  return res;
}

}  // namespace neco::http
