#pragma once
// Reading Python torch.save files into a graft::value tree: the zip format (PyTorch >= 1.6)
// with tensors viewing the memory-mapped file, and the legacy format (torch_save/legacy.hpp).
// Defined in read-inl.hpp (compiled once in the separately compiled mode).

#include <memory>
#include <string>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/torch_save/legacy.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// How read_torch_save builds tensors.
struct torch_save_options {
  /// View each stored, dtype-aligned storage record in the memory-mapped file (no copy; writes
  /// to the tensors stay private to this process). false copies every storage into fresh memory.
  bool mmap = true;
};

/// Whether `file` holds a Python torch.save archive: a zip with an "<archive>/data.pkl" record
/// that is not a TorchScript archive (those also have constants.pkl).
GRAFT_FUNC bool is_torch_save_file(const mapped_file& file) noexcept;

/// Reads an already-mapped torch.save file, of either format; tensors may keep the mapping alive.
GRAFT_FUNC value read_torch_save(const std::shared_ptr<const mapped_file>& file, const torch_save_options& opts = {});

/// Reads the Python torch.save file at `path` into an object tree (the zip format, or the legacy
/// format of PyTorch < 1.6 read as read_torch_save_legacy does): a
/// state dict becomes a dict of key → Tensor, a training checkpoint nested dicts. Tensors that
/// share a storage in the file share memory. Throws io_error if the file cannot be opened and
/// format_error, naming the file and the offending record or pickle byte, if it is malformed.
GRAFT_FUNC value read_torch_save(const std::string& path, const torch_save_options& opts = {});

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/formats/torch_save/read-inl.hpp>
#endif
