#pragma once
// What the readers of zip checkpoints share (torch.save's zip format, libtorch archives): the
// pickle record, and the storages its persistent ids name.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/io/detail/zip.hpp>
#include <graft/io/mapped_file.hpp>

namespace graft::detail {

/// The archive's pickle record: "<name>/data.pkl" directly under the archive's one folder.
inline const zip_record* find_pickle_record(const zip_archive& zip) noexcept {
  for (const auto& r : zip.records()) {
    auto slash = r.name.find('/');
    if (r.name.ends_with("/data.pkl") && slash == r.name.size() - 9) return &r;
  }
  return zip.find("data.pkl");
}

/// The storages a pickle's persistent ids name, read from "<prefix>data/<key>" records: a
/// stored record whose offset suits the dtype is viewed in the mapped file (when `mmap`),
/// anything else copied. A record named twice is one storage.
struct zip_storage_loader {
  const std::shared_ptr<const mapped_file>& file;
  const zip_archive& zip;
  std::string prefix;         ///< "<archive>/"
  std::string_view pickle;    ///< the pickle record's name, for messages
  bool mmap = true;
  std::unordered_map<std::string, c10::Storage> storages{};
  std::string record_name{};

  c10::Storage operator()(std::string_view key, torch::Dtype dtype, std::int64_t numel, std::size_t at) {
    record_name.assign(prefix).append("data/").append(key);
    const zip_record* rec = zip.find(record_name);
    if (!rec)
      zip.fail(fmt::format("storage record '{}' is missing (named at byte {} of {})", record_name, at, pickle));
    const auto itemsize = static_cast<std::int64_t>(c10::elementSize(dtype));
    std::int64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, itemsize, &nbytes) || static_cast<std::uint64_t>(nbytes) > rec->size)
      zip.fail(fmt::format("storage record '{}' holds {} bytes, fewer than its {} elements of {} need (named at byte {} of {})",
                           record_name, rec->size, numel, c10::toString(dtype), at, pickle));
    if (auto it = storages.find(record_name); it != storages.end()) return it->second;
    c10::Storage storage;
    const bool can_view = rec->method == 0 && mmap;
    const std::uint64_t start = can_view ? zip.data_offset(*rec) : 0;  // reads the record's local header
    if (can_view && start % itemsize == 0) {
      storage = mapped_file::view(file, start, {static_cast<std::int64_t>(rec->size)}, {1}, torch::kByte).storage();
    } else {
      auto bytes = torch::empty({static_cast<std::int64_t>(rec->size)}, torch::kByte);
      zip.read_into(*rec, bytes.data_ptr());
      storage = bytes.storage();
    }
    storages.emplace(record_name, storage);
    return storage;
  }
};

} // namespace graft::detail
