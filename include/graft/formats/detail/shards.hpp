#pragma once
// Sharded checkpoints: an index JSON (model.safetensors.index.json,
// pytorch_model.bin.index.json) whose "weight_map" names the shard file of every tensor, the
// shards beside it. Read as one dict, in the index's order, after checking the index and the
// shards agree.

#include <algorithm>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/detail/safetensors_header.hpp>
#include <graft/formats/detail/json.hpp>
#include <graft/state_dict/value.hpp>

namespace graft::detail {

[[noreturn]] inline void fail_format(const std::string& path, std::string_view what) {
  throw format_error(what, {.file = path});
}

/// The parsed index of a sharded checkpoint: its JSON and the weight map in written order.
struct shard_index {
  detail::json json;
  std::vector<std::pair<std::string, std::string>> weight_map;  ///< tensor name → shard file name
};

inline shard_index parse_shard_index(const std::string& path) {
  auto file = mapped_file::open(path);
  if (file->size() > safetensors_max_header)
    fail_format(path, fmt::format("{} bytes is too large for a sharded checkpoint's index (the limit is {})", file->size(),
                                  safetensors_max_header));
  shard_index index;
  index.json = json::parse(file->bytes(0, file->size()), path, 0);
  if (!index.json.is_object()) fail_format(path, fmt::format("the index is a JSON {}, not an object", index.json.type_name()));
  const auto* weight_map = index.json.find("weight_map");
  if (!weight_map) fail_format(path, "the index has no \"weight_map\"");
  const auto& map = *weight_map;
  if (!map.is_object())
    fail_format(path, fmt::format("\"weight_map\" is a JSON {}, not an object of tensor name → shard file", map.type_name()));
  if (auto metadata = index.json.find("metadata"); metadata && !metadata->is_object())
    fail_format(path, fmt::format("\"metadata\" is a JSON {}, not an object", metadata->type_name()));
  for (const auto& [name, shard] : map.members()) {
    if (!shard.is_string())
      fail_format(path, fmt::format("\"weight_map\" puts tensor '{}' in a JSON {}, not a shard file name", name, shard.type_name()));
    auto s = shard.as_string();
    // Shards live beside the index; a path would let an index reach any file on the machine.
    if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..")
      fail_format(path, fmt::format("\"weight_map\" puts tensor '{}' in '{}', which is not a file name in the index's folder", name, s));
    index.weight_map.emplace_back(name, std::move(s));
  }
  return index;
}

// GCC 12 warns that the moved-from graft::value in dict::append may be uninitialized when it
// inlines std::variant's visit over every alternative; a known false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
/// Reads the sharded checkpoint whose index is `path`; `read_shard(shard_path)` reads one shard
/// as a dict of name → tensor. (A std::function: one reading loop serves every shard format.)
inline value read_sharded(const std::string& path, const std::function<dict(const std::string&)>& read_shard) {
  auto index = parse_shard_index(path);
  const auto dir = std::filesystem::path(path).parent_path();

  std::unordered_map<std::string_view, const std::string*> shard_of;  // tensor → shard the index names
  std::vector<std::string_view> shards;                                // in order of first mention
  for (const auto& [name, shard] : index.weight_map) {
    shard_of.emplace(name, &shard);
    if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
  }

  std::unordered_map<std::string_view, const value*> found;
  found.reserve(index.weight_map.size());
  std::vector<dict> keep;  // owns the keys `found` points into until the result is built
  keep.reserve(shards.size());
  for (auto shard : shards) {
    auto shard_path = (dir / shard).string();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(shard_path, ec)) {
      std::vector<std::string_view> names;
      for (const auto& [name, s] : index.weight_map)
        if (s == shard) names.push_back(name);
      const auto shown = std::min<std::size_t>(names.size(), 5);
      throw io_error(fmt::format("'{}': shard '{}' is missing from {}; \"weight_map\" puts {} tensor{} in it: '{}'{}", path,
                                 shard, dir.empty() ? std::string(".") : dir.string(), names.size(), names.size() == 1 ? "" : "s",
                                 graft::detail::join(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(shown), "', '"),
                                 names.size() > shown ? ", ..." : ""));
    }
    keep.push_back(read_shard(shard_path));
    for (auto& [k, v] : keep.back()) {
      const auto& name = k.as_string();
      auto it = shard_of.find(name);
      if (it == shard_of.end())
        fail_format(path, fmt::format("shard '{}' holds tensor '{}', which \"weight_map\" does not list", shard, name));
      if (*it->second != shard)
        fail_format(path, fmt::format("tensor '{}' is in shard '{}', but \"weight_map\" puts it in '{}'", name, shard, *it->second));
      found.emplace(name, &v);
    }
  }
  dict out;
  out.reserve(index.weight_map.size());
  for (const auto& [name, shard] : index.weight_map) {
    auto it = found.find(name);
    if (it == found.end())
      fail_format(path, fmt::format("tensor '{}' is missing: \"weight_map\" puts it in '{}', which does not hold it", name, shard));
    out.append(name, *it->second);
  }
  return out;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

} // namespace graft::detail
