#pragma once
// torch.save's legacy format: what PyTorch before 1.6 wrote, and what any release writes with
// _use_new_zipfile_serialization=False. A stream of pickles (magic number, protocol version
// 1001, sys_info, the object, the list of storage keys) followed by each storage's bytes, an
// int64 element count before each. The storages are unaligned, so tensors are copies, read
// from the file straight into their memory.
// Defined in legacy-inl.hpp (compiled once in the separately compiled mode).

#include <memory>
#include <string>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

namespace detail {

/// Whether `f` is a tar archive: torch.save of PyTorch 0.1 and 0.2.
GRAFT_FUNC bool is_torch_save_tar(const mapped_file& f) noexcept;

} // namespace detail

/// Whether `file` is a legacy torch.save file (PyTorch < 1.6, or _use_new_zipfile_serialization=False).
GRAFT_FUNC bool is_legacy_torch_save_file(const mapped_file& file) noexcept;

/// Reads an already-mapped legacy torch.save file: every storage is copied into fresh memory
/// (the file's records are unaligned), so the result does not keep the mapping alive.
GRAFT_FUNC value read_torch_save_legacy(const std::shared_ptr<const mapped_file>& file);

/// Reads the legacy torch.save file at `path` into an object tree, as read_torch_save reads
/// the zip format: the same allow-list of globals, storages shared as in the file (views of one
/// storage included). Throws io_error if the file cannot be opened and format_error, naming the
/// file and the byte offset, if it is malformed.
GRAFT_FUNC value read_torch_save_legacy(const std::string& path);

/// Writes `obj` to `path` in torch.save's legacy format (what torch.save(obj, path,
/// _use_new_zipfile_serialization=False) writes, pickle protocol 2), which every PyTorch
/// release reads. Atomic, and with the same rules as write_torch_save; a tensor of a dtype that
/// has no legacy storage class (uint16, float8, ... of PyTorch 2.x) cannot be written.
GRAFT_FUNC void write_torch_save_legacy(const std::string& path, const value& obj);

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/formats/torch_save/legacy-inl.hpp>
#endif
