// FileHandle: open(2) and pread(2) with errors turned into Expected values.
#include "agent/http/file_handle.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

namespace neco::http {

Expected<std::shared_ptr<const FileHandle>> FileHandle::open(const std::filesystem::path& path) {
  // O_NONBLOCK only matters for FIFOs and devices, which the caller refuses after fstat(); for a
  // regular file reads are unaffected.
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    const int err = errno;
    const auto what =
        "Failed to open \"" + path.string() + "\": " + std::generic_category().message(err);
    switch (err) {
      case ENOENT:
      case ENOTDIR:
        return fail(Errc::not_found, what);
      case EACCES:
      case EPERM:
        return fail(Errc::permission_denied, what);
      case ELOOP:
        return fail(Errc::invalid_argument,
                    "Failed to open \"" + path.string() + "\": it is a symlink, not followed");
      default:
        return fail(Errc::unavailable, what);
    }
  }
  return std::make_shared<const FileHandle>(fd);
}

FileHandle::~FileHandle() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<std::size_t> FileHandle::read_at(std::span<char> out, std::uint64_t offset) const {
  for (;;) {
    const auto n = ::pread(fd_, out.data(), out.size(), static_cast<off_t>(offset));
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno == EINTR) continue;
    return fail(Errc::unavailable, "Failed to read at offset " + std::to_string(offset) + ": " +
                                       std::generic_category().message(errno));
  }
}

}  // namespace neco::http
