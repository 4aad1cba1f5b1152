#include "modules/exporter/file_cache.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <vector>

namespace neco::exporter {
namespace {

thread_local FileCache* active = nullptr;

// Cached descriptors of all collectors together stay within a quarter of the descriptor
// limit (and 4096), leaving the rest to the agent's connections; past it files are opened
// per read as before.
std::atomic<std::size_t> cached_total{0};

std::size_t cache_budget() {
  static const std::size_t budget = [] {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 4096UL;
    return std::min<std::size_t>(4096, limit.rlim_cur / 4);
  }();
  return budget;
}

bool pseudo_file(int fd) {
  struct statfs fs {};
  if (::fstatfs(fd, &fs) != 0) return false;
  return fs.f_type == PROC_SUPER_MAGIC || fs.f_type == SYSFS_MAGIC;
}

// Reads `fd` from offset 0 (see read_file).
std::expected<std::string, int> read_from_start(int fd, std::size_t limit, bool single_read,
                                                bool rewind) {
  if (single_read) {
    std::string out(limit, '\0');
    ssize_t n = 0;
    do {
      n = ::pread(fd, out.data(), out.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return std::unexpected(errno);
    out.resize(static_cast<std::size_t>(n));
    return out;
  }
  // lseek to 0 restarts a seq_file; the reads that follow continue sequentially (a pread at
  // an offset would make the kernel regenerate the file up to it).
  if (rewind && ::lseek(fd, 0, SEEK_SET) < 0) return std::unexpected(errno);
  std::string out;
  std::size_t used = 0;
  out.resize(std::min<std::size_t>(limit, 4096));
  while (used < limit) {
    if (used == out.size()) out.resize(std::min(limit, out.size() * 2));
    const ssize_t n = ::read(fd, out.data() + used, out.size() - used);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return std::unexpected(errno);
    }
    used += static_cast<std::size_t>(n);
  }
  out.resize(used);
  return out;
}

}  // namespace

FileCache::~FileCache() {
  for (const auto& [path, file] : files_)
    ::close(file.fd);
  cached_total -= files_.size();
}

FileCacheScope::FileCacheScope(FileCache& cache) {
  if (active != nullptr) return;
  active = &cache;
  cache_ = &cache;
  ++cache.run_;
}

FileCacheScope::~FileCacheScope() {
  if (cache_ == nullptr) return;
  active = nullptr;
  std::erase_if(cache_->files_, [&](const auto& entry) {
    if (entry.second.run == cache_->run_) return false;
    ::close(entry.second.fd);
    --cached_total;
    return true;
  });
}

std::expected<std::string, int> read_file(const std::filesystem::path& path, std::size_t limit,
                                          bool single_read) {
  FileCache* cache = active;
  if (cache != nullptr) {
    auto it = cache->files_.find(path.native());
    if (it != cache->files_.end()) {
      it->second.run = cache->run_;
      auto content = read_from_start(it->second.fd, limit, single_read, true);
      // ENODEV: the device behind a sysfs file is gone; the path may name a new one now.
      if (content || content.error() != ENODEV) return content;
      ::close(it->second.fd);
      cache->files_.erase(it);
      --cached_total;
    }
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::unexpected(errno);
  auto content = read_from_start(fd, limit, single_read, false);
  if (cache != nullptr && cached_total.load() < cache_budget() && pseudo_file(fd)) {
    ++cached_total;
    cache->files_.emplace(path.native(), FileCache::File{fd, cache->run_});
  } else {
    ::close(fd);
  }
  return content;
}

}  // namespace neco::exporter
