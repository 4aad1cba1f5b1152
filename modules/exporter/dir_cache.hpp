// Opening many files of a few directories cheaply. A collector run reads dozens of sysfs
// attributes per device (netclass reads ~20 per interface); opened by absolute path, each one
// walks every component and symlink again, which profiling showed to be half of a scrape's
// kernel time. Within a DirCacheScope, open_file() opens each parent directory once (O_PATH)
// and the files relative to it.
#pragma once

#include <filesystem>

namespace neco::exporter {

// Makes open_file() on this thread cache directory descriptors until the scope ends. Scopes
// are per collector run, so a directory replaced between scrapes (an interface removed and
// re-created) is never served from a stale descriptor. Nests: an inner scope is a no-op.
class DirCacheScope {
 public:
  DirCacheScope();
  ~DirCacheScope();
  DirCacheScope(const DirCacheScope&) = delete;
  DirCacheScope& operator=(const DirCacheScope&) = delete;

 private:
  bool owner_ = false;
};

// open(2) of `path` with `flags` (O_CLOEXEC is added), through the active scope's cached
// parent directory when there is one. Same result and errno as a plain open(2).
int open_file(const std::filesystem::path& path, int flags);

}  // namespace neco::exporter
