#pragma once
// Writing graft::value trees as Python torch.save files that torch.load reads back equal.
// The file appears whole or not at all: a temp file in the destination's folder is written,
// flushed to disk and renamed over the destination.
// Defined in write-inl.hpp (compiled once in the separately compiled mode).

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/formats/tensor_spec.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// Writes `obj` to `path` as Python's torch.save does (zip format, pickle protocol 2, 64-byte
/// aligned storage records), so torch.load reads it back equal. Dicts whose values are all
/// tensors become OrderedDicts (as state_dict() returns), other dicts plain dicts; tensors that
/// share a storage share it in the file. Atomic: on any error `path` is untouched. Throws
/// format_error for a value that cannot be saved, io_error if the file cannot be written.
GRAFT_FUNC void write_torch_save(const std::string& path, const value& obj);
/// Writes a state dict (an OrderedDict of name -> tensor, what torch.load gives for
/// model.state_dict()) to `path` one tensor at a time: `produce(i)` is called once for each
/// spec, in order, and its bytes are written before the next is asked for, so the whole dict is
/// never in memory. A produced tensor must have its spec's dtype and shape (a shape_error
/// naming it otherwise). Atomic: an exception from `produce` leaves `path` untouched.
GRAFT_FUNC void write_torch_save(const std::string& path, const std::vector<tensor_spec>& specs,
                                 const std::function<torch::Tensor(std::size_t)>& produce);

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/formats/torch_save/write-inl.hpp>
#endif
