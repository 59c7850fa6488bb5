#pragma once
// Reading safetensors files, single or sharded, into a dict of name → tensor that views the
// memory-mapped file. Defined in read-inl.hpp (compiled once in the separately compiled mode).

#include <map>
#include <memory>
#include <string>

#include <graft/config.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// How read_safetensors builds tensors.
struct safetensors_options {
  /// View each tensor in the memory-mapped file (no copy; writes to the tensors stay private to
  /// this process). Tensors whose data is not aligned for their dtype are copied regardless.
  /// false copies every tensor into fresh memory.
  bool mmap = true;
};

/// Whether `file` looks like a safetensors file: a plausible header length followed by '{'.
GRAFT_FUNC bool is_safetensors_file(const mapped_file& file) noexcept;

/// Reads an already-mapped safetensors file; tensors may keep the mapping alive.
GRAFT_FUNC value read_safetensors(const std::shared_ptr<const mapped_file>& file, const safetensors_options& opts = {});

/// Reads a safetensors file into a dict of name → tensor, in the order its header lists them.
/// A path ending in ".json" is a sharded checkpoint's index (`model.safetensors.index.json`):
/// every shard it names in its folder is read and the union returned in the index's order,
/// after checking that each tensor is in the shard the index names and none is missing.
/// Throws io_error if a file cannot be opened and format_error, naming the file, the tensor
/// and the byte offset, if one is malformed.
GRAFT_FUNC value read_safetensors(const std::string& path, const safetensors_options& opts = {});

/// The "__metadata__" of a safetensors file (string → string), reading only its header. For a
/// sharded checkpoint's index, its "metadata" object, non-string values as their JSON text
/// (`{"total_size": "1234"}`).
GRAFT_FUNC std::map<std::string, std::string> read_safetensors_metadata(const std::string& path);

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/formats/safetensors/read-inl.hpp>
#endif
