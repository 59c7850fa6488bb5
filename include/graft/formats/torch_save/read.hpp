#pragma once
// Reading Python torch.save files into a graft::value tree: the zip format (PyTorch >= 1.6)
// with tensors viewing the memory-mapped file, and the legacy format (torch_save/legacy.hpp).

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/formats/detail/pickle_reader.hpp>
#include <graft/formats/detail/rethrow.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/torch_save/legacy.hpp>
#include <graft/io/detail/zip.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// How read_torch_save builds tensors.
struct torch_save_options {
  /// View each stored, dtype-aligned storage record in the memory-mapped file (no copy; writes
  /// to the tensors stay private to this process). false copies every storage into fresh memory.
  bool mmap = true;
};

namespace detail {

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

inline value read_torch_save_zip(const std::shared_ptr<const mapped_file>& file, const torch_save_options& opts) {
  const auto& path = file->path();
  zip_archive zip(*file);
  const zip_record* pkl = find_pickle_record(zip);
  if (!pkl) zip.fail("no '<archive>/data.pkl' record: not a torch.save file");
  const std::string prefix(pkl->name.substr(0, pkl->name.size() - 8));
  if (zip.find(prefix + "constants.pkl"))
    zip.fail("a TorchScript archive (it has constants.pkl), not a torch.save file");
  if (auto* order = zip.find(prefix + "byteorder")) {
    if (order->size > 16) zip.fail(fmt::format("record '{}' is not 'little' or 'big'", order->name));
    auto text = zip.read(*order);
    if (text != "little")
      zip.fail(fmt::format("record '{}' says '{}'; graft reads little-endian files only", order->name, text));
  }

  // The pickle is parsed in place when it is stored, which is what torch.save does.
  std::string inflated;
  const auto pickle = zip.bytes(*pkl, inflated);

  zip_storage_loader storages{file, zip, prefix, pkl->name, opts.mmap};
  detail::unpickler reader(pickle, path, pkl->name, std::ref(storages));
  return reader.run();
}

} // namespace detail

/// Whether `file` holds a Python torch.save archive: a zip with an "<archive>/data.pkl" record
/// that is not a TorchScript archive (those also have constants.pkl).
inline bool is_torch_save_file(const mapped_file& file) noexcept {
  try {
    detail::zip_archive zip(file);
    auto* pkl = detail::find_pickle_record(zip);
    return pkl && !zip.find(std::string(pkl->name.substr(0, pkl->name.size() - 8)) + "constants.pkl");
  } catch (...) {
    return false;
  }
}

/// Reads an already-mapped torch.save file, of either format; tensors may keep the mapping alive.
inline value read_torch_save(const std::shared_ptr<const mapped_file>& file, const torch_save_options& opts = {}) {
  if (is_legacy_torch_save_file(*file)) return read_torch_save_legacy(file);
  return detail::rethrow_as_format_error(file->path(), [&] { return detail::read_torch_save_zip(file, opts); });
}

/// Reads the Python torch.save file at `path` into an object tree (the zip format, or the legacy
/// format of PyTorch < 1.6 read as read_torch_save_legacy does): a
/// state dict becomes a dict of key → Tensor, a training checkpoint nested dicts. Tensors that
/// share a storage in the file share memory. Throws io_error if the file cannot be opened and
/// format_error, naming the file and the offending record or pickle byte, if it is malformed.
inline value read_torch_save(const std::string& path, const torch_save_options& opts = {}) {
  return read_torch_save(mapped_file::open(path), opts);
}

} // namespace graft
