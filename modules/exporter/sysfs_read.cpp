#include "modules/exporter/sysfs_read.hpp"

#include "modules/exporter/file_cache.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>

namespace neco::exporter::sysfs {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

std::optional<std::uint64_t> digits_in_base(std::string_view s, int base) {
  if (s.empty()) return std::nullopt;
  std::uint64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v, base);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// Applies a sign to a magnitude within int64's range, as ParseInt's range check does.
std::optional<std::int64_t> signed_value(bool negative, std::optional<std::uint64_t> magnitude) {
  if (!magnitude) return std::nullopt;
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (negative) {
    if (*magnitude > kMax + 1) return std::nullopt;
    return *magnitude == kMax + 1 ? std::numeric_limits<std::int64_t>::min()
                                  : -static_cast<std::int64_t>(*magnitude);
  }
  if (*magnitude > kMax) return std::nullopt;
  return static_cast<std::int64_t>(*magnitude);
}

}  // namespace

std::string ReadError::message(const std::filesystem::path& path) const {
  return "Failed to read " + path.string() + ": " + std::strerror(error);
}

std::expected<std::string, ReadError> read_attr(const std::filesystem::path& path) {
  auto r = read_file(path, 128, true);
  if (!r) return std::unexpected(ReadError{r.error()});
  return std::move(*r);
}

std::expected<std::string, ReadError> read_whole(const std::filesystem::path& path) {
  auto r = read_file(path, std::size_t{1} << 20, false);
  if (!r) return std::unexpected(ReadError{r.error()});
  return std::move(*r);
}

std::string_view trim_space(std::string_view s) {
  while (!s.empty() && is_space(s.front()))
    s.remove_prefix(1);
  while (!s.empty() && is_space(s.back()))
    s.remove_suffix(1);
  return s;
}

std::optional<std::int64_t> parse_int(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
  return signed_value(negative, digits_in_base(s, 10));
}

std::optional<std::uint64_t> parse_uint(std::string_view s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
  return digits_in_base(s, 10);
}

std::optional<std::int64_t> parse_int_any_base(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  int base = 10;
  if (s.size() >= 2 && s[0] == '0') {
    const char p = static_cast<char>(s[1] | 0x20);
    if (p == 'x' || p == 'o' || p == 'b') {
      base = p == 'x' ? 16 : p == 'o' ? 8 : 2;
      s.remove_prefix(2);
    } else {
      base = 8;
      s.remove_prefix(1);
    }
  }
  // from_chars would accept a second sign or prefix-less garbage only as a parse failure;
  // a leading sign after the prefix ("0x-1") is refused here as Go refuses it.
  if (s.empty() || s[0] == '-' || s[0] == '+') return std::nullopt;
  return signed_value(negative, digits_in_base(s, base));
}

std::optional<double> parse_float(std::string_view s) {
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  std::string lower(s);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c | 0x20 : c); });
  double v = 0;
  if (lower == "inf" || lower == "infinity") {
    v = std::numeric_limits<double>::infinity();
  } else if (lower == "nan" && !negative && s[0] != '+') {
    v = std::numeric_limits<double>::quiet_NaN();
  } else {
    // Only plain decimal forms: from_chars alone would also take "inf"/"nan" spellings Go
    // refuses ("infin"), and a second sign.
    if (lower.empty() || lower.find_first_not_of("0123456789.e+-") != std::string::npos ||
        lower[0] == '+' || lower[0] == '-') {
      return std::nullopt;
    }
    const auto r =
        std::from_chars(lower.data(), lower.data() + lower.size(), v, std::chars_format::general);
    if (r.ec != std::errc() || r.ptr != lower.data() + lower.size()) return std::nullopt;
  }
  return negative ? -v : v;
}

std::string to_valid_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool in_invalid_run = false;
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t min = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      len = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
      min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
      min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
      min = 0x10000;
    }
    bool valid = len > 0 && i + len <= s.size();
    for (std::size_t k = 1; valid && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) valid = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (valid && len > 1 && (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))) {
      valid = false;
    }
    if (!valid) {
      if (!in_invalid_run) out += "\xEF\xBF\xBD";
      in_invalid_run = true;
      ++i;
      continue;
    }
    in_invalid_run = false;
    out.append(s.substr(i, len));
    i += len;
  }
  return out;
}

std::expected<std::vector<DirEntry>, ReadError> read_dir(const std::filesystem::path& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return std::unexpected(ReadError{errno});
  std::vector<DirEntry> out;
  for (;;) {
    errno = 0;
    const dirent* e = ::readdir(d);
    if (e == nullptr) break;
    const std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    bool regular = e->d_type == DT_REG;
    if (e->d_type == DT_UNKNOWN) {
      struct stat st {};
      regular =
          ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
    }
    out.push_back({std::string(name), regular});
  }
  const int err = errno;
  ::closedir(d);
  if (err != 0) return std::unexpected(ReadError{err});
  std::sort(out.begin(), out.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return out;
}

std::vector<std::filesystem::path> glob_numbered(const std::filesystem::path& dir,
                                                 std::string_view prefix) {
  std::vector<std::filesystem::path> out;
  auto entries = read_dir(dir);
  if (!entries) return out;
  for (const auto& e : *entries) {
    if (e.name.size() > prefix.size() && e.name.starts_with(prefix) &&
        e.name[prefix.size()] >= '0' && e.name[prefix.size()] <= '9') {
      out.push_back(dir / e.name);
    }
  }
  return out;
}

}  // namespace neco::exporter::sysfs
