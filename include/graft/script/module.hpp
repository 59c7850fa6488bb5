#pragma once
// script_module: a TorchScript module (torch::jit::load of a file Python wrote with
// torch.jit.script or trace) as a torch::nn::Module tree whose nodes hold the jit module's own
// tensors. Every graft call that takes a torch::nn::Module — walk, selectors, freeze, frozen
// norm statistics and graft::train, param groups, state_dict, merge — works on it unchanged, and
// what it changes (requires_grad, values, train/eval mode) is the jit module's. The jit module
// still runs forward() and save()s as TorchScript.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/init.h>
#include <torch/script.h>

#include <graft/detail/script_node.hpp>
#include <graft/error.hpp>

namespace graft {
namespace detail {

/// "__torch__.torchvision.models.resnet.___torch_mangle_3.BasicBlock" ->
/// "torchvision.models.resnet.BasicBlock".
inline std::string python_class_of(const torch::jit::Module& m) {
  std::string q = m.type()->name() ? m.type()->name()->qualifiedName() : std::string("Module");
  std::string out;
  std::string_view rest = q;
  while (!rest.empty()) {
    auto dot = rest.find('.');
    auto part = rest.substr(0, dot);
    if (part != "__torch__" && !part.starts_with("___torch_mangle_")) {
      if (!out.empty()) out += '.';
      out += part;
    }
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  return out;
}

inline bool graph_reads_training(torch::jit::Block* b) {
  for (auto* n : b->nodes()) {
    if (n->kind() == c10::prim::GetAttr && n->s(c10::attr::name) == "training") return true;
    for (auto* inner : n->blocks())
      if (graph_reads_training(inner)) return true;
  }
  return false;
}

/// One node of the view: the jit module's own parameters and buffers, registered under the
/// same names (the same tensors, not copies), then one node per child.
class script_node : public script_node_base {
public:
  explicit script_node(torch::jit::Module m)
      : script_node_base(std::string(python_leaf(python_class_of(m)))), module_(std::move(m)), class_(python_class_of(module_)) {
    torch::nn::Module::train(module_.is_training());  // before the children: sets this node's flag alone
    for (const auto& p : module_.named_parameters(false)) register_parameter(p.name, p.value, p.value.requires_grad());
    for (const auto& b : module_.named_buffers(false)) register_buffer(b.name, b.value);
    for (const auto& c : module_.named_children()) register_module(c.name, std::make_shared<script_node>(c.value));
  }

  const std::string& python_class() const override { return class_; }

  bool mode_fixed() const override {
    auto forward = module_.find_method("forward");
    return forward && !graph_reads_training(forward->graph()->block());
  }

  /// Sets this module's own `training` flag in the jit module, then recurses as
  /// torch::nn::Module::train does: graft::train and eval() reach TorchScript through it.
  void train(bool on = true) override {
    if (module_.hasattr("training")) module_.setattr("training", on);
    torch::nn::Module::train(on);
  }

  /// The jit module this node shows.
  torch::jit::Module& jit() noexcept { return module_; }
  const torch::jit::Module& jit() const noexcept { return module_; }

protected:
  torch::jit::Module module_;
  std::string class_;
};

} // namespace detail

/// A TorchScript module as a graft module tree. Make one from torch::jit::load's result (or
/// with script_module::load(path)); keep it, not only the jit module, while fine-tuning.
class script_module : public detail::script_node {
public:
  /// Refuses a module without parameters (torch.jit.freeze and optimize_for_inference fold
  /// them into constants: nothing is left to train) with a state_error saying so.
  explicit script_module(torch::jit::Module m) : detail::script_node(check(std::move(m))) {}

  /// torch::jit::load(path), viewed; an io_error or format_error naming the file if it cannot be read.
  static std::shared_ptr<script_module> load(const std::string& path) {
    torch::jit::Module m;
    try {
      m = torch::jit::load(path);
    } catch (const c10::Error& e) {
      throw format_error(fmt::format("'{}' is not a TorchScript file libtorch can load: {}", path, e.what_without_backtrace()),
                         {.file = path, .file_in_message = true});
    }
    return std::make_shared<script_module>(std::move(m));
  }

  /// Runs the module's forward on `inputs`.
  c10::IValue forward(std::vector<c10::IValue> inputs) { return module_.forward(std::move(inputs)); }
  /// Runs the module's forward on one tensor, returning its one tensor.
  torch::Tensor forward(const torch::Tensor& x) { return module_.forward({x}).toTensor(); }

  /// Writes the module as TorchScript (Python's torch.jit.load and torch::jit::load read it).
  void save(const std::string& path) const {
    try {
      module_.save(path);
    } catch (const c10::Error& e) {
      throw io_error(fmt::format("cannot write '{}': {}", path, e.what_without_backtrace()), {.file = path, .file_in_message = true});
    }
  }

  /// Gives the Linear layer at `path` (a TorchScript module with `weight` [out, in] and an
  /// optional `bias`) `out_features` outputs: its weight and bias are replaced by tensors of the
  /// new shape, initialized as torch.nn.Linear initializes them, with the first
  /// min(old, new) rows copied from the old ones when `keep_rows` (the merge policy `adapt`'s
  /// rule). A TorchScript submodule cannot be swapped for another type; this is how its head
  /// changes size. The view is updated and the new tensors take the old ones' requires_grad;
  /// resize before building an optimizer or param groups, which hold tensors. A scripted
  /// Linear's `out_features` is a TorchScript constant and keeps its old value.
  void resize_linear(std::string_view path, std::int64_t out_features, bool keep_rows = true) {
    if (out_features <= 0) throw option_error(fmt::format("resize_linear('{}', {}): the size must be positive", path, out_features));
    // Every lookup first: nothing changes unless all of them succeed.
    std::vector<std::string> parts;
    for (std::string_view rest = path;;) {
      auto dot = rest.find('.');
      parts.emplace_back(rest.substr(0, dot));
      if (parts.back().empty()) throw key_error(fmt::format("resize_linear: '{}' is not a submodule path such as \"fc\"", path), {.key = std::string(path)});
      if (dot == std::string_view::npos) break;
      rest.remove_prefix(dot + 1);
    }
    torch::jit::Module layer = module_;
    torch::nn::Module* parent = this;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const auto& part = parts[i];
      if (!layer.hasattr(part) || !layer.attr(part).isModule())
        throw key_error(fmt::format("resize_linear: '{}' has no submodule '{}'", path, part), {.key = std::string(path)});
      layer = layer.attr(part).toModule();
      auto children = parent->named_children();
      if (!children.contains(part))
        throw state_error(fmt::format("resize_linear: the view has no '{}' below '{}': the jit module changed since the view was built",
                                      part, parent->name()));
      if (i + 1 < parts.size()) parent = children[part].get();
    }
    const std::string& last = parts.back();
    const auto python_class = detail::python_class_of(layer);
    const auto leaf = detail::python_leaf(python_class);  // a view into python_class
    if (leaf != "Linear" && leaf != "NonDynamicallyQuantizableLinear")
      throw type_error(fmt::format("resize_linear: '{}' is a {}, not a Linear layer", path, python_class),
                       {.key = std::string(path)});
    if (!layer.hasattr("weight") || !layer.attr("weight").isTensor() || layer.attr("weight").toTensor().dim() != 2)
      throw type_error(fmt::format("resize_linear: '{}' ({}) has no 2-D weight: it is not a Linear layer", path,
                                   detail::python_class_of(layer)),
                       {.key = std::string(path)});
    auto w = layer.attr("weight").toTensor();
    auto in = w.size(1);
    torch::NoGradGuard no_grad;
    auto nw = torch::empty({out_features, in}, w.options().requires_grad(false));
    torch::nn::init::kaiming_uniform_(nw, std::sqrt(5.0));
    auto keep = std::min(out_features, w.size(0));
    if (keep_rows) nw.slice(0, 0, keep).copy_(w.slice(0, 0, keep));
    nw.set_requires_grad(w.requires_grad());
    layer.setattr("weight", nw);
    if (layer.hasattr("bias") && layer.attr("bias").isTensor()) {
      auto b = layer.attr("bias").toTensor();
      auto nb = torch::empty({out_features}, b.options().requires_grad(false));
      double bound = in > 0 ? 1.0 / std::sqrt(static_cast<double>(in)) : 0.0;
      nb.uniform_(-bound, bound);
      if (keep_rows) nb.slice(0, 0, keep).copy_(b.slice(0, 0, keep));
      nb.set_requires_grad(b.requires_grad());
      layer.setattr("bias", nb);
    }
    // Scripted Linear keeps out_features as a constant, which cannot change (its forward does
    // not read it); a module that holds it as an attribute gets the new size.
    if (!layer.type()->hasConstant("out_features") && layer.hasattr("out_features") && layer.attr("out_features").isInt())
      layer.setattr("out_features", out_features);
    parent->replace_module(last, std::make_shared<detail::script_node>(layer));
  }

private:
  static torch::jit::Module check(torch::jit::Module m) {
    if (m.parameters().size() == 0)
      throw state_error(fmt::format("the TorchScript module {} has no parameters: torch.jit.freeze (or "
                                    "optimize_for_inference) folded them into constants, and nothing is left to "
                                    "fine-tune; export the module before freezing it",
                                    detail::python_class_of(m)));
    return m;
  }
};

} // namespace graft
