#pragma once
// The normalization layers libtorch has, listed once: the norm_layers selector, frozen norm
// statistics and reinit() all read these lists.

#include <string_view>

#include <torch/nn.h>  // the module headers are not self-contained: take them whole

namespace graft::detail {

/// A list of module types.
template <class... Ms>
struct module_types {};

/// Batch and instance norm: the layers that can keep running statistics.
using running_stats_norm_types =
    module_types<torch::nn::BatchNorm1dImpl, torch::nn::BatchNorm2dImpl, torch::nn::BatchNorm3dImpl,
                 torch::nn::InstanceNorm1dImpl, torch::nn::InstanceNorm2dImpl, torch::nn::InstanceNorm3dImpl>;

/// Every normalization layer: those, layer norm and group norm.
using norm_layer_types =
    module_types<torch::nn::BatchNorm1dImpl, torch::nn::BatchNorm2dImpl, torch::nn::BatchNorm3dImpl,
                 torch::nn::InstanceNorm1dImpl, torch::nn::InstanceNorm2dImpl, torch::nn::InstanceNorm3dImpl,
                 torch::nn::LayerNormImpl, torch::nn::GroupNormImpl>;

/// The same layers by their Python class names, for TorchScript modules (script_node_base).
inline bool is_norm_class(std::string_view name, bool running_stats_only) noexcept {
  for (std::string_view n : {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"})
    if (name == n) return true;
  return !running_stats_only && (name == "LayerNorm" || name == "GroupNorm");
}

/// Calls f(layer) with `m` cast to the first type of the list it is, and returns true; false
/// (without calling f) if it is none of them.
template <class... Ms, class M, class F>
bool visit_as(module_types<Ms...>, M& m, F&& f) {
  bool found = false;
  ((!found && dynamic_cast<Ms*>(&m) ? (found = true, f(dynamic_cast<Ms&>(m)), void()) : void()), ...);
  return found;
}

} // namespace graft::detail
