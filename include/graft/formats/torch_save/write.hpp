#pragma once
// Writing graft::value trees as Python torch.save files that torch.load reads back equal.
// The file appears whole or not at all: a temp file in the destination's folder is written,
// flushed to disk and renamed over the destination.

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include <fcntl.h>
#include <unistd.h>

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>

#include <graft/error.hpp>
#include <graft/formats/detail/pickle_writer.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

namespace detail {

// A temp file next to the destination, removed on destruction unless committed.
class temp_file {
public:
  explicit temp_file(const std::string& dest) {
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0; attempt < 100; ++attempt) {
      path_ = fmt::format("{}.tmp-{}-{}", dest, ::getpid(), counter++);
      fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd_ >= 0 || errno != EEXIST) break;
    }
    if (fd_ < 0) throw io_error(fmt::format("cannot write '{}': cannot create '{}': {}", dest, path_, std::strerror(errno)));
  }
  temp_file(const temp_file&) = delete;
  temp_file& operator=(const temp_file&) = delete;
  ~temp_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(path_.c_str());
  }
  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }
  // Flushes, closes and renames over `dest`; returns errno or 0.
  int commit(const std::string& dest) {
    if (::fsync(fd_) != 0) return errno;
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return errno;
    if (::rename(path_.c_str(), dest.c_str()) != 0) return errno;
    committed_ = true;
    // Make the rename itself durable; failing here leaves a complete file, so it is not an error.
    auto dir = std::filesystem::path(dest).parent_path();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
    return 0;
  }

private:
  std::string path_;
  int fd_ = -1;
  bool committed_ = false;
};

} // namespace detail

/// Writes `obj` to `path` as Python's torch.save does (zip format, pickle protocol 2, 64-byte
/// aligned storage records), so torch.load reads it back equal. Dicts whose values are all
/// tensors become OrderedDicts (as state_dict() returns), other dicts plain dicts; tensors that
/// share a storage share it in the file. Atomic: on any error `path` is untouched. Throws
/// format_error for a value that cannot be saved, io_error if the file cannot be written.
inline void write_torch_save(const std::string& path, const value& obj) {
  detail::pickler pickle(path);
  pickle.dump(obj);  // before touching the disk: an unsavable value leaves no trace

  detail::temp_file tmp(path);
  int write_errno = 0;
  {
    // The writer's sink never reports failure to miniz (its destructor would throw); the
    // first error is kept and reported after the archive is closed.
    auto sink = [&](const void* buf, std::size_t n) -> std::size_t {
      const char* p = static_cast<const char*>(buf);
      std::size_t left = n;
      while (left && !write_errno) {
        ssize_t k = ::write(tmp.fd(), p, left);
        if (k < 0) {
          if (errno != EINTR) write_errno = errno;
          continue;
        }
        p += k;
        left -= static_cast<std::size_t>(k);
      }
      return n;
    };
    try {
      caffe2::serialize::PyTorchStreamWriter writer(sink);
      writer.writeRecord("data.pkl", pickle.bytes().data(), pickle.bytes().size());
      std::string name;
      for (const auto& s : pickle.storages()) {
        name.assign("data/").append(s.key);
        writer.writeRecord(name, s.storage.data(), s.storage.nbytes());
      }
      writer.writeEndOfFile();
    } catch (const c10::Error& e) {
      throw io_error(fmt::format("cannot write '{}': {}", path, e.what_without_backtrace()));
    }
  }
  if (write_errno) throw io_error(fmt::format("cannot write '{}': {}", path, std::strerror(write_errno)));
  if (int e = tmp.commit(path)) throw io_error(fmt::format("cannot write '{}': {}", path, std::strerror(e)));
}

} // namespace graft
