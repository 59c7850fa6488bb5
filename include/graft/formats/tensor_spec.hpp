#pragma once
// What a streamed write needs to know of a tensor before its data exists.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <c10/util/StringUtil.h>
#include <fmt/format.h>
#include <torch/types.h>

#include <graft/error.hpp>

namespace graft {

/// A tensor a streamed write will produce: its name, dtype and shape, known before its data.
struct tensor_spec {
  std::string name;
  torch::Dtype dtype;
  std::vector<std::int64_t> shape;
};

namespace detail {

/// produce(i), checked against specs[i] (a shape_error naming `path` and the tensor if it is
/// not what was announced), as a contiguous CPU tensor ready to be written.
inline torch::Tensor produce_announced(const std::string& path, const std::vector<tensor_spec>& specs,
                                       const std::function<torch::Tensor(std::size_t)>& produce, std::size_t i) {
  auto t = produce(i);
  const auto& spec = specs[i];
  if (!t.defined() || t.scalar_type() != spec.dtype || t.sizes() != at::IntArrayRef(spec.shape))
    throw shape_error(fmt::format("cannot write '{}': tensor '{}' was announced as {} {} but produced as {}", path, spec.name,
                                  c10::toString(spec.dtype), c10::str(at::IntArrayRef(spec.shape)),
                                  t.defined() ? fmt::format("{} {}", c10::toString(t.scalar_type()), c10::str(t.sizes()))
                                              : std::string("undefined")),
                      {.file = path, .key = spec.name, .file_in_message = true});
  return t.to(torch::kCPU).contiguous();
}

} // namespace detail

} // namespace graft
