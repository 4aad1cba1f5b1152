// Reading procfs and sysfs files the cheap way. Opening a pseudo file costs more than reading
// it: profiling a full scrape put open(2)/close(2) and their path walks at a third of the
// agent's CPU (netclass alone reads ~20 attributes per interface). These files produce fresh
// content whenever they are read from offset 0, so a collector keeps them open across scrapes
// and re-reads them in place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <filesystem>
#include <string>
#include <unordered_map>

namespace neco::exporter {

// One collector's open pseudo files. Used by that collector's runs only, which never overlap.
class FileCache {
 public:
  FileCache() = default;
  ~FileCache();
  FileCache(const FileCache&) = delete;
  FileCache& operator=(const FileCache&) = delete;

  // Files open now (for tests).
  std::size_t size() const { return files_.size(); }

 private:
  friend class FileCacheScope;
  friend std::expected<std::string, int> read_file(const std::filesystem::path&, std::size_t, bool);
  struct File {
    int fd = -1;
    std::uint64_t run = 0;  // the last run that read it
  };
  std::unordered_map<std::string, File> files_;
  std::uint64_t run_ = 0;
};

// Makes read_file() on this thread use `cache` until the scope ends; then the files this run
// did not read (a device that went away) are closed. An inner scope is a no-op.
class FileCacheScope {
 public:
  explicit FileCacheScope(FileCache& cache);
  ~FileCacheScope();
  FileCacheScope(const FileCacheScope&) = delete;
  FileCacheScope& operator=(const FileCacheScope&) = delete;

 private:
  FileCache* cache_ = nullptr;  // null when another scope was already active
};

// The content of `path` from its start: with `single_read`, what one read(2) of at most
// `limit` bytes returns (sysfs attributes, as node_exporter reads them); otherwise everything
// up to EOF, at most `limit` bytes. The errno of open(2) or read(2) on failure. Inside a scope,
// procfs and sysfs files stay open for the next run; a cached file whose device went away
// (ENODEV) is reopened by path once.
std::expected<std::string, int> read_file(const std::filesystem::path& path, std::size_t limit,
                                          bool single_read);

}  // namespace neco::exporter
