#pragma once
// Copying checkpoint tensors that view a mapped file into a model's tensors straight from the
// file (pread into the destination), instead of memcpy through the mapping: the kernel copies
// from its page cache once, with none of the mapping's page faults, and the mapped pages are
// never made resident. A page this process has written to (a private copy-on-write page) is
// copied from memory instead, so the result is always the source tensor's current bytes.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <system_error>
#include <thread>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/io/mapped_file.hpp>

namespace graft::detail {

/// A batch of copies dst ← src where src views a mapped file. add() takes the copies that
/// qualify; run() performs them, on several threads when there is much to copy.
class file_copies {
public:
  /// Copies with up to `threads` threads; 0 means one per core, at most 8.
  explicit file_copies(unsigned threads = 0)
      : threads_(threads ? threads : std::clamp(std::thread::hardware_concurrency(), 1u, 8u)) {}

  /// Adds dst ← src if this batch can do it: src is a contiguous view of a mapped file and
  /// dst a contiguous CPU tensor of the same dtype and shape that does not view one. False
  /// leaves the copy to the caller. The caller must not give two destinations that share
  /// storage (their order would matter).
  bool add(const torch::Tensor& dst, const torch::Tensor& src) {
    if (!src.defined() || !dst.defined() || !src.is_cpu() || !dst.is_cpu()) return false;
    if (src.layout() != c10::kStrided || dst.layout() != c10::kStrided || src.is_quantized() || dst.is_quantized()) return false;
    if (src.scalar_type() != dst.scalar_type() || src.sizes() != dst.sizes() || src.numel() == 0) return false;
    if (src.is_conj() || src.is_neg() || dst.is_conj() || dst.is_neg() || dst.is_inference()) return false;
    if (!src.is_contiguous() || !dst.is_contiguous()) return false;
    if (mapped_file::viewed_by(dst.storage())) return false;
    const auto* file = mapped_file::viewed_by(src.storage());
    if (!file) return false;
    const auto* p = static_cast<const std::byte*>(src.data_ptr());
    if (p < file->data() || static_cast<std::size_t>(p - file->data()) + src.nbytes() > file->size()) return false;
    files_.insert(file);
    jobs_.push_back({dst, file, static_cast<std::size_t>(p - file->data()), src.nbytes()});
    return true;
  }

  /// Notes that a copy done elsewhere reads `src` through its mapping, so that run() checks
  /// its file too before anything is written.
  void watch(const torch::Tensor& src) {
    if (src.defined() && src.has_storage())
      if (const auto* file = mapped_file::viewed_by(src.storage())) files_.insert(file);
  }

  bool empty() const noexcept { return jobs_.empty(); }

  /// Performs every copy added. Throws io_error, before writing anything, if a file added or
  /// watched is shorter than when it was mapped (reading its mapping past the end would
  /// crash the process).
  void run() {
    for (const auto* f : files_)
      if (auto now = f->size_on_disk(); now < f->size())
        throw io_error(fmt::format("'{}' is now {} bytes, shorter than the {} it had when it was read; nothing was loaded",
                                   f->path(), now, f->size()));
    if (jobs_.empty()) return;
    // Per file: which pages this process has written to.
    std::unordered_map<const mapped_file*, std::optional<std::vector<std::size_t>>> written;
    for (auto& j : jobs_)
      if (!written.contains(j.file)) written.emplace(j.file, j.file->written_pages());
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<std::size_t> ends;  // running byte total, for splitting the work by bytes
    ends.reserve(jobs_.size());
    std::size_t total = 0;
    for (auto& j : jobs_) {
      const auto& w = written.at(j.file);
      if (!w) {
        j.from_file = false;
      } else {
        auto first = j.offset / page, last = (j.offset + j.nbytes - 1) / page;
        auto it = std::lower_bound(w->begin(), w->end(), first);
        j.from_file = it == w->end() || *it > last;
      }
      ends.push_back(total += j.nbytes);
    }
    // Bytes [begin, end) of the jobs laid end to end.
    auto copy_span = [&](std::size_t begin, std::size_t end) {
      auto k = static_cast<std::size_t>(std::upper_bound(ends.begin(), ends.end(), begin) - ends.begin());
      for (; k < jobs_.size() && begin < end; ++k) {
        const auto& j = jobs_[k];
        const auto job_begin = ends[k] - j.nbytes;
        const auto from = begin - job_begin, n = std::min(end, ends[k]) - begin;
        auto* dst = static_cast<std::byte*>(j.dst.data_ptr()) + from;
        if (!j.from_file || !j.file->read_file(dst, j.offset + from, n)) std::memcpy(dst, j.file->data() + j.offset + from, n);
        begin += n;
      }
    };
    // Threads pay off only for large loads (each gets at least 8 MiB); the split is by bytes,
    // not by tensors, so one huge tensor is shared too.
    const auto threads = std::clamp<std::size_t>(total >> 23, 1, threads_);
    if (threads == 1) {
      copy_span(0, total);
    } else {
      std::vector<std::thread> pool;
      pool.reserve(threads - 1);
      try {
        for (std::size_t t = 1; t < threads; ++t)
          pool.emplace_back([&, t] { copy_span(total * t / threads, total * (t + 1) / threads); });
      } catch (const std::system_error&) {
        // No thread to be had: whatever is not in the pool is copied here.
      }
      const auto in_pool = pool.size();
      copy_span(0, total / threads);
      copy_span(total * (in_pool + 1) / threads, total);
      for (auto& th : pool) th.join();
    }
    // As copy_ would: autograd sees each destination as changed in place.
    for (auto& j : jobs_) torch::autograd::impl::bump_version(j.dst);
    jobs_.clear();
    files_.clear();
  }

private:
  struct job {
    torch::Tensor dst;
    const mapped_file* file;
    std::size_t offset, nbytes;
    bool from_file = false;
  };
  std::vector<job> jobs_;
  std::unordered_set<const mapped_file*> files_;
  std::size_t threads_;
};

} // namespace graft::detail
