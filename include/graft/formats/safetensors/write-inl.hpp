#pragma once
// The definitions of safetensors/write.hpp.

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <functional>
#include <map>
#include <new>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/detail/order.hpp>
#include <graft/error.hpp>
#include <graft/formats/detail/json.hpp>
#include <graft/formats/detail/safetensors_header.hpp>
#include <graft/formats/safetensors/write.hpp>
#include <graft/io/detail/atomic_file.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

namespace detail {

// Flattens nested dicts into dotted names, so a checkpoint tree ({"model": {...}}) can be saved.
inline void collect_safetensors(const std::string& path, const dict& d, std::string& prefix,
                                std::vector<std::pair<std::string, torch::Tensor>>& out) {
  for (const auto& [k, v] : d) {
    const auto size = prefix.size();
    prefix += k.key_text();
    if (v.is_dict()) {
      prefix += '.';
      collect_safetensors(path, v.as_dict(), prefix, out);
    } else if (v.is_tensor()) {
      out.emplace_back(prefix, v.as_tensor());
    } else {
      throw format_error(fmt::format("cannot write '{}': '{}' is a {}, and a safetensors file holds only tensors", path,
                                     prefix, v.type_name()));
    }
    prefix.resize(size);
  }
}

} // namespace detail

GRAFT_FUNC void write_safetensors(const std::string& path, const std::vector<tensor_spec>& specs,
                                  const std::function<torch::Tensor(std::size_t)>& produce,
                                  const std::map<std::string, std::string>& metadata) {
  auto fail = [&](std::string_view what, std::string_view key = {}) {
    throw format_error(fmt::format("cannot write '{}': {}", path, what), {.file = path, .key = std::string(key), .file_in_message = true});
  };
  if constexpr (std::endian::native != std::endian::little) fail("safetensors data is little-endian; this machine is not");

  // Every check happens before the file is touched.
  std::unordered_set<std::string_view> names;
  for (const auto& spec : specs) {
    const auto& name = spec.name;
    if (name == "__metadata__") fail("'__metadata__' is reserved for the metadata and cannot name a tensor", name);
    if (auto problem = detail::not_utf8("tensor name", name)) fail(*problem);
    if (!names.insert(name).second)
      throw key_error(fmt::format("cannot write '{}': tensor '{}' is given twice", path, name), {.file = path, .key = name, .file_in_message = true});
    if (detail::safetensors_code(spec.dtype).empty())
      fail(fmt::format("tensor '{}' has dtype {}, which safetensors cannot hold", name, c10::toString(spec.dtype)), name);
  }
  auto nbytes_of = [&](std::size_t i) {
    std::uint64_t n = c10::elementSize(specs[i].dtype);
    for (auto d : specs[i].shape) n *= static_cast<std::uint64_t>(d);
    return n;
  };
  // Indices into `specs`, in data order: widest elements first, so every tensor is aligned.
  auto layout = detail::stable_order(specs.size(), [&](std::size_t a, std::size_t b) {
    return c10::elementSize(specs[a].dtype) > c10::elementSize(specs[b].dtype);
  });

  for (const auto& [k, v] : metadata) {
    if (auto problem = detail::not_utf8("metadata key", k)) fail(*problem);
    if (auto problem = detail::not_utf8("metadata value", v)) fail(*problem);
  }

  // Names in the given order, data in `layout` order: each tensor's [begin, end) in the data.
  std::vector<std::array<std::uint64_t, 2>> ranges(specs.size());
  std::uint64_t offset = 0;
  for (auto i : layout) {
    ranges[i] = {offset, offset + nbytes_of(i)};
    offset += nbytes_of(i);
  }
  auto header = detail::json::object();
  if (!metadata.empty()) {
    auto& m = header.append("__metadata__", detail::json::object());
    for (const auto& [k, v] : metadata) m.append(k, v);
  }
  for (std::size_t i = 0; i < specs.size(); ++i) {
    auto& entry = header.append(specs[i].name, detail::json::object());  // names are unique: checked above
    entry.append("dtype", detail::safetensors_code(specs[i].dtype));
    entry.append("shape", detail::json::array_of(specs[i].shape));
    entry.append("data_offsets", detail::json::array_of(ranges[i]));
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');

  auto write = [&](detail::atomic_file& out) {
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(static_cast<std::uint64_t>(text.size()) >> (8 * i));
    out.write(len, 8);
    out.write(text.data(), text.size());
    for (auto i : layout) {
      // One tensor made (and made contiguous) at a time, so a model costs one tensor of memory.
      auto t = detail::produce_announced(path, specs, produce, i);
      if (t.numel()) out.write(t.data_ptr(), static_cast<std::size_t>(t.numel()) * t.element_size());
      if (out.failed()) break;
    }
  };
  try {
    detail::write_atomically(path, write);
  } catch (const c10::Error& e) {
    throw io_error(fmt::format("cannot write '{}': {}", path, e.what_without_backtrace()), {.file = path, .file_in_message = true});
  } catch (const std::bad_alloc&) {
    throw io_error(fmt::format("cannot write '{}': out of memory", path), {.file = path, .file_in_message = true});
  }
}

GRAFT_FUNC void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  auto fail = [&](std::string_view what, const std::string& key) {
    throw format_error(fmt::format("cannot write '{}': {}", path, what), {.file = path, .key = key, .file_in_message = true});
  };
  std::vector<tensor_spec> specs;
  specs.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (!t.defined()) fail(fmt::format("tensor '{}' is undefined", name), name);
    if (t.layout() != torch::kStrided) fail(fmt::format("tensor '{}' is not a dense (strided) tensor", name), name);
    if (t.is_quantized())
      fail(fmt::format("tensor '{}' has dtype {}, which safetensors cannot hold", name, c10::toString(t.scalar_type())), name);
    specs.push_back({name, t.scalar_type(), t.sizes().vec()});
  }
  write_safetensors(path, specs, [&](std::size_t i) { return tensors[i].second; }, metadata);
}

GRAFT_FUNC void write_safetensors(const std::string& path, const dict& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  std::vector<std::pair<std::string, torch::Tensor>> flat;
  flat.reserve(tensors.size());
  std::string prefix;
  detail::collect_safetensors(path, tensors, prefix, flat);
  write_safetensors(path, flat, metadata);
}

} // namespace graft
