#include "agent/runtime/code_residency.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include <fmt/format.h>

namespace neco {
namespace {

// Debian 12's kernel headers predate these (Linux 6.1); the values are ABI.
#ifndef UFFD_USER_MODE_ONLY
constexpr int kUffdUserModeOnly = 1;
#else
constexpr int kUffdUserModeOnly = UFFD_USER_MODE_ONLY;
#endif
constexpr std::uint64_t kUffdFeatureWpAsync = 1ULL << 15;

struct Mapping {
  std::uintptr_t start = 0;
  std::uintptr_t end = 0;
  bool candidate = false;  // read-only, private, of the executable
  std::size_t rss_kib = 0;
  std::size_t anonymous_kib = 0;
};

// The executable's mappings from /proc/self/smaps, matched by device and inode (the path may
// carry " (deleted)" after an upgrade replaced the file).
std::vector<Mapping> executable_mappings(dev_t dev, ino_t ino) {
  std::vector<Mapping> out;
  FILE* f = std::fopen("/proc/self/smaps", "re");
  if (f == nullptr) return out;
  char line[4096];
  Mapping* cur = nullptr;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    std::uintptr_t start = 0;
    std::uintptr_t end = 0;
    char perms[5] = {};
    unsigned long long offset = 0;
    unsigned major_no = 0;
    unsigned minor_no = 0;
    unsigned long long inode = 0;
    if (std::sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %4s %llx %x:%x %llu", &start, &end, perms,
                    &offset, &major_no, &minor_no, &inode) == 7) {
      cur = nullptr;
      if (inode == ino && makedev(major_no, minor_no) == dev) {
        const std::string_view p(perms);
        out.push_back({start, end, p[0] == 'r' && p[1] == '-' && p[3] == 'p', 0, 0});
        cur = &out.back();
      }
      continue;
    }
    if (cur == nullptr) continue;
    std::size_t kib = 0;
    if (std::sscanf(line, "Rss: %zu kB", &kib) == 1) cur->rss_kib = kib;
    if (std::sscanf(line, "Anonymous: %zu kB", &kib) == 1) cur->anonymous_kib = kib;
  }
  std::fclose(f);
  return out;
}

// The registered ranges, written once by map_code_on_demand() before any other thread exists.
std::vector<Mapping>& registered() {
  static std::vector<Mapping> ranges;
  return ranges;
}

std::size_t drop_pages(const Mapping& m) {
  // NOLINTNEXTLINE(performance-no-int-to-ptr): the address comes from /proc/self/smaps.
  return ::madvise(reinterpret_cast<void*>(m.start), m.end - m.start, MADV_DONTNEED) == 0
             ? m.rss_kib * 1024
             : 0;
}

}  // namespace

CodeResidency map_code_on_demand() {
  CodeResidency r;
  if (const char* off = std::getenv("NECO_CODE_FAULT_AROUND"); off != nullptr && *off == '1') {
    r.detail = "NECO_CODE_FAULT_AROUND=1";
    return r;
  }
  struct stat st {};
  if (::stat("/proc/self/exe", &st) != 0) {
    r.detail = fmt::format("stat /proc/self/exe: {}", std::strerror(errno));
    return r;
  }
  const int fd =
      static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | kUffdUserModeOnly));
  if (fd < 0) {
    r.detail = fmt::format("userfaultfd: {}", std::strerror(errno));
    return r;
  }
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kUffdFeatureWpAsync;
  if (::ioctl(fd, UFFDIO_API, &api) != 0 || (api.features & kUffdFeatureWpAsync) == 0) {
    r.detail = fmt::format("userfaultfd without asynchronous write-protect (Linux < 6.7): {}",
                           std::strerror(errno));
    ::close(fd);
    return r;
  }
  for (const auto& m : executable_mappings(st.st_dev, st.st_ino)) {
    // A mapping with private (anonymous) pages was written, e.g. RELRO after relocation:
    // dropping its pages would lose the writes.
    if (!m.candidate || m.anonymous_kib != 0) continue;
    uffdio_register reg{};
    reg.range.start = m.start;
    reg.range.len = m.end - m.start;
    reg.mode = UFFDIO_REGISTER_MODE_WP;
    if (::ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
      r.detail = fmt::format("register {:#x}-{:#x}: {}", m.start, m.end, std::strerror(errno));
      continue;
    }
    r.registered_bytes += m.end - m.start;
    r.dropped_bytes += drop_pages(m);
    registered().push_back(m);
  }
  if (r.registered_bytes == 0) {
    ::close(fd);
    if (r.detail.empty()) r.detail = "no read-only mapping of the executable found";
    return r;
  }
  // fd stays open on purpose: the registration ends when it is closed.
  r.applied = true;
  return r;
}

void release_code_pages() {
  for (const auto& m : registered())
    drop_pages(m);
}

}  // namespace neco
