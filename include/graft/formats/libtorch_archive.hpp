#pragma once
// libtorch archives: the files torch::save(module) and torch::serialize::OutputArchive write.
// They are TorchScript zip archives holding one scripted module per archive level, whose
// attributes are the parameters, buffers and nested archives (submodules). graft reads them
// with its own zip reader and unpickler, as it reads torch.save files.
// Defined in libtorch_archive-inl.hpp (compiled once in the separately compiled mode).

#include <string>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// Reads a libtorch archive (written by torch::save(module) or an OutputArchive, or by Python's
/// torch.jit.save) into a dict of dotted name → tensor, submodules' entries under their names
/// ("fc.weight", "bn.running_mean"), in the order the archive holds them: each module's
/// parameters, then its buffers, then its submodules. Non-tensor entries an OutputArchive holds
/// (ints, strings, lists, ...) come as their values. graft reads the zip and the pickle itself
/// and never compiles the archive's code; tensors view the memory-mapped file where the
/// records allow (writes to them stay private to this process). Throws io_error if the file
/// cannot be opened, format_error naming the file otherwise.
GRAFT_FUNC value read_libtorch_archive(const std::string& path);

/// Writes `entries` as a libtorch archive that torch::load(module, path) reads: dotted names
/// become nested archives, as torch::save(module) writes submodules. Values are tensors (saved
/// as parameters; libtorch's loader does not tell them from buffers) or None/bool/int/float/str;
/// nested dicts are flattened into dotted names. Atomic: on any error `path` is untouched.
/// Throws format_error for a value an archive cannot hold, key_error if a name is both an entry
/// and a prefix of another ("fc" and "fc.weight"), io_error if the file cannot be written.
GRAFT_FUNC void write_libtorch_archive(const std::string& path, const dict& entries);

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/formats/libtorch_archive-inl.hpp>
#endif
