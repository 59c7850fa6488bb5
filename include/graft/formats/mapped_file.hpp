#pragma once
// A private (copy-on-write) memory map of a whole file, shared by every tensor that views it: the mapping
// lives as long as the last tensor made from it.

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/types.h>

#include <graft/error.hpp>

namespace graft {

/// A file mapped privately into memory: reads come from the page cache, writes stay local. Cheap to share (hold it by shared_ptr).
class mapped_file {
public:
  /// Maps `path`; an io_error naming the file if it cannot be opened or mapped.
  static std::shared_ptr<const mapped_file> open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw io_error(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
    struct ::stat st {};
    if (::fstat(fd, &st) != 0) {
      int e = errno;
      ::close(fd);
      throw io_error(fmt::format("cannot stat '{}': {}", path, std::strerror(e)));
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw io_error(fmt::format("'{}' is a directory, not a checkpoint file", path));
    }
    std::size_t size = static_cast<std::size_t>(st.st_size);
    void* data = nullptr;
    if (size > 0) {
      // Copy-on-write: a tensor viewing the map can be written to without touching the file.
      data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      if (data == MAP_FAILED) {
        int e = errno;
        ::close(fd);
        throw io_error(fmt::format("cannot map '{}' ({} bytes): {}", path, size, std::strerror(e)));
      }
    }
    ::close(fd);
    return std::shared_ptr<const mapped_file>(new mapped_file(path, static_cast<const std::byte*>(data), size));
  }

  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() {
    if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
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

  /// A CPU tensor viewing `sizes`/`strides` of `dtype` starting at byte `offset`, keeping
  /// this mapping alive. The map is private copy-on-write: writes to the tensor stay in this
  /// process and never reach the file.
  static torch::Tensor view(const std::shared_ptr<const mapped_file>& file, std::size_t offset,
                            at::IntArrayRef sizes, at::IntArrayRef strides, torch::Dtype dtype) {
    auto keep = file;
    return torch::from_blob(
        const_cast<std::byte*>(file->data() + offset), sizes, strides,
        [keep](void*) mutable { keep.reset(); }, torch::TensorOptions().dtype(dtype));
  }

private:
  mapped_file(std::string path, const std::byte* data, std::size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const std::byte* data_;
  std::size_t size_;
};

} // namespace graft
