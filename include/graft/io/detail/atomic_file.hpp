#pragma once
// Writing a file so that it appears whole or not at all: the bytes go to a temp file in the
// destination's folder (same filesystem, so rename is atomic), which is flushed to disk and
// renamed over the destination; on any failure the temp file is removed and the destination
// is left as it was.

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <graft/error.hpp>

namespace graft::detail {

/// The temp file write_atomically hands to its callback. write() never throws: the first
/// failure is kept and reported once the callback returns, so the file can also serve as the
/// sink of a writer whose callbacks must not throw (libtorch's zip writer).
class atomic_file {
public:
  /// Appends `n` bytes; returns `n` even after a failure (see failed()).
  std::size_t write(const void* data, std::size_t n) noexcept {
    const char* p = static_cast<const char*>(data);
    std::size_t left = n;
    while (left && !errno_) {
      ssize_t k = ::write(fd_, p, left);
      if (k < 0) {
        if (errno != EINTR) errno_ = errno;
        continue;
      }
      p += k;
      left -= static_cast<std::size_t>(k);
      written_ += static_cast<std::size_t>(k);
    }
    return n;
  }
  /// Whether a write failed; the file will then not be committed.
  bool failed() const noexcept { return errno_ != 0; }
  /// Bytes written so far.
  std::size_t size() const noexcept { return written_; }
  /// The temp file's descriptor, for writers that want it directly.
  int fd() const noexcept { return fd_; }
  /// The file that will be replaced.
  const std::string& destination() const noexcept { return dest_; }

  atomic_file(const atomic_file&) = delete;
  atomic_file& operator=(const atomic_file&) = delete;
  ~atomic_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());
  }

private:
  template <class F>
  friend void write_atomically(const std::string& path, F&& fill);

  explicit atomic_file(std::string dest) : dest_(std::move(dest)) {
    static std::atomic<unsigned> counter{0};
    const auto p = std::filesystem::path(dest_);
    for (int attempt = 0; attempt < 100; ++attempt) {
      // Hidden, so a crash leaves no file that looks like a checkpoint.
      temp_ = (p.parent_path() / fmt::format(".{}.graft-tmp-{}-{}", p.filename().string(), ::getpid(), counter++)).string();
      fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) fail(fmt::format("cannot create a temp file next to it: {}", std::strerror(errno)));
  }

  [[noreturn]] void fail(std::string_view why) const {
    throw io_error(fmt::format("cannot write '{}': {}", dest_, why));
  }

  void commit() {
    if (errno_) fail(std::strerror(errno_));
    if (::fsync(fd_) != 0) fail(fmt::format("cannot flush it to disk: {}", std::strerror(errno)));
    int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0) fail(std::strerror(errno));
    if (::rename(temp_.c_str(), dest_.c_str()) != 0) fail(fmt::format("cannot rename the temp file over it: {}", std::strerror(errno)));
    committed_ = true;
    // Make the rename durable too; failing here leaves a complete file, so it is not an error.
    auto dir = std::filesystem::path(dest_).parent_path();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

  std::string dest_, temp_;
  int fd_ = -1;
  int errno_ = 0;
  std::size_t written_ = 0;
  bool committed_ = false;
};

/// Calls `fill(atomic_file&)` to write the bytes of `path`, then replaces `path` with them
/// atomically (fsync, rename, fsync of the folder). If `fill` throws or a write fails, the temp
/// file is removed, `path` is untouched and the exception (an io_error for a failed write)
/// propagates.
template <class F>
void write_atomically(const std::string& path, F&& fill) {
  atomic_file file(path);
  std::forward<F>(fill)(file);
  file.commit();
}

} // namespace graft::detail
