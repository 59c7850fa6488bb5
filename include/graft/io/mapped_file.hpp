#pragma once
// A private (copy-on-write) memory map of a whole file, shared by every tensor that views it: the mapping
// lives as long as the last tensor made from it. The file stays open as long as the mapping, so
// a tensor viewing it can later be read straight from the file into its destination
// (io/detail/file_copy.hpp) instead of through the mapping's page faults.

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ATen/ops/from_blob.h>
#include <torch/types.h>

#include <fmt/format.h>

#include <graft/error.hpp>

namespace graft {

/// A file mapped privately into memory: reads come from the page cache, writes stay local. Cheap to share (hold it by shared_ptr).
class mapped_file {
public:
  /// Maps `path`; an io_error naming the file if it cannot be opened or mapped.
  static std::shared_ptr<const mapped_file> open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw io_error(fmt::format("cannot open '{}': {}", path, std::strerror(errno)), {.file = path, .file_in_message = true});
    struct ::stat st {};
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      throw io_error(fmt::format("cannot stat '{}': {}", path, std::strerror(e)), {.file = path, .file_in_message = true});
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw io_error(fmt::format("'{}' is a directory, not a checkpoint file", path), {.file = path, .file_in_message = true});
    }
    std::size_t size = static_cast<std::size_t>(st.st_size);
    void* data = nullptr;
    if (size > 0) {
      // Copy-on-write: a tensor viewing the map can be written to without touching the file.
      data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (data == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        throw io_error(fmt::format("cannot map '{}' ({} bytes): {}", path, size, std::strerror(e)), {.file = path, .file_in_message = true});
      }
    }
    return std::shared_ptr<const mapped_file>(new mapped_file(path, fd, static_cast<const std::byte*>(data), size));
  }

  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
    if (fd_ >= 0) ::close(fd_);
  }

  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }
  std::string_view bytes(std::size_t offset, std::size_t n) const noexcept {
    return {reinterpret_cast<const char*>(data_) + offset, n};
  }

  /// Advises the kernel that [offset, offset+n) will be read soon, sequentially.
  void will_need(std::size_t offset, std::size_t n) const noexcept {
    if (!data_ || n == 0) return;
    auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::size_t start = offset / page * page;
    ::madvise(const_cast<std::byte*>(data_) + start, offset + n - start, MADV_WILLNEED);
  }

  /// Lets the kernel take back this process's pages of [offset, offset+n) (whole pages around
  /// it): a later read faults them in again from the page cache, so a pass over a large file
  /// keeps only what it is reading resident. Only for bytes no one wrote to: the map is
  /// private, and a page written to would lose its writes.
  void release(std::size_t offset, std::size_t n) const noexcept {
    if (!data_ || n == 0 || offset >= size_) return;
    auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::size_t start = offset / page * page;
    std::size_t end = std::min(size_, (offset + n + page - 1) / page * page);
    ::madvise(const_cast<std::byte*>(data_) + start, end - start, MADV_DONTNEED);
  }

  /// Reads [offset, offset+n) of the file as it is on disk into `dst` with pread, bypassing
  /// the mapping (and so any page this process has written to). False if the file could not
  /// give all n bytes (it shrank, or an I/O error); `dst` may then hold part of them.
  bool read_file(void* dst, std::size_t offset, std::size_t n) const noexcept {
    if (offset > size_ || n > size_ - offset) return false;
    auto* out = static_cast<char*>(dst);
    while (n > 0) {
      auto got = ::pread(fd_, out, n, static_cast<off_t>(offset));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      out += got, offset += static_cast<std::size_t>(got), n -= static_cast<std::size_t>(got);
    }
    return true;
  }

  /// The file's size on disk now (it may have changed since it was mapped); the mapped size
  /// if the kernel does not say.
  std::size_t size_on_disk() const noexcept {
    struct ::stat st {};
    return ::fstat(fd_, &st) == 0 ? static_cast<std::size_t>(st.st_size) : size_;
  }

  /// The pages of the mapping this process has written to (its private copies), as page
  /// indices in ascending order; std::nullopt if the kernel does not tell
  /// (/proc/self/pagemap unreadable). An untouched or only-read page is not written.
  std::optional<std::vector<std::size_t>> written_pages() const {
    std::vector<std::size_t> out;
    if (!data_) return out;
    int pm = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (pm < 0) return std::nullopt;
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    const auto first = reinterpret_cast<std::uintptr_t>(data_) / page;
    const auto pages = (size_ + page - 1) / page;
    std::vector<std::uint64_t> entries(std::min<std::size_t>(pages, 1 << 16));
    for (std::size_t done = 0; done < pages;) {
      const auto want = std::min(entries.size(), pages - done);
      const auto got = ::pread(pm, entries.data(), want * sizeof(std::uint64_t),
                               static_cast<off_t>((first + done) * sizeof(std::uint64_t)));
      if (got != static_cast<ssize_t>(want * sizeof(std::uint64_t))) {
        ::close(pm);
        return std::nullopt;
      }
      for (std::size_t i = 0; i < want; ++i) {
        const auto e = entries[i];
        const bool present = e >> 63 & 1, swapped = e >> 62 & 1, file_page = e >> 61 & 1;
        // A private mapping's page that is no longer the file's page cache page is a copy this
        // process wrote (anonymous memory, resident or swapped out).
        if ((present && !file_page) || swapped) out.push_back(done + i);
      }
      done += want;
    }
    ::close(pm);
    return out;
  }

  /// A CPU tensor viewing `sizes`/`strides` of `dtype` starting at byte `offset`, keeping
  /// this mapping alive. The map is private copy-on-write: writes to the tensor stay in this
  /// process and never reach the file.
  static torch::Tensor view(const std::shared_ptr<const mapped_file>& file, std::size_t offset,
                            at::IntArrayRef sizes, at::IntArrayRef strides, torch::Dtype dtype) {
    // for_blob, strides and context cannot throw: the context is owned from here on.
    return at::for_blob(const_cast<std::byte*>(file->data() + offset), sizes)
        .strides(strides)
        .context(new view_context{file}, &release_view)
        .options(torch::TensorOptions().dtype(dtype))
        .make_tensor();
  }

  /// The mapped file a CPU storage views, if it was made by view(); nullptr otherwise.
  static const mapped_file* viewed_by(const c10::Storage& storage) noexcept {
    const auto& dp = storage.data_ptr();
    if (dp.get_deleter() != &release_view) return nullptr;
    return static_cast<const view_context*>(dp.get_context())->file.get();
  }

private:
  struct view_context {
    std::shared_ptr<const mapped_file> file;
  };
  static void release_view(void* ctx) { delete static_cast<view_context*>(ctx); }

  mapped_file(std::string path, int fd, const std::byte* data, std::size_t size)
      : path_(std::move(path)), fd_(fd), data_(data), size_(size) {}
  std::string path_;
  int fd_;
  const std::byte* data_;
  std::size_t size_;
};

} // namespace graft
