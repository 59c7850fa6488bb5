#pragma once
// The definitions of torch_save/legacy.hpp.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/io/detail/atomic_file.hpp>
#include <graft/formats/detail/pickle_reader.hpp>
#include <graft/formats/detail/pickle_writer.hpp>
#include <graft/formats/detail/rethrow.hpp>
#include <graft/formats/torch_save/legacy.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

namespace detail {

inline constexpr unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
inline constexpr std::int64_t legacy_protocol_version = 1001;

/// Where the magic-number pickle that starts a legacy torch.save file ends, or 0 if `f` does not
/// start with one: PROTO 2-5, a FRAME from protocol 4 on, LONG1 of the 10 magic bytes, STOP.
inline std::size_t legacy_magic_end(const mapped_file& f) noexcept {
  const auto* d = reinterpret_cast<const unsigned char*>(f.bytes(0, 0).data());
  const std::size_t n = f.size();
  if (n < 2 || d[0] != 0x80 || d[1] < 2 || d[1] > 5) return 0;
  std::size_t p = 2;
  if (p < n && d[p] == 0x95) p += 9;
  if (n < p + 13 || d[p] != 0x8a || d[p + 1] != 10 || std::memcmp(d + p + 2, legacy_magic, 10) != 0 || d[p + 12] != '.')
    return 0;
  return p + 13;
}

GRAFT_FUNC bool is_torch_save_tar(const mapped_file& f) noexcept { return f.size() >= 512 && f.bytes(257, 5) == "ustar"; }

class legacy_reader {
public:
  explicit legacy_reader(std::shared_ptr<const mapped_file> file) : file_(std::move(file)), path_(file_->path()) {}

  value run() {
    pos_ = legacy_magic_end(*file_);
    if (pos_ == 0) fail("it does not start with torch.save's magic number", 0);
    const auto version = small("protocol version");
    if (!version.is_int() || version.as_int() != legacy_protocol_version)
      fail(fmt::format("protocol version {} is not {}, the one torch.save's legacy format has",
                       version.is_int() ? std::to_string(version.as_int()) : std::string(version.type_name()),
                       legacy_protocol_version),
           pos_);
    const auto sys_info = small("sys_info");
    if (sys_info.is_dict())
      if (auto* le = sys_info.as_dict().find("little_endian"); le && le->is_bool() && !le->as_bool())
        fail("it was written on a big-endian machine; graft reads little-endian files only", pos_);

    const auto main_at = pos_;
    unpickler main(rest(), path_, "the file", [this](std::string_view key, torch::Dtype dtype, std::int64_t numel,
                                                     std::size_t at) { return storage(key, dtype, numel, at); },
                   pickle_dialect::torch_save, main_at);
    value root = main.run();
    pos_ += main.consumed();

    const auto keys_at = pos_;
    const auto keys = small("storage key list");
    if (!keys.is_sequence()) fail(fmt::format("the storage key list is a {}, not a list", keys.type_name()), keys_at);
    for (const auto& k : keys.as_sequence().items) {
      if (!k.is_string()) fail(fmt::format("the storage key list holds a {}, not a str", k.type_name()), keys_at);
      fill(k.as_string());
    }
    for (const auto& [key, s] : storages_)
      if (!s.filled)
        fail(fmt::format("storage '{}', which the pickle at byte {} uses, is not in the storage key list", key, main_at),
             keys_at);
    read_storages();
    return root;
  }

private:
  struct stored {
    torch::Tensor bytes;
    std::int64_t nbytes;
    std::int64_t itemsize;
    bool filled = false;
  };

  [[noreturn]] void fail(std::string_view what, std::size_t at) const {
    throw format_error(what, {.file = path_, .record = "the file, a legacy torch.save file", .offset = at});
  }
  std::string_view rest() const { return file_->bytes(pos_, file_->size() - pos_); }

  // One of the small pickles around the object: it may not name a storage.
  value small(std::string_view what) {
    if (pos_ >= file_->size()) fail(fmt::format("the file ends before its {}", what), pos_);
    unpickler u(rest(), path_, "the file",
                [&](std::string_view, torch::Dtype, std::int64_t, std::size_t at) -> c10::Storage {
                  fail(fmt::format("the {} names a storage", what), pos_ + at);
                },
                pickle_dialect::torch_save, pos_);
    value v = u.run();
    pos_ += u.consumed();
    return v;
  }

  // A storage the object names: allocated now, filled from the bytes after the key list. What
  // the storages claim is bounded by the file's size, so a forged count allocates nothing.
  c10::Storage storage(std::string_view key, torch::Dtype dtype, std::int64_t numel, std::size_t at) {
    const auto itemsize = static_cast<std::int64_t>(c10::elementSize(dtype));
    std::int64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, itemsize, &nbytes)) nbytes = -1;
    if (auto it = storages_.find(std::string(key)); it != storages_.end()) {
      if (nbytes != it->second.nbytes)
        fail(fmt::format("storage '{}' is named as {} elements of {} bytes, but as {} bytes before", key, numel, itemsize,
                         it->second.nbytes),
             at);
      return it->second.bytes.storage();
    }
    if (nbytes < 0 || static_cast<std::uint64_t>(nbytes) > file_->size() - claimed_)
      fail(fmt::format("storage '{}' of {} elements of {} bytes does not fit in the file's {} bytes beside the other "
                       "storages",
                       key, numel, itemsize, file_->size()),
           at);
    claimed_ += static_cast<std::uint64_t>(nbytes);
    auto bytes = torch::empty({nbytes}, torch::kByte);
    storages_.emplace(std::string(key), stored{bytes, nbytes, itemsize});
    return bytes.storage();
  }

  // The next storage record: an int64 element count, then the bytes.
  void fill(const std::string& key) {
    auto it = storages_.find(key);
    if (it == storages_.end()) fail(fmt::format("the storage key list names '{}', which the pickle does not use", key), pos_);
    auto& s = it->second;
    if (s.filled) fail(fmt::format("the storage key list names '{}' twice", key), pos_);
    if (file_->size() - pos_ < 8) fail(fmt::format("the file ends inside the element count of storage '{}'", key), pos_);
    std::int64_t count = 0;
    std::memcpy(&count, file_->bytes(pos_, 8).data(), 8);
    std::int64_t nbytes = 0;
    if (count < 0 || __builtin_mul_overflow(count, s.itemsize, &nbytes) || nbytes != s.nbytes)
      fail(fmt::format("storage '{}' holds {} elements of {} bytes, but the pickle says {} bytes", key, count, s.itemsize,
                       s.nbytes),
           pos_);
    pos_ += 8;
    if (static_cast<std::uint64_t>(nbytes) > file_->size() - pos_)
      fail(fmt::format("the file ends inside storage '{}' ({} bytes, {} left)", key, nbytes, file_->size() - pos_), pos_);
    if (nbytes) reads_.push_back({&it->first, static_cast<std::byte*>(s.bytes.data_ptr()), pos_, static_cast<std::size_t>(nbytes)});
    pos_ += static_cast<std::size_t>(nbytes);
    s.filled = true;
  }

  // Reads every storage record into its tensor once the whole file has been checked: pread,
  // not a copy through the map (the file's pages are not mapped into the process too), split
  // by bytes over up to 8 threads, each with at least 8 MiB, since the records are unaligned
  // and cannot be mapped.
  void read_storages() {
    // One readahead request for all the records: read in pieces from a cold page cache, small
    // records would each wait for the disk.
    if (!reads_.empty()) file_->will_need(reads_.front().pos, reads_.back().pos + reads_.back().nbytes - reads_.front().pos);
    std::vector<std::size_t> ends;  // running byte total of the reads laid end to end
    std::size_t total = 0;
    for (const auto& r : reads_) ends.push_back(total += r.nbytes);
    std::atomic<const read*> failed{nullptr};
    std::atomic<int> failed_errno{0};
    auto read_span = [&](std::size_t begin, std::size_t end) {
      auto k = static_cast<std::size_t>(std::upper_bound(ends.begin(), ends.end(), begin) - ends.begin());
      for (; k < reads_.size() && begin < end; ++k) {
        const auto& r = reads_[k];
        const auto from = begin - (ends[k] - r.nbytes), n = std::min(end, ends[k]) - begin;
        if (!file_->read_file(r.dst + from, r.pos + from, n)) {
          const read* none = nullptr;
          if (failed.compare_exchange_strong(none, &r)) failed_errno = errno;
          return;
        }
        begin += n;
      }
    };
    const auto threads = std::clamp<std::size_t>(total >> 23, 1, std::clamp(std::thread::hardware_concurrency(), 1u, 8u));
    std::vector<std::thread> pool;
    try {
      for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(read_span, total * t / threads, total * (t + 1) / threads);
    } catch (const std::system_error&) {
      // No thread to be had: whatever is not in the pool is read here.
    }
    read_span(0, total / threads);
    read_span(total * (pool.size() + 1) / threads, total);
    for (auto& th : pool) th.join();
    if (const read* r = failed.load())
      throw io_error(fmt::format("cannot read '{}': {} (storage '{}', bytes {} to {})", path_, std::strerror(failed_errno.load()),
                                 *r->key, r->pos, r->pos + r->nbytes));
  }

  // One storage record to read: its bytes in the file, and where they go.
  struct read {
    const std::string* key;
    std::byte* dst;
    std::size_t pos, nbytes;
  };

  std::shared_ptr<const mapped_file> file_;
  const std::string& path_;
  std::size_t pos_ = 0;
  std::uint64_t claimed_ = 0;
  std::unordered_map<std::string, stored> storages_;
  std::vector<read> reads_;
};

} // namespace detail

GRAFT_FUNC bool is_legacy_torch_save_file(const mapped_file& file) noexcept { return detail::legacy_magic_end(file) != 0; }

GRAFT_FUNC value read_torch_save_legacy(const std::shared_ptr<const mapped_file>& file) {
  return detail::rethrow_as_format_error(file->path(), [&] { return detail::legacy_reader(file).run(); });
}

GRAFT_FUNC value read_torch_save_legacy(const std::string& path) { return read_torch_save_legacy(mapped_file::open(path)); }

GRAFT_FUNC void write_torch_save_legacy(const std::string& path, const value& obj) {
  detail::pickler main(path, detail::pickler::legacy);
  main.dump(obj);
  auto small = [&](const value& v) {
    detail::pickler p(path);
    p.dump(v);
    return p.bytes();
  };
  dict sys_info, sizes;
  sizes.append("short", 2);
  sizes.append("int", 4);
  sizes.append("long", 4);
  sys_info.append("protocol_version", detail::legacy_protocol_version);
  sys_info.append("little_endian", true);
  sys_info.append("type_sizes", std::move(sizes));
  sequence keys;
  for (const auto& s : main.storages()) keys.items.emplace_back(s.key);

  std::string head = "\x80\x02\x8a\x0a";
  head.append(reinterpret_cast<const char*>(detail::legacy_magic), 10);
  head += '.';
  head += small(detail::legacy_protocol_version);
  head += small(value(std::move(sys_info)));

  detail::write_atomically(path, [&](detail::atomic_file& file) {
    file.write(head.data(), head.size());
    file.write(main.bytes().data(), main.bytes().size());
    const auto list = small(value(std::move(keys)));
    file.write(list.data(), list.size());
    for (const auto& s : main.storages()) {
      const std::int64_t count = s.numel;
      file.write(&count, 8);
      file.write(s.storage.data(), s.storage.nbytes());
    }
  });
}

} // namespace graft
