#pragma once
// LoRA: trainable low-rank adapters beside the Linear, Conv and Embedding layers a selector
// picks, on any torch::nn::Module, with PEFT's math. A wrapped layer keeps its registered
// `weight` as the frozen base W0 and gets two child modules, lora_A and lora_B; the layer's
// weight member, which its forward() reads, becomes W0 + scale·ΔW(A, B), recomputed by
// refresh() before each training forward. merge() folds the adapter into W0 for inference.
// graft's own layer types (lora/layers.hpp) compute the adapter on the activations instead.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn.h>  // the module headers are not self-contained: take them whole

#include <graft/detail/training_state.hpp>
#include <graft/error.hpp>
#include <graft/lora/detail/attach.hpp>
#include <graft/lora/layers.hpp>
#include <graft/lora/options.hpp>
#include <graft/select/select.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft::lora {

class adapters;
namespace detail {
struct adapters_access;
// The wrapped layers, shared with graft's list of what follows an optimizer step: after a step
// (graft::lr_scheduler::step()), the merged weight of each libtorch layer whose A or B changed
// since the last refresh() is recomputed in place, without a graph, so that an evaluation that
// follows the last step sees it. A training forward still needs refresh() first. libtorch's
// optimizers step through Tensor::data(), which leaves the version counter alone, so a change
// is seen by comparing A and B (and DoRA's magnitude) with copies kept at the last refresh
// (they are small); on a
// device other than the CPU that comparison would wait for the device, so there the weights
// are recomputed after every step without it.
struct adapter_layers final : graft::detail::after_step_listener {
  std::vector<layer> layers;
  bool merged = false;
  bool disabled = false;  // inside a disabled() scope: the layers compute the base model
  std::vector<std::vector<torch::Tensor>> seen;  // A, B (and m) at the last refresh (CPU layers)

  static std::vector<torch::Tensor> trained(const layer& l) {
    return l.magnitude.defined() ? std::vector<torch::Tensor>{l.A, l.B, l.magnitude} : std::vector<torch::Tensor>{l.A, l.B};
  }
  void record() {
    torch::NoGradGuard no_grad;
    seen.clear();
    for (auto& l : layers) {
      seen.emplace_back();
      if (!l.own_layer && l.A.is_cpu())
        for (auto& t : trained(l)) seen.back().push_back(t.detach().clone());
    }
  }
  bool out_of_date(std::size_t i) const {
    auto& l = layers[i];
    if (l.own_layer) return false;
    if (i >= seen.size() || seen[i].empty()) return true;
    auto now = trained(l);
    for (std::size_t k = 0; k < now.size(); ++k)
      if (!torch::equal(now[k], seen[i][k])) return true;
    return false;
  }
  void after_step() override {
    if (merged || disabled) return;
    bool changed = false;
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < layers.size(); ++i)
      if (out_of_date(i)) {
        // In place: a training forward without refresh() then still fails loudly in backward().
        layers[i].weight->copy_(layers[i].weight_with(layers[i].A));
        changed = true;
      }
    if (changed) record();
  }
};
} // namespace detail

/// The adapters attach() put on a model. Keep it while the model trains: refresh() before
/// each training forward, merge() for inference, save() (graft/lora/peft.hpp) to ship them.
class adapters {
public:
  adapters(torch::nn::Module& model, std::vector<layer> layers, options opts,
           std::vector<selected_tensor> saved, attach_report report)
      : model_(&model), state_(std::make_shared<detail::adapter_layers>()), options_(std::move(opts)),
        saved_(std::move(saved)), report_(std::move(report)) {
    state_->layers = std::move(layers);
    graft::detail::step_listeners().add(state_);
  }
  // One object per set of adapters: a copy's merge() would not be seen by the original.
  adapters(const adapters&) = delete;
  adapters& operator=(const adapters&) = delete;
  adapters(adapters&&) noexcept = default;
  adapters& operator=(adapters&&) noexcept = default;

  /// The wrapped layers, in the model's order.
  const std::vector<layer>& layers() const noexcept { return state_->layers; }
  /// The options they were made with.
  const lora::options& options() const noexcept { return options_; }
  /// What attach() did.
  const attach_report& report() const noexcept { return report_; }
  /// The model they sit on.
  torch::nn::Module& model() const noexcept { return *model_; }
  /// Whether merge() folded them into the base weights.
  bool merged() const noexcept { return state_->merged; }

  /// Recomputes each layer's weight as W0 + scale·ΔW from the current A and B. Call it before
  /// every forward whose backward trains the adapters (each training step). After an optimizer
  /// step, graft::lr_scheduler::step() updates the weights for an evaluation itself; without
  /// graft's scheduler, call refresh() before evaluating. Under torch::NoGradGuard it records no
  /// graph. Dropout applies only while the model is in training mode and gradients are
  /// recorded. While merged, the weights already hold the adapters and it does nothing.
  void refresh() {
    if (state_->merged || state_->disabled) return;
    for (auto& l : state_->layers) {
      if (l.own_layer) continue;
      torch::Tensor a = l.A, keep;
      if (options_.dropout > 0 && l.kind != layer_kind::embedding && model_->is_training() && torch::GradMode::is_enabled()) {
        // Drops input features of A (columns of the linear map), with one mask per step.
        keep = torch::empty({l.A.size(1)}, l.A.options().requires_grad(false)).bernoulli_(1.0 - options_.dropout);
        std::vector<std::int64_t> shape(static_cast<std::size_t>(l.A.dim()), 1);
        shape[1] = l.A.size(1);
        keep = keep.view(shape) / (1.0 - options_.dropout);
        a = l.A * keep;
      }
      *l.weight = l.weight_with(a, keep);
    }
    state_->record();
  }

  /// While it lives, the layers compute the model without its adapters (PiSSA and OLoRA: the
  /// original weights, not the residuals), for a base-model comparison or a reference output;
  /// when it goes, the adapters are back. Adapters that are merged are refused (a state_error):
  /// unmerge() them first. refresh() and an optimizer step's update wait until the scope ends.
  class disabled_scope {
  public:
    explicit disabled_scope(adapters& a) : a_(&a) { a.disable(true); }
    disabled_scope(const disabled_scope&) = delete;
    disabled_scope& operator=(const disabled_scope&) = delete;
    ~disabled_scope() { a_->disable(false); }

  private:
    adapters* a_;
  };
  /// `{ auto off = adapters.disabled(); reference = net->forward(x); }`
  [[nodiscard]] disabled_scope disabled() { return disabled_scope(*this); }
  /// False inside a disabled() scope.
  bool enabled() const noexcept { return !state_->disabled; }

  /// Folds scale·ΔW into each base weight (DoRA: W0 becomes m/‖W0 + scale·ΔW‖·(W0 + scale·ΔW),
  /// the norm kept for unmerge(), as in PEFT): the layers then run at their own cost. The
  /// adapters stay (unmerge() takes them back out).
  void merge() {
    if (state_->merged) throw state_error("the adapters are merged already");
    if (state_->disabled) throw state_error("the adapters are disabled: merge() them after the disabled() scope");
    torch::NoGradGuard no_grad;
    for (auto& l : state_->layers) {
      auto d = l.delta();
      if (l.magnitude.defined()) {
        l.merged_norm = l.dora_norm(d);
        l.base.add_(d).mul_(l.dora_ratio(l.merged_norm));
      } else {
        l.base.add_(d);
      }
      *l.weight = l.base;
      if (l.own_layer) l.own_layer->set_active(false);
    }
    state_->merged = true;
  }

  /// Takes out what merge() folded in; the layers run with separate adapters again.
  void unmerge() {
    if (!state_->merged) throw state_error("the adapters are not merged");
    {
      torch::NoGradGuard no_grad;
      for (auto& l : state_->layers) {
        if (l.magnitude.defined()) {
          l.base.div_(l.dora_ratio(l.merged_norm));
          l.merged_norm = torch::Tensor();
        }
        l.base.sub_(l.delta());
        if (l.own_layer) l.own_layer->set_active(true);
      }
    }
    state_->merged = false;
    refresh();
  }

  /// Removes the adapters from the model: the lora_A/lora_B (and DoRA's lora_magnitude_vector)
  /// children go, and each layer's weight is its registered W0 again, with the adapters folded
  /// in if merged (PiSSA and OLoRA: unmerged, the weight the layer had before attach(), not the
  /// residual). The model's state dict then has its original keys. These adapters are empty
  /// afterwards.
  void unload() {
    for (auto& l : state_->layers) {
      auto children = l.module->named_children();
      if (!children.contains("lora_A") || !children.contains("lora_B") ||
          (l.magnitude.defined() && !children.contains("lora_magnitude_vector")))
        throw state_error(fmt::format("'{}' lost its lora_A, lora_B or lora_magnitude_vector child since attach(): nothing was unloaded",
                                      l.path));
    }
    for (auto& l : state_->layers) {
      if (l.initial_A.defined() && !state_->merged) {
        // PiSSA / OLoRA: W0 is the residual; the weights the model had come back.
        torch::NoGradGuard no_grad;
        l.base.copy_(l.original_weight());
      }
      *l.weight = l.base;
      if (l.own_layer) l.own_layer->disconnect();
      l.module->unregister_module("lora_A");
      l.module->unregister_module("lora_B");
      if (l.magnitude.defined()) l.module->unregister_module("lora_magnitude_vector");
    }
    state_->layers.clear();
    saved_.clear();
  }

  /// Merges and removes the adapters (PEFT's merge_and_unload).
  void merge_and_unload() {
    if (!state_->merged) merge();
    unload();
  }

  /// Every tensor the adapter trains and saves, under its path in the model: lora_A and lora_B
  /// of each layer (and lora_magnitude_vector with DoRA), the trained biases, and the
  /// modules_to_save parameters.
  const std::vector<selected_tensor>& saved() const noexcept { return saved_; }

  /// The trainable parameters: for an optimizer or param_groups.
  std::vector<torch::Tensor> parameters() const {
    std::vector<torch::Tensor> p;
    for (auto& s : saved_)
      if (s.kind == tensor_kind::parameter && s.tensor.requires_grad()) p.push_back(s.tensor);
    return p;
  }

private:
  friend struct detail::adapters_access;
  void disable(bool off) {
    if (off && state_->merged) throw state_error("the adapters are merged: unmerge() them before disabling them");
    if (off == state_->disabled) return;
    torch::NoGradGuard no_grad;
    for (auto& l : state_->layers) {
      if (l.own_layer) {
        // graft's own layers: no adapter, or the starting one that completes a residual.
        if (!off) l.connect_own(options_.dropout);
        else if (l.initial_A.defined()) l.own_layer->connect(l.initial_A, l.initial_B, l.scale, 0.0);
        else l.own_layer->set_active(false);
      } else if (off) {
        *l.weight = l.original_weight();
      }
    }
    state_->disabled = off;
    if (!off) refresh();
  }

  torch::nn::Module* model_;
  std::shared_ptr<detail::adapter_layers> state_;
  lora::options options_;
  std::vector<selected_tensor> saved_;
  attach_report report_;
  };


namespace detail {

// For the functions beside the class that change the layers in place (hot_swap).
struct adapters_access {
  static std::vector<layer>& layers(adapters& a) { return a.state_->layers; }
};

/// Wraps the planned layers; every check happens before the model changes.
template <selector M>
adapters attach_layers(torch::nn::Module& model, std::vector<layer_plan> plan, const options& opts,
                       const M* modules_to_save, std::string_view picked_by) {
  if (plan.empty()) throw selection_error(fmt::format("LoRA targets '{}' picked no layer of {}", picked_by, model.name()));
  if (opts.r <= 0) throw option_error(fmt::format("LoRA rank r must be positive, not {}", opts.r));
  if (!(opts.dropout >= 0 && opts.dropout < 1)) throw option_error(fmt::format("LoRA dropout must be in [0, 1), not {}", opts.dropout));

  std::vector<layer> layers;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    auto& p = plan[i];
    if (p.path.empty())
      throw option_error(fmt::format("LoRA cannot wrap the model itself ({}), picked by '{}': PEFT's files name a layer by "
                                     "its path inside the model; wrap the model in a parent module",
                                     model.name(), picked_by));
    for (std::size_t j = 0; j < i; ++j)
      if (plan[j].module == p.module)
        throw option_error(fmt::format("'{}' and '{}' are one module registered under two names: LoRA can wrap it under one",
                                       plan[j].path, p.path));
    auto [kind, type] = classify(*p.module, p.path, picked_by);
    for (auto* child : {"lora_A", "lora_B", "lora_magnitude_vector"})
      if (p.module->named_children().contains(child))
        throw state_error(fmt::format("'{}' has LoRA adapters already (a child '{}'): unload() them first", p.path, child));
    auto r = value_for(opts.rank_pattern, p.path, opts.r, "rank_pattern");
    auto alpha = value_for(opts.alpha_pattern, p.path, opts.alpha, "alpha_pattern");
    if (r <= 0) throw option_error(fmt::format("LoRA rank for '{}' must be positive, not {}", p.path, r));
    torch::Tensor base = p.module->named_parameters(false)["weight"];
    auto scale = opts.rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
    layers.push_back({p.path, std::move(type), kind, p.module, weight_member(*p.module, kind), base, {}, {}, r, alpha, scale,
                      dynamic_cast<adapter_slot*>(p.module)});
    if (opts.init == init_mode::pissa || opts.init == init_mode::olora) {
      // Decomposed here, before anything changes: the base gives up scale·B0·A0 below.
      auto name = opts.init == init_mode::olora ? std::string("olora")
                  : opts.pissa_niter           ? fmt::format("pissa_niter_{}", *opts.pissa_niter)
                                               : std::string("pissa");
      if (kind != layer_kind::linear)
        throw option_error(fmt::format("LoRA init '{}' starts Linear layers only, as in PEFT; '{}' is {}", name, p.path,
                                       layers.back().type));
      if (!base.is_floating_point())
        throw option_error(fmt::format("LoRA init '{}' needs a floating-point weight; '{}' is {}", name, p.path, c10::toString(base.scalar_type())));
      if (r > std::min(base.size(0), base.size(1)))
        throw option_error(fmt::format("LoRA init '{}' on '{}' ({} x {}): rank {} exceeds the weight's smaller dimension", name, p.path,
                                       base.size(0), base.size(1), r));
      if (opts.pissa_niter && *opts.pissa_niter < 0)
        throw option_error(fmt::format("LoRA pissa_niter must be >= 0, not {}", *opts.pissa_niter));
      auto [a0, b0] = decomposed_start(base, r, scale, opts.init, opts.init == init_mode::pissa ? opts.pissa_niter : std::nullopt);
      layers.back().initial_A = a0.to(base.scalar_type());
      layers.back().initial_B = b0.to(base.scalar_type());
    } else if (opts.pissa_niter) {
      throw option_error("LoRA pissa_niter is set but init is not pissa");
    }
  }
  std::vector<selected_tensor> to_save_modules;
  std::vector<std::string> to_save_paths;
  if (modules_to_save) {
    auto picked = select(model, *modules_to_save);
    for (auto& s : picked) {
      auto owner = parent_path(s.path);
      if (owner.empty())
        throw option_error(fmt::format("modules_to_save '{}' picks '{}', a tensor of the model itself: PEFT saves whole "
                                       "submodules; pick a submodule's tensors",
                                       modules_to_save->describe(), s.path));
      for (auto& l : layers)
        if (owner == l.path || owner.starts_with(l.path + ".") || l.path.starts_with(owner + "."))
          throw option_error(fmt::format("'{}' is both a LoRA target and (through '{}') a module to save: a module is "
                                         "adapted or trained whole, not both, as in PEFT",
                                         l.path, s.path));
      if (std::find(to_save_paths.begin(), to_save_paths.end(), owner) == to_save_paths.end()) to_save_paths.push_back(owner);
    }
    // The modules' buffers (a BatchNorm's statistics) are saved with them, as PEFT saves a
    // module's whole state dict.
    for (auto t : walk(model, walk_options::state()))
      if (std::find(to_save_paths.begin(), to_save_paths.end(), parent_path(t.path())) != to_save_paths.end())
        to_save_modules.push_back({std::string(t.path()), t.tensor(), &t.owner(), t.kind()});
  }

  // Nothing has changed so far; from here on nothing throws but allocation.
  attach_report rep;
  rep.trainable_before = trainable_elements(model);
  for (auto t : walk(model)) t.tensor().set_requires_grad(false);
  for (auto& l : layers) {
    auto [sa, sb] = factor_shapes(l.kind, l.base, l.r);
    auto a = torch::empty(sa, l.base.options().requires_grad(false));
    auto b = torch::empty(sb, l.base.options().requires_grad(false));
    if (l.initial_A.defined()) {
      // PiSSA / OLoRA: the factors start as the decomposition, and W0 becomes the residual
      // W - scale·B0·A0 (computed in float32, as PEFT does).
      torch::NoGradGuard no_grad;
      a.copy_(l.initial_A);
      b.copy_(l.initial_B);
      l.base.copy_(l.base.to(torch::kFloat) - l.start_product());
    } else {
      init_factors(l.kind, opts.init, a, b, l.r);
    }
    l.A = l.module->register_module("lora_A", std::make_shared<factor_impl>(a.set_requires_grad(true)))->weight;
    l.B = l.module->register_module("lora_B", std::make_shared<factor_impl>(b.set_requires_grad(true)))->weight;
    if (opts.dora) {
      // PEFT's start: m = ‖W0 + scale·ΔW‖ per row, so a new DoRA adapter changes nothing when
      // ΔW starts at zero.
      auto m = l.dora_norm(l.delta(a, b)).reshape(magnitude_shape(l.kind, l.base)).clone().set_requires_grad(true);
      l.magnitude = l.module->register_module("lora_magnitude_vector", std::make_shared<factor_impl>(m))->weight;
    }
    l.connect_own(opts.dropout);
    rep.layers.push_back(l.path);
    rep.types.push_back(l.type);
    rep.ranks.push_back(l.r);
    rep.scales.push_back(l.scale);
    rep.adapter_elements += l.elements();
  }
  // What the adapter trains and saves, in the model's order.
  std::vector<selected_tensor> saved;
  std::vector<std::string> lora_paths;
  for (auto& l : layers) lora_paths.push_back(l.path);
  auto is_lora_layer = [&](std::string_view module_path) {
    return std::find(lora_paths.begin(), lora_paths.end(), module_path) != lora_paths.end();
  };
  auto in_to_save = [&](const torch::Tensor& t) {
    return std::any_of(to_save_modules.begin(), to_save_modules.end(),
                       [&](auto& s) { return s.tensor.unsafeGetTensorImpl() == t.unsafeGetTensorImpl(); });
  };
  for (auto t : walk(model, walk_options::state())) {
    auto path = std::string(t.path());
    auto owner = parent_path(path);
    // This call's adapters only: another attach()'s (or a user's module named lora_A) are not ours.
    auto layer_path = parent_path(owner);
    auto child = std::string_view(owner).substr(layer_path.empty() ? 0 : layer_path.size() + 1);
    bool adapter = t.is_parameter() && t.name() == "weight" && is_lora_layer(layer_path) &&
                   (child == "lora_A" || child == "lora_B" || (opts.dora && child == "lora_magnitude_vector"));
    bool bias = t.is_parameter() && t.name() == "bias" &&
                (opts.bias == bias_mode::all || (opts.bias == bias_mode::lora_only && is_lora_layer(owner)));
    bool whole = in_to_save(t.tensor());
    if (!(adapter || bias || whole)) continue;
    if (t.is_parameter()) t.tensor().set_requires_grad(true);
    saved.push_back({path, t.tensor(), &t.owner(), t.kind()});
  }
  rep.modules_to_save = to_save_paths;
  rep.bias = opts.bias;
  rep.trainable_after = trainable_elements(model);
  for (auto t : walk(model)) rep.elements += t.tensor().numel();

  adapters out(model, std::move(layers), opts, std::move(saved), std::move(rep));
  out.refresh();
  return out;
}

/// The layers a selector picks: the distinct modules owning the parameters it selects.
template <selector S>
std::vector<layer_plan> plan_layers(torch::nn::Module& model, const S& targets) {
  std::vector<layer_plan> plan;
  for (auto& t : select(model, targets)) {
    auto path = parent_path(t.path);
    if (plan.empty() || plan.back().module != t.owner)
      if (std::none_of(plan.begin(), plan.end(), [&](auto& p) { return p.module == t.owner; }))
        plan.push_back({std::move(path), t.owner});
  }
  return plan;
}

struct no_modules_to_save : selector_base {
  static constexpr needs requirement = needs::name;
  bool matches(const tensor_view&) const { return false; }
  std::string describe() const { return "nothing"; }
};

} // namespace detail

/// Puts LoRA adapters beside every layer owning a parameter `targets` selects, freezes the
/// rest of the model, and makes the adapters (and the biases `opts.bias` names) trainable.
/// A selected layer LoRA cannot wrap is a selection_error naming it; an empty selection is one
/// too. Transactional: on any error the model is unchanged.
template <selector S>
adapters attach(torch::nn::Module& model, const S& targets, const options& opts = {}) {
  return detail::attach_layers<detail::no_modules_to_save>(model, detail::plan_layers(model, targets), opts, nullptr,
                                                           targets.describe());
}

/// As above; the modules owning what `modules_to_save` selects (e.g. a new head) also train
/// fully and are saved with the adapter, as PEFT's modules_to_save.
template <selector S, selector M>
adapters attach(torch::nn::Module& model, const S& targets, const options& opts, const M& modules_to_save) {
  return detail::attach_layers(model, detail::plan_layers(model, targets), opts, &modules_to_save, targets.describe());
}

} // namespace graft::lora
