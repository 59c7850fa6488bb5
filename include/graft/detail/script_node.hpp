#pragma once
// What graft's module-tree code knows about TorchScript: graft::script_module (graft/script.hpp)
// shows a torch::jit::Module as a tree of torch::nn::Module nodes holding the very same
// tensors, and each node says which Python class it was and whether tracing fixed its mode.
// Selectors by type, norm_layers and frozen statistics read it through this base.

#include <string>
#include <string_view>
#include <utility>

#include <torch/nn/module.h>

namespace graft::detail {

/// A node of a TorchScript module tree, seen as a torch::nn::Module.
class script_node_base : public torch::nn::Module {
public:
  explicit script_node_base(std::string name) : torch::nn::Module(std::move(name)) {}
  /// The module's Python class, qualified, without TorchScript's "__torch__." and
  /// "___torch_mangle_N" parts: "torch.nn.modules.batchnorm.BatchNorm2d".
  virtual const std::string& python_class() const = 0;
  /// Whether the module's forward() ignores its training flag: torch.jit.trace fixed the
  /// train/eval behaviour the module had when it was traced.
  virtual bool mode_fixed() const = 0;
};

/// `m` as a TorchScript node, or nullptr for a C++ module.
inline const script_node_base* as_script_node(const torch::nn::Module& m) noexcept {
  return dynamic_cast<const script_node_base*>(&m);
}

/// The class name without its module path: "BatchNorm2d".
constexpr std::string_view python_leaf(std::string_view qualified) noexcept {
  return qualified.substr(qualified.rfind('.') + 1);
}

} // namespace graft::detail
