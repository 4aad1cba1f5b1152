#include "modules/exporter/dir_cache.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

namespace neco::exporter {
namespace {

// Enough for the largest collector run (hwmon: chip directories and their device/ links);
// beyond it files are opened by their whole path.
constexpr std::size_t kMaxDirs = 256;

struct Cache {
  bool active = false;
  std::vector<std::pair<std::string, int>> dirs;  // parent path -> O_PATH descriptor
};

thread_local Cache cache;

}  // namespace

DirCacheScope::DirCacheScope() : owner_(!cache.active) {
  cache.active = true;
}

DirCacheScope::~DirCacheScope() {
  if (!owner_) return;
  for (const auto& [path, fd] : cache.dirs)
    ::close(fd);
  cache.dirs.clear();
  cache.active = false;
}

int open_file(const std::filesystem::path& path, int flags) {
  flags |= O_CLOEXEC;
  const std::string& whole = path.native();
  const auto slash = whole.rfind('/');
  if (!cache.active || slash == std::string::npos || slash == 0 || slash + 1 == whole.size()) {
    return ::open(whole.c_str(), flags);
  }
  const std::string_view parent(whole.data(), slash);
  int dir = -1;
  for (const auto& [p, fd] : cache.dirs) {
    if (p == parent) {
      dir = fd;
      break;
    }
  }
  if (dir < 0) {
    if (cache.dirs.size() >= kMaxDirs) return ::open(whole.c_str(), flags);
    dir = ::open(std::string(parent).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    // A parent that cannot be opened: the whole path gives the caller its proper errno.
    if (dir < 0) return ::open(whole.c_str(), flags);
    cache.dirs.emplace_back(std::string(parent), dir);
  }
  return ::openat(dir, whole.c_str() + slash + 1, flags);
}

}  // namespace neco::exporter
