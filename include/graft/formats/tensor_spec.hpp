#pragma once
// What a streamed write needs to know of a tensor before its data exists.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace graft {

/// A tensor a streamed write will produce: its name, dtype and shape, known before its data.
struct tensor_spec {
  std::string name;
  torch::Dtype dtype;
  std::vector<std::int64_t> shape;
};

} // namespace graft
