#pragma once
// Frozen normalization statistics. A BatchNorm whose running statistics are frozen must stay in
// eval mode while the rest of the model trains: it then normalizes with running_mean/var and
// leaves them (and num_batches_tracked) alone. libtorch's Module::train() recurses into every
// child and BatchNormImpl cannot be told to ignore it without subclassing, so graft records
// the frozen layers and graft::train(module) — module.train(), then those layers back to
// eval — is the one call that switches a model with frozen statistics to training mode.
// A plain module->train() unfreezes them until the next graft::train(); graft::lr_scheduler's
// step() notices and throws state_error before a second step.

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn.h>  // the module headers are not self-contained: take them whole

#include <graft/detail/join.hpp>
#include <graft/detail/report_formatter.hpp>
#include <graft/detail/module_access.hpp>
#include <graft/detail/norm_layers.hpp>
#include <graft/detail/script_node.hpp>
#include <graft/detail/training_state.hpp>
#include <graft/error.hpp>
#include <graft/select/select.hpp>
#include <graft/walk/walk.hpp>

namespace graft {

/// Options of freeze_norm_stats / unfreeze_norm_stats.
struct norm_stats_options {
  /// Also freeze (or, unfreezing, unfreeze) the layers' affine weight and bias.
  bool affine = false;
};

/// What freeze_norm_stats or unfreeze_norm_stats did.
struct norm_stats_result {
  std::string selector;             ///< the selector's description
  bool frozen = true;               ///< true for freeze_norm_stats
  std::vector<std::string> layers;  ///< paths of the layers changed, in module order
  std::size_t affine_tensors = 0;   ///< affine weights and biases whose requires_grad was set
};

namespace detail {

/// Whether `m` is a normalization layer that keeps running statistics.
inline bool has_running_stats(torch::nn::Module& m) {
  if (auto* s = as_script_node(m)) {
    if (!is_norm_class(python_leaf(s->python_class()), true)) return false;
    auto buffers = m.named_buffers(false);
    return buffers.contains("running_mean") && buffers["running_mean"].defined();
  }
  bool tracks = false;
  visit_as(running_stats_norm_types{}, m, [&](auto& layer) { tracks = layer.options.track_running_stats(); });
  return tracks;
}

// Whether `sel` picks the layer at `path`: one of its own tensors matches, or (for a name
// selector) its own path does, so "layer4.0.bn1"_glob names a layer as well as "layer4.0.bn1.*".
template <selector S>
bool selects_layer(const S& sel, torch::nn::Module& layer, std::string_view path) {
  if constexpr (name_selector<S>)
    if (sel.matches(entry_view(path))) return true;
  std::string full(path);
  std::size_t offset = path.empty() ? 0 : path.size() + 1;
  if (!path.empty()) full.push_back('.');
  auto try_registry = [&](const tensor_items& reg, tensor_kind kind) {
    for (const auto& item : reg) {
      if (!item.value().defined()) continue;
      full.resize(offset);
      full.append(item.key());
      if (sel.matches(tensor_view(full, offset, item.value(), layer, kind))) return true;
    }
    return false;
  };
  module_registries own(layer);
  return try_registry(own.parameters(), tensor_kind::parameter) ||
         try_registry(own.buffers(), tensor_kind::buffer);
}

template <selector S>
norm_stats_result set_norm_stats(torch::nn::Module& module, const S& sel, bool freeze,
                                 norm_stats_options opts) {
  norm_stats_result r{sel.describe(), freeze, {}, 0};
  std::vector<std::string> all_layers;
  bool training = module.is_training();
  std::vector<torch::nn::Module*> picked;
  auto visit = [&](torch::nn::Module& m, std::string_view p) {
    if (!has_running_stats(m)) return;
    all_layers.emplace_back(p);
    if (!selects_layer(sel, m, p)) return;
    r.layers.emplace_back(p);
    picked.push_back(&m);
  };
  for_each_module(module, visit);
  // A traced TorchScript layer runs as it was traced whatever its mode: refuse before changing any.
  for (std::size_t i = 0; i < picked.size(); ++i)
    if (auto* s = as_script_node(*picked[i]); s && s->mode_fixed())
      throw state_error(fmt::format(
          "cannot {} the statistics of '{}' ({}): it was traced (torch.jit.trace), which fixed its train/eval behaviour; "
          "export the model with torch.jit.script to fine-tune it with frozen statistics",
          freeze ? "freeze" : "unfreeze", r.layers[i], python_leaf(s->python_class())));
  for (std::size_t i = 0; i < picked.size(); ++i) {
    auto& m = *picked[i];
    if (freeze) {
      frozen_norms().add(m, r.layers[i], module.name());
      m.eval();
    } else {
      frozen_norms().remove(m);
      m.train(training);
    }
    if (opts.affine) {
      module_registries own(m);
      for (const auto& item : own.parameters())
        if (item.value().defined()) {
          item.value().set_requires_grad(!freeze);
          ++r.affine_tensors;
        }
    }
  }
  if constexpr (!allows_empty<S>) {
    if (r.layers.empty()) {
      std::string msg = fmt::format(
          "'{}' selected none of the {} normalization layers with running statistics of {}",
          r.selector, all_layers.size(), module.name());
      std::vector<std::string> candidates;
      for (auto& l : all_layers) {
        candidates.push_back(l);
        candidates.push_back(l + ".**");
      }
      auto near = nearest_names(pattern_text(sel), std::move(candidates));
      if (!near.empty()) msg += fmt::format("; did you mean '{}'?", graft::detail::join(near, "' or '"));
      if (all_layers.empty()) msg += " (BatchNorm1d/2d/3d, or InstanceNorm with track_running_stats)";
      throw selection_error(msg);
    }
  }
  return r;
}

} // namespace detail

/// Freezes the running statistics of the BatchNorm (and tracking InstanceNorm) layers `sel`
/// picks: they normalize with running_mean/var and never update them, also while the model
/// trains — provided it is put in training mode with graft::train(). `sel` picks a layer if
/// it matches one of the layer's tensors (of_type<BatchNorm2dImpl>, norm_layers,
/// "layer4.**"_glob) or, for a name selector, the layer's own path. Throws selection_error if
/// it picks none, unless optional(...).
template <selector S>
norm_stats_result freeze_norm_stats(torch::nn::Module& module, const S& sel, norm_stats_options opts = {}) {
  return detail::set_norm_stats(module, sel, true, opts);
}

/// Lets the layers `sel` picks track statistics again; they take `module`'s current mode.
template <selector S>
norm_stats_result unfreeze_norm_stats(torch::nn::Module& module, const S& sel, norm_stats_options opts = {}) {
  return detail::set_norm_stats(module, sel, false, opts);
}

/// Whether `layer`'s running statistics were frozen by freeze_norm_stats.
inline bool norm_stats_frozen(const torch::nn::Module& layer) { return detail::frozen_norms().contains(layer); }

/// Switches `module` to training mode (on = true) or eval mode, keeping every layer with
/// frozen statistics in eval mode: use it instead of module.train() once statistics are frozen.
inline void train(torch::nn::Module& module, bool on = true) {
  module.train(on);
  if (!on || detail::frozen_norms().empty()) return;
  for_each_module(module, [](torch::nn::Module& m, std::string_view) {
    if (detail::frozen_norms().contains(m)) m.eval();
  });
}

} // namespace graft

/// "froze the statistics of 20 layers selected by 'of_type<BatchNorm2d>'".
template <>
struct fmt::formatter<graft::norm_stats_result> : graft::detail::report_formatter {
  template <class Ctx>
  auto format(const graft::norm_stats_result& r, Ctx& ctx) const {
    std::string out = fmt::format("{} the statistics of {} layers selected by '{}'",
                                  r.frozen ? "froze" : "unfroze", r.layers.size(), r.selector);
    if (r.affine_tensors)
      out += fmt::format(" and {} {} affine tensors", r.frozen ? "froze" : "unfroze", r.affine_tensors);
    return graft::detail::write_text(ctx, out);
  }
};
