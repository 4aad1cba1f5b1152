// node_filesystem_*: statfs(2) of every mount not excluded. The calls run on two lanes of a
// LanePool with one deadline for all; a mount that misses it is "stuck": reported with
// device_error=1 only and not statfs'd again until that earlier call returns, so a hung NFS or
// FUSE mount costs one (reused) thread and one deadline, not every later scrape.
#include <fcntl.h>
#include <linux/magic.h>
#include <poll.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <unordered_map>

#include "agent/log/log.hpp"
#include "modules/exporter/collector.hpp"
#include "modules/exporter/lane_pool.hpp"

namespace neco::exporter {
namespace {

using metrics::MetricFamily;
using metrics::MetricType;

const log::Logger& logger() {
  static const log::Logger l("exporter");
  return l;
}

struct Mount {
  std::string device;
  std::string mountpoint;  // as the kernel reports it (host view)
  std::string fstype;
  bool readonly = false;
};

// Undoes the octal escapes of /proc/*/mounts (" " is "\040", "\\" is "\134", ...).
std::string unescape_mount_field(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
        s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<Mount> parse_mounts(std::string_view text) {
  std::vector<Mount> out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    std::vector<std::string_view> f;
    std::size_t i = 0;
    while (i < line.size() && f.size() < 4) {
      while (i < line.size() && line[i] == ' ')
        ++i;
      const std::size_t b = i;
      while (i < line.size() && line[i] != ' ')
        ++i;
      if (i > b) f.push_back(line.substr(b, i - b));
    }
    if (f.size() < 4) continue;
    Mount m{unescape_mount_field(f[0]), unescape_mount_field(f[1]), std::string(f[2]), false};
    std::string_view opts = f[3];
    while (!opts.empty()) {
      const auto comma = opts.find(',');
      if (opts.substr(0, comma) == "ro") m.readonly = true;
      opts.remove_prefix(comma == std::string_view::npos ? opts.size() : comma + 1);
    }
    out.push_back(std::move(m));
  }
  return out;
}

// One statfs call, shared between its thread and the collector that may stop waiting for it.
struct StatfsCall {
  std::mutex mutex;
  bool done = false;
  int error = 0;
  struct statfs result {};
};

using StatfsFn = std::function<int(const char*, struct ::statfs*)>;

// Lanes for statfs calls: two work each scrape, the rest are held by stuck mounts. A scrape
// with every lane stuck reports the other mounts as device errors until one comes back.
constexpr std::size_t kStatfsLanes = 16;
constexpr std::size_t kStatfsParallel = 2;

// The mount table, re-read only when it changed: procfs mount files signal a change of the
// namespace's mounts with POLLPRI (proc(5)), and reading them is the collector's largest
// kernel cost when nothing changed. Files elsewhere (fixtures) are read every time.
class MountTable {
 public:
  MountTable() = default;
  MountTable(const MountTable&) = delete;
  MountTable& operator=(const MountTable&) = delete;
  ~MountTable() { close(); }

  Expected<std::string_view> read(const Paths& paths) {
    if (fd_ >= 0 && path_ == paths.proc) {
      if (!changed()) return std::string_view(text_);
      if (auto ok = reread(); ok) return std::string_view(text_);
    }
    close();
    for (const char* name : {"1/mounts", "self/mounts"}) {
      const auto file = paths.proc / name;
      fd_ = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ >= 0) break;
    }
    if (fd_ < 0) {
      return fail(Errc::not_found, "Failed to open " + (paths.proc / "self/mounts").string() +
                                       ": " + std::strerror(errno));
    }
    struct statfs fs {};
    pollable_ = ::fstatfs(fd_, &fs) == 0 && fs.f_type == PROC_SUPER_MAGIC;
    path_ = paths.proc;
    if (auto ok = reread(); !ok) {
      close();
      return std::unexpected(ok.error());
    }
    return std::string_view(text_);
  }

 private:
  // Whether the table may differ from text_ (poll reports each change once).
  bool changed() const {
    if (!pollable_) return true;
    pollfd p{fd_, POLLPRI, 0};
    return ::poll(&p, 1, 0) != 0;  // POLLPRI/POLLERR on a change; an error counts as one
  }

  Expected<void> reread() {
    text_.clear();
    if (::lseek(fd_, 0, SEEK_SET) < 0) return fail(Errc::internal, std::strerror(errno));
    char buf[16384];
    for (;;) {
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n == 0) return {};
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail(Errc::internal,
                    std::string("Failed to read the mount table: ") + std::strerror(errno));
      }
      text_.append(buf, static_cast<std::size_t>(n));
    }
  }

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  int fd_ = -1;
  bool pollable_ = false;
  std::filesystem::path path_;
  std::string text_;
};

class FilesystemCollector final : public Collector {
 public:
  explicit FilesystemCollector(const CollectorOptions& options)
      : mount_points_exclude_(options.mount_points_exclude),
        fs_types_exclude_(options.fs_types_exclude),
        mount_timeout_(options.mount_timeout),
        statfs_(options.statfs ? options.statfs : StatfsFn(&::statfs)),
        lanes_(kStatfsLanes) {}

  std::string_view name() const override { return "filesystem"; }

  Expected<void> collect(const Paths& paths, std::vector<MetricFamily>& out) override {
    auto text = mounts_.read(paths);
    if (!text) return std::unexpected(text.error());

    struct Pending {
      Mount mount;
      std::shared_ptr<StatfsCall> call;
    };
    std::vector<Pending> pending;
    std::vector<std::function<void()>> tasks;  // pending[i]'s statfs
    std::vector<Mount> stuck_now;
    const std::string root = paths.root.string();
    std::map<std::string, bool> seen;
    for (auto& m : parse_mounts(*text)) {
      if (excluded(m)) continue;
      // The same mount point listed twice (overmounts): only the last one is visible.
      if (seen.contains(m.mountpoint)) {
        for (std::size_t i = pending.size(); i-- > 0;) {
          if (pending[i].mount.mountpoint == m.mountpoint) {
            pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
            tasks.erase(tasks.begin() + static_cast<std::ptrdiff_t>(i));
          }
        }
      }
      seen[m.mountpoint] = true;
      if (auto it = stuck_.find(m.mountpoint); it != stuck_.end()) {
        std::unique_lock lock(it->second->mutex);
        if (!it->second->done) {
          stuck_now.push_back(m);
          continue;
        }
        lock.unlock();
        logger().info("Mount point \"{}\" answers statfs again", m.mountpoint);
        stuck_.erase(it);
      }
      // statfs the host's mount point as seen from here (node_exporter's --path.rootfs).
      const std::filesystem::path target =
          root == "/" ? std::filesystem::path(m.mountpoint)
                      : paths.root / std::filesystem::path(m.mountpoint).relative_path();
      pending.push_back({m, std::make_shared<StatfsCall>()});
      tasks.emplace_back([call = pending.back().call, fn = statfs_, target] {
        struct statfs buf {};
        const int rc = fn(target.c_str(), &buf);
        const int err = rc == 0 ? 0 : errno;
        std::lock_guard lock(call->mutex);
        call->result = buf;
        call->error = err;
        call->done = true;
      });
    }
    const auto outcomes = lanes_.run(
        std::move(tasks),
        {.batch_deadline = LanePool::Clock::now() + mount_timeout_, .parallel = kStatfsParallel});

    MetricFamily size{.name = "node_filesystem_size_bytes",
                      .help = "Filesystem size in bytes.",
                      .type = MetricType::gauge,
                      .unit = "bytes"};
    MetricFamily free{.name = "node_filesystem_free_bytes",
                      .help = "Filesystem free space in bytes.",
                      .type = MetricType::gauge,
                      .unit = "bytes"};
    MetricFamily avail{.name = "node_filesystem_avail_bytes",
                       .help = "Filesystem space available to non-root users in bytes.",
                       .type = MetricType::gauge,
                       .unit = "bytes"};
    MetricFamily files{.name = "node_filesystem_files",
                       .help = "Filesystem total file nodes.",
                       .type = MetricType::gauge};
    MetricFamily files_free{.name = "node_filesystem_files_free",
                            .help = "Filesystem total free file nodes.",
                            .type = MetricType::gauge};
    MetricFamily readonly{.name = "node_filesystem_readonly",
                          .help = "Filesystem read-only status.",
                          .type = MetricType::gauge};
    MetricFamily device_error{
        .name = "node_filesystem_device_error",
        .help = "Whether an error occurred while getting statistics for the given device.",
        .type = MetricType::gauge};

    auto labels = [](const Mount& m) {
      return std::array<metrics::LabelView, 3>{
          {{"device", m.device}, {"fstype", m.fstype}, {"mountpoint", m.mountpoint}}};
    };
    for (const auto& m : stuck_now)
      device_error.add(1, labels(m));

    for (std::size_t i = 0; i < pending.size(); ++i) {
      const auto& p = pending[i];
      const auto l = labels(p.mount);
      if (outcomes[i] == LanePool::Outcome::timed_out) {
        logger().warning("Mount point \"{}\" timed out in statfs; skipped until it returns",
                         p.mount.mountpoint);
        stuck_[p.mount.mountpoint] = p.call;
        device_error.add(1, l);
        continue;
      }
      if (outcomes[i] == LanePool::Outcome::not_run) {
        logger().debug("No statfs lane left for \"{}\" (others are stuck)", p.mount.mountpoint);
        device_error.add(1, l);
        continue;
      }
      if (p.call->error != 0) {
        logger().debug("Failed to statfs \"{}\": {}", p.mount.mountpoint,
                       std::strerror(p.call->error));
        device_error.add(1, l);
        continue;
      }
      const auto& s = p.call->result;
      const double bsize = static_cast<double>(s.f_bsize);
      device_error.add(0, l);
      size.add(static_cast<double>(s.f_blocks) * bsize, l);
      free.add(static_cast<double>(s.f_bfree) * bsize, l);
      avail.add(static_cast<double>(s.f_bavail) * bsize, l);
      files.add(static_cast<double>(s.f_files), l);
      files_free.add(static_cast<double>(s.f_ffree), l);
      readonly.add(p.mount.readonly || (s.f_flags & ST_RDONLY) != 0 ? 1 : 0, l);
    }
    for (auto* f : {&size, &free, &avail, &files, &files_free, &readonly, &device_error}) {
      out.push_back(std::move(*f));
    }
    return {};
  }

 private:
  // The exclusion verdict for a mount, remembered: mounts rarely change, and two regex
  // searches per mount per scrape were a visible part of the scrape's cost.
  bool excluded(const Mount& m) {
    std::string key = m.fstype + '\0' + m.mountpoint;
    if (auto it = excluded_.find(key); it != excluded_.end()) return it->second;
    const bool out = std::regex_search(m.mountpoint, mount_points_exclude_) ||
                     std::regex_search(m.fstype, fs_types_exclude_);
    if (excluded_.size() >= kMaxRemembered) excluded_.clear();  // bounded under mount churn
    excluded_.emplace(std::move(key), out);
    return out;
  }

  static constexpr std::size_t kMaxRemembered = 4096;
  std::regex mount_points_exclude_;
  std::regex fs_types_exclude_;
  std::unordered_map<std::string, bool> excluded_;
  MountTable mounts_;
  std::chrono::milliseconds mount_timeout_;
  StatfsFn statfs_;
  // Mount points whose statfs missed its deadline, with the call still outstanding.
  std::map<std::string, std::shared_ptr<StatfsCall>> stuck_;
  LanePool lanes_;  // last: destroyed (idle lanes joined) before the state above
};

}  // namespace

std::unique_ptr<Collector> make_filesystem_collector(const CollectorOptions& options) {
  return std::make_unique<FilesystemCollector>(options);
}

}  // namespace neco::exporter
