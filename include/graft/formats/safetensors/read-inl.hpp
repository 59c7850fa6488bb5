#pragma once
// The definitions of safetensors/read.hpp.

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
#include <torch/types.h>

#include <graft/detail/dtypes.hpp>
#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/detail/safetensors_header.hpp>
#include <graft/formats/detail/rethrow.hpp>
#include <graft/formats/detail/shards.hpp>
#include <graft/formats/detail/json.hpp>
#include <graft/formats/safetensors/read.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

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
                                     t.name, graft::detail::join(t.shape, ", "), torch_release, e.what_without_backtrace()));
    }
    out.append(t.name, std::move(tensor));  // names are unique: the JSON reader refuses repeats
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

GRAFT_FUNC bool is_safetensors_file(const mapped_file& file) noexcept {
  if (file.size() < 10) return false;
  const auto n = detail::read_le64(file.data());
  return n >= 2 && n <= file.size() - 8 && file.bytes(8, 1) == "{";
}

GRAFT_FUNC value read_safetensors(const std::shared_ptr<const mapped_file>& file, const safetensors_options& opts) {
  return detail::rethrow_as_format_error(file->path(), [&] {
    return value(detail::safetensors_tensors(file, detail::parse_safetensors_header(*file), opts));
  });
}

GRAFT_FUNC value read_safetensors(const std::string& path, const safetensors_options& opts) {
  if (detail::is_safetensors_index_path(path))
    return detail::rethrow_as_format_error(path, [&] { return detail::read_safetensors_sharded(path, opts); });
  return read_safetensors(mapped_file::open(path), opts);
}

GRAFT_FUNC std::map<std::string, std::string> read_safetensors_metadata(const std::string& path) {
  if (detail::is_safetensors_index_path(path)) {
    auto index = detail::parse_shard_index(path);
    std::map<std::string, std::string> out;
    if (auto metadata = index.json.find("metadata"))
      for (const auto& [k, v] : metadata->members()) out.emplace(k, v.is_string() ? v.as_string() : v.dump());
    return out;
  }
  return detail::parse_safetensors_header(*mapped_file::open(path)).metadata;
}

} // namespace graft
