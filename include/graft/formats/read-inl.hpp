#pragma once
// The definitions of formats/read.hpp.

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/formats/detail/rethrow.hpp>
#include <graft/formats/detail/safetensors_header.hpp>
#include <graft/formats/detail/shards.hpp>
#include <graft/formats/libtorch_archive.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/safetensors.hpp>
#include <graft/formats/torch_save.hpp>
#include <graft/formats/read.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft {

namespace detail {
inline bool is_zip(const mapped_file& f) noexcept { return f.size() >= 4 && f.bytes(0, 4) == std::string_view("PK\x03\x04", 4); }

inline checkpoint_format detect_format(const std::string& path, const mapped_file& f) {
  if (is_legacy_torch_save_file(f)) return checkpoint_format::torch_save_legacy;
  if (is_torch_save_file(f)) return checkpoint_format::torch_save;
  if (is_safetensors_file(f)) return checkpoint_format::safetensors;
  if (is_zip(f)) return checkpoint_format::libtorch_archive;  // TorchScript zips (constants.pkl)
  if (is_torch_save_tar(f))
    throw format_error(fmt::format("'{}' is a tar archive, the torch.save format of PyTorch 0.1 and 0.2 (members sys_info, "
                                   "pickle, storages, tensors), which graft does not read; load it with torch.load and save it "
                                   "again with torch.save(obj, path)",
                                   path));
  if (f.size() >= 9 && f.bytes(8, 1) == "{") {
    const auto n = read_le64(f.data());
    if (n > f.size() - 8)
      throw format_error(fmt::format("'{}' looks like a truncated safetensors file: its header claims {} bytes, but only {} "
                                     "follow the 8-byte length",
                                     path, n, f.size() - 8));
  }
  if (f.size() >= 2 && static_cast<unsigned char>(f.bytes(0, 1)[0]) == 0x80)
    throw format_error(fmt::format("'{}' is a pickle but not a torch.save file (no torch.save magic number, not a zip)", path));
  std::string head;
  for (std::size_t i = 0; i < f.size() && i < 8; ++i) head += fmt::format("{:02x} ", static_cast<unsigned char>(f.bytes(i, 1)[0]));
  throw format_error(fmt::format("'{}' is not a checkpoint graft can read (a torch.save file, safetensors, or a libtorch "
                                 "archive); its first bytes are {}({} bytes in all)",
                                 path, head, f.size()));
}

// A sharded index: the format of the shards it names (by the first shard's name).
inline checkpoint_format index_format(const std::string& path) {
  auto index = parse_shard_index(path);
  bool safetensors = index.weight_map.empty() || index.weight_map.front().second.ends_with(".safetensors");
  return safetensors ? checkpoint_format::safetensors_index : checkpoint_format::torch_save_index;
}

// One shard of a sharded torch.save checkpoint: a flat dict of name → tensor.
inline dict read_torch_save_shard(const std::string& path) {
  value v = read_torch_save(mapped_file::open(path));
  if (!v.is_dict()) fail_format(path, fmt::format("a shard holds a {}, not a dict of tensors", v.type_name()));
  for (auto& [k, t] : v.as_dict()) {
    if (!k.is_string()) fail_format(path, fmt::format("a shard's key is a {}, not a str", k.type_name()));
    if (!t.is_tensor()) fail_format(path, fmt::format("shard entry '{}' is a {}, not a tensor", k.as_string(), t.type_name()));
  }
  return std::move(v.as_dict());
}
} // namespace detail

GRAFT_FUNC std::string checkpoint_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return path;
  static constexpr std::string_view names[] = {"model.safetensors.index.json", "model.safetensors",
                                               "pytorch_model.bin.index.json", "pytorch_model.bin"};
  for (auto name : names) {
    auto p = (std::filesystem::path(path) / name).string();
    if (std::filesystem::is_regular_file(p, ec)) return p;
  }
  throw io_error(fmt::format("folder '{}' holds no checkpoint graft knows by name (looked for {})", path, graft::detail::join(names, ", ")));
}

GRAFT_FUNC checkpoint_format detect_format(const std::string& path) {
  auto file = checkpoint_file(path);
  if (file.ends_with(".json")) return detail::index_format(file);
  return detail::detect_format(file, *mapped_file::open(file));
}

GRAFT_FUNC value read_value(const std::string& path) {
  auto resolved = checkpoint_file(path);
  if (resolved.ends_with(".json")) {
    if (detail::index_format(resolved) == checkpoint_format::safetensors_index) return read_safetensors(resolved);
    return detail::rethrow_as_format_error(resolved, [&] { return detail::read_sharded(resolved, detail::read_torch_save_shard); });
  }
  auto file = mapped_file::open(resolved);
  switch (detail::detect_format(resolved, *file)) {
    case checkpoint_format::torch_save:
    case checkpoint_format::torch_save_legacy: return read_torch_save(file);
    case checkpoint_format::safetensors: return read_safetensors(file);
    default: return read_libtorch_archive(resolved);
  }
}

GRAFT_FUNC file_source read(std::string path) { return file_source(std::move(path)); }

GRAFT_FUNC void save(const state_dict& sd, const std::string& path, checkpoint_format format) {
  switch (format) {
    case checkpoint_format::torch_save: write_torch_save(path, sd.to_value()); return;
    case checkpoint_format::torch_save_legacy: write_torch_save_legacy(path, sd.to_value()); return;
    case checkpoint_format::safetensors: {
      std::vector<std::pair<std::string, torch::Tensor>> tensors;
      tensors.reserve(sd.size());
      for (auto& e : sd) tensors.emplace_back(e.key, e.tensor);
      write_safetensors(path, tensors);
      return;
    }
    case checkpoint_format::libtorch_archive: {
      dict d;
      for (auto& e : sd) d.append(e.key, e.tensor);
      write_libtorch_archive(path, d);
      return;
    }
    case checkpoint_format::safetensors_index:
    case checkpoint_format::torch_save_index: break;
  }
  throw option_error(fmt::format("cannot save '{}' as {}: write the shards as safetensors files", path, to_string(format)));
}

GRAFT_FUNC void save(const std::vector<tensor_spec>& specs, const std::function<torch::Tensor(std::size_t)>& produce,
                     const std::string& path, checkpoint_format format) {
  switch (format) {
    case checkpoint_format::torch_save: write_torch_save(path, specs, produce); return;
    case checkpoint_format::safetensors: write_safetensors(path, specs, produce); return;
    default: break;
  }
  throw option_error(fmt::format("cannot write '{}' as {} one tensor at a time: write safetensors or torch.save (zip)", path,
                                 to_string(format)),
                     {.file = path, .file_in_message = true});
}

GRAFT_FUNC checkpoint_format format_for(std::string_view path) noexcept {
  return path.ends_with(".safetensors") ? checkpoint_format::safetensors : checkpoint_format::torch_save;
}

GRAFT_FUNC void save(const state_dict& sd, const std::string& path) { save(sd, path, format_for(path)); }

GRAFT_FUNC save_sink save(std::string path) { auto f = format_for(path); return {std::move(path), f}; }
GRAFT_FUNC save_sink save(std::string path, checkpoint_format f) { return {std::move(path), f}; }

} // namespace graft
