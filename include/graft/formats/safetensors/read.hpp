#pragma once
// Reading safetensors files, single or sharded, into a dict of name → tensor that views the
// memory-mapped file.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <graft/detail/dtypes.hpp>
#include <graft/error.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/detail/safetensors_header.hpp>
#include <graft/formats/detail/rethrow.hpp>
#include <graft/formats/detail/shards.hpp>
#include <graft/formats/detail/json.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// How read_safetensors builds tensors.
struct safetensors_options {
  /// View each tensor in the memory-mapped file (no copy; writes to the tensors stay private to
  /// this process). Tensors whose data is not aligned for their dtype are copied regardless.
  /// false copies every tensor into fresh memory.
  bool mmap = true;
};

namespace detail {

inline dict safetensors_tensors(const std::shared_ptr<const mapped_file>& file, const safetensors_header& h,
                                const safetensors_options& opts) {
  dict out;
  out.reserve(h.tensors.size());
  for (const auto& t : h.tensors) {
    const auto offset = h.data_start + t.begin;
    const auto nbytes = t.end - t.begin;
    const auto itemsize = c10::elementSize(t.dtype);
    torch::Tensor tensor;
    try {
      if (opts.mmap && nbytes > 0 && offset % itemsize == 0) {
        std::vector<std::int64_t> strides(t.shape.size());
        std::int64_t s = 1;
        for (std::size_t i = t.shape.size(); i-- > 0;) {
          strides[i] = s;
          s *= t.shape[i];
        }
        tensor = mapped_file::view(file, offset, t.shape, strides, t.dtype);
      } else {
        tensor = torch::empty(t.shape, torch::TensorOptions().dtype(t.dtype));
        if (nbytes) std::memcpy(tensor.data_ptr(), file->data() + offset, nbytes);
      }
    } catch (const c10::Error& e) {
      // e.g. libtorch 2.x refuses an empty shape whose strides overflow ([0, 2^32, 2^32])
      throw format_error(fmt::format("'{}': tensor '{}': shape [{}] is not a tensor libtorch {} can make: {}", file->path(),
                                     t.name, fmt::join(t.shape, ", "), torch_release, e.what_without_backtrace()));
    }
    out.append(t.name, std::move(tensor));  // names are unique: parse_json_strict refuses repeats
  }
  return out;
}

/// Whether `path` names a sharded checkpoint's index rather than a safetensors file.
inline bool is_safetensors_index_path(std::string_view path) noexcept { return path.ends_with(".json"); }

inline value read_safetensors_sharded(const std::string& path, const safetensors_options& opts) {
  return read_sharded(path, [&](const std::string& shard) {
    auto file = mapped_file::open(shard);
    return safetensors_tensors(file, parse_safetensors_header(*file), opts);
  });
}

} // namespace detail

/// Whether `file` looks like a safetensors file: a plausible header length followed by '{'.
inline bool is_safetensors_file(const mapped_file& file) noexcept {
  if (file.size() < 10) return false;
  const auto n = detail::read_le64(file.data());
  return n >= 2 && n <= file.size() - 8 && file.bytes(8, 1) == "{";
}

/// Reads an already-mapped safetensors file; tensors may keep the mapping alive.
inline value read_safetensors(const std::shared_ptr<const mapped_file>& file, const safetensors_options& opts = {}) {
  return detail::rethrow_as_format_error(file->path(), [&] {
    return value(detail::safetensors_tensors(file, detail::parse_safetensors_header(*file), opts));
  });
}

/// Reads a safetensors file into a dict of name → tensor, in the order its header lists them.
/// A path ending in ".json" is a sharded checkpoint's index (`model.safetensors.index.json`):
/// every shard it names in its folder is read and the union returned in the index's order,
/// after checking that each tensor is in the shard the index names and none is missing.
/// Throws io_error if a file cannot be opened and format_error, naming the file, the tensor
/// and the byte offset, if one is malformed.
inline value read_safetensors(const std::string& path, const safetensors_options& opts = {}) {
  if (detail::is_safetensors_index_path(path))
    return detail::rethrow_as_format_error(path, [&] { return detail::read_safetensors_sharded(path, opts); });
  return read_safetensors(mapped_file::open(path), opts);
}

/// The "__metadata__" of a safetensors file (string → string), reading only its header. For a
/// sharded checkpoint's index, its "metadata" object, non-string values as their JSON text
/// (`{"total_size": "1234"}`).
inline std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  if (detail::is_safetensors_index_path(path)) {
    auto index = detail::parse_shard_index(path);
    std::map<std::string, std::string> out;
    if (index.json.contains("metadata"))
      for (const auto& [k, v] : index.json["metadata"].items()) out.emplace(k, v.is_string() ? v.get<std::string>() : v.dump());
    return out;
  }
  return detail::parse_safetensors_header(*mapped_file::open(path)).metadata;
}

} // namespace graft
