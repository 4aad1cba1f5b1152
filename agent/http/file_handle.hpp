// An open, read-only file that a Response can stream from. Owning the descriptor (rather than a
// path) is what lets the server send exactly the file that was checked when the response was
// built, even if it is replaced or deleted while a slow client downloads it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

#include "agent/util/error.hpp"

namespace neco::http {

// Owns one file descriptor opened O_RDONLY | O_CLOEXEC; closes it on destruction.
class FileHandle {
 public:
  // Opens `path` for reading. A symlink as the last component is not followed (Errc::
  // invalid_argument); a missing file or directory on the way is Errc::not_found; no permission
  // is Errc::permission_denied; anything else (EMFILE, EIO...) is Errc::unavailable. Opening does
  // not block on a FIFO; callers check the file type with fstat() on fd().
  static Expected<std::shared_ptr<const FileHandle>> open(const std::filesystem::path& path);

  // Adopts `fd` (which may be -1 for "none").
  explicit FileHandle(int fd) noexcept : fd_(fd) {}
  ~FileHandle();
  FileHandle(const FileHandle&) = delete;
  FileHandle& operator=(const FileHandle&) = delete;

  // The descriptor, for fstat() and the like; owned by this object.
  int fd() const noexcept { return fd_; }

  // pread() into `out` at `offset`, retrying EINTR: the bytes read, 0 at end of file.
  Expected<std::size_t> read_at(std::span<char> out, std::uint64_t offset) const;

 private:
  int fd_ = -1;
};

}  // namespace neco::http
