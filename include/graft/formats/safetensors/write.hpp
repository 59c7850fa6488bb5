#pragma once
// Writing safetensors files that the reference implementation (and graft) read back: the
// header padded with spaces to a multiple of 8 bytes, the data tiled without gaps.
// Defined in write-inl.hpp (compiled once in the separately compiled mode).

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/formats/tensor_spec.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// Writes `tensors` as the safetensors file `path`, with `metadata` as its "__metadata__".
/// The header lists the tensors in the given order; their data is laid out largest dtype
/// first (as the reference writer does), so every tensor is aligned and reads back as a view.
/// Non-contiguous tensors are written contiguous. Atomic: on any error `path` is untouched.
/// Throws format_error for a tensor the format cannot hold (undefined, sparse, complex, ...),
/// key_error for a repeated name, io_error if the file cannot be written.
GRAFT_FUNC void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

/// Writes the safetensors file `path` one tensor at a time: the header is made from `specs`,
/// then `produce(i)` is called once for each tensor, in the order the data is laid out (widest
/// dtype first, then the order of `specs`), and its bytes are written before the next is asked
/// for, so the whole file is never in memory. A produced tensor must have its spec's dtype and
/// shape (a shape_error naming the tensor otherwise). Checks and atomicity as above: an
/// exception from `produce` leaves `path` untouched and propagates.
GRAFT_FUNC void write_safetensors(const std::string& path, const std::vector<tensor_spec>& specs,
                                  const std::function<torch::Tensor(std::size_t)>& produce,
                                  const std::map<std::string, std::string>& metadata = {});
/// Writes the tensors of `tensors` (nested dicts flattened into dotted names) as the
/// safetensors file `path`; see the overload above. A non-tensor value is a format_error.
GRAFT_FUNC void write_safetensors(const std::string& path, const dict& tensors,
                                  const std::map<std::string, std::string>& metadata = {});

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/formats/safetensors/write-inl.hpp>
#endif
