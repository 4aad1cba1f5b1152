// Reading and parsing sysfs attributes the way node_exporter 1.5 (and its procfs library)
// does, so the sysfs collectors skip, fail and convert exactly where it does.
#pragma once

#include <cstdint>
#include <expected>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace neco::exporter::sysfs {

// An errno from open(2) or read(2); the collectors decide per errno whether to skip or fail.
struct ReadError {
  int error = 0;
  // "Failed to read PATH: strerror" for a collector's error message.
  std::string message(const std::filesystem::path& path) const;
};

// One read(2) of at most 128 bytes, untrimmed: node_exporter's SysReadFile, which gives up
// at once on drivers that answer EAGAIN instead of polling them.
std::expected<std::string, ReadError> read_attr(const std::filesystem::path& path);

// A whole file (as Go's os.ReadFile), bounded to 1 MiB; sysfs files are one page at most.
std::expected<std::string, ReadError> read_whole(const std::filesystem::path& path);

// Go's strings.TrimSpace for ASCII white space.
std::string_view trim_space(std::string_view s);

// Go's strconv.ParseInt(s, 10, 64): optional sign, decimal digits, no spaces.
std::optional<std::int64_t> parse_int(std::string_view s);
// Go's strconv.ParseUint(s, 10, 64): decimal digits only.
std::optional<std::uint64_t> parse_uint(std::string_view s);
// Go's strconv.ParseInt(s, 0, 64): the base from a 0x, 0o, 0b or 0 prefix ("0x1003" = 4099).
std::optional<std::int64_t> parse_int_any_base(std::string_view s);
// Go's strconv.ParseFloat(s, 64) for decimal forms, "inf", "infinity" and "nan".
std::optional<double> parse_float(std::string_view s);

// Go's strings.ToValidUTF8(s, "\uFFFD"): each run of invalid bytes becomes one U+FFFD.
std::string to_valid_utf8(std::string_view s);

struct DirEntry {
  std::string name;
  bool regular = false;  // a regular file, not following symlinks (Go's DirEntry.Type())
};

// The entries of a directory sorted by name, as Go's os.ReadDir; the errno on failure.
std::expected<std::vector<DirEntry>, ReadError> read_dir(const std::filesystem::path& dir);

// The entries of `dir` named `prefix` followed by a digit and anything, sorted: Go's
// filepath.Glob(dir + "/" + prefix + "[0-9]*"), which also yields nothing for a missing or
// unreadable directory.
std::vector<std::filesystem::path> glob_numbered(const std::filesystem::path& dir,
                                                 std::string_view prefix);

}  // namespace neco::exporter::sysfs
