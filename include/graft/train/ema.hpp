#pragma once
// graft::ema: an exponential moving average of a model's weights, equal to timm's
// ModelEmaV3: ema = ema + (1 - decay) * (model - ema) after each optimizer step, with timm's
// decay warm-up; floating-point buffers (BatchNorm's running statistics) averaged like the
// parameters, or copied with exclude_buffers; integer tensors (num_batches_tracked) copied. The
// average is kept in tensors of its own, under the model's state_dict keys: evaluate with it
// (swap_into), save it as a state dict, load it back.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/walk/walk.hpp>

namespace graft {

/// The settings of an ema: timm ModelEmaV3's arguments, with its defaults.
struct ema_options {
  double decay = 0.9999;                   ///< the decay once warmed up; in [0, 1]
  double min_decay = 0.0;                  ///< the least decay during warm-up (use_warmup only); in [0, decay]
  std::int64_t update_after_step = 0;      ///< steps whose update copies the model (decay 0): step <= update_after_step + 1
  bool use_warmup = false;                 ///< decay = 1 - (1 + s / warmup_gamma)^-warmup_power, capped at decay
  double warmup_gamma = 1.0;               ///< > 0
  double warmup_power = 2.0 / 3.0;         ///< > 0
  std::int64_t every = 1;                  ///< update(model, step) averages only when step % every == 0; >= 1
  bool exclude_buffers = false;            ///< copy floating-point buffers instead of averaging them
  std::optional<torch::Device> device{};   ///< where the average lives (default: with each model tensor)
  std::optional<torch::Dtype> dtype{};     ///< the average's floating-point dtype (default: the model's)
};

/// An exponential moving average of a model's parameters and buffers (timm's ModelEmaV3):
///
///     graft::ema ema(model, {.decay = 0.999, .use_warmup = true});
///     for (step = 1; ...) { ...; opt.step(); ema.update(model, step); }
///     { auto in_use = ema.swap_into(model); evaluate(model); }   // the model's own weights come back
///
/// Made from the model's state at construction (a copy). Not thread-safe; not copyable.
class ema {
public:
  using options = ema_options;

  /// An average that starts as a copy of `model`'s parameters and buffers. option_error for a
  /// bad setting, or for a floating-point tensor the average would keep in float16 or bfloat16,
  /// where a (1 - decay) step rounds away (keep it in float32: options.dtype).
  explicit ema(const torch::nn::Module& model, ema_options o = {}) : options_(o) {
    check_options(o);
    torch::NoGradGuard no_grad;
    std::unordered_map<const void*, int> first_name;  // a tensor's first entry, for tied ones
    for (auto t : walk(model, walk_options::state())) {
      entry e{std::string(t.path()), {}, t.is_parameter(), t.tensor().is_floating_point(), -1};
      auto [it, fresh] = first_name.try_emplace(t.tensor().unsafeGetTensorImpl(), static_cast<int>(entries_.size()));
      if (!fresh) {
        e.alias_of = it->second;
        e.value = entries_[static_cast<std::size_t>(e.alias_of)].value;
        entries_.push_back(std::move(e));
        continue;
      }
      auto to = t.tensor().options();
      if (o.device) to = to.device(*o.device);
      if (o.dtype && e.floating) to = to.dtype(*o.dtype);
      e.value = t.tensor().detach().to(to, /*non_blocking=*/false, /*copy=*/true);
      if (e.floating && (e.value.scalar_type() == torch::kHalf || e.value.scalar_type() == torch::kBFloat16))
        throw option_error(fmt::format("ema: '{}' would be averaged in {}, where a (1 - decay) update rounds to zero; "
                                       "keep the average in float32 (ema_options::dtype = torch::kFloat32)",
                                       e.key, c10::toString(e.value.scalar_type())),
                           {.key = e.key});
      entries_.push_back(std::move(e));
    }
  }

  ema(const ema&) = delete;
  ema& operator=(const ema&) = delete;
  ema(ema&&) = default;
  ema& operator=(ema&&) = default;

  const ema_options& settings() const noexcept { return options_; }

  /// The decay an update at `step` uses (timm's get_decay): the set decay without a step; 0
  /// (a copy) while step <= update_after_step + 1; with use_warmup, 1 - (1 + s / warmup_gamma)^
  /// -warmup_power for s = step - update_after_step - 1, kept within [min_decay, decay].
  double decay_at(std::optional<std::int64_t> step = std::nullopt) const noexcept {
    if (!step) return options_.decay;
    const std::int64_t s = std::max<std::int64_t>(0, *step - options_.update_after_step - 1);
    if (s <= 0) return 0.0;
    if (!options_.use_warmup) return options_.decay;
    const double d = 1.0 - std::pow(1.0 + static_cast<double>(s) / options_.warmup_gamma, -options_.warmup_power);
    return std::max(std::min(d, options_.decay), options_.min_decay);
  }

  /// Moves the average towards `model` (timm's update): every floating-point tensor by
  /// lerp(average, model, 1 - decay_at(step)), other tensors (and, with exclude_buffers, every
  /// buffer) copied. With a step, only when step % every == 0; returns whether it updated.
  /// key_error or shape_error, before anything changes, for a model whose state differs from
  /// the one the average was made from.
  bool update(const torch::nn::Module& model, std::optional<std::int64_t> step = std::nullopt) {
    if (step && *step % options_.every != 0) return false;
    const auto current = model_tensors(model, "ema::update");
    const double weight = 1.0 - decay_at(step);
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const entry& e = entries_[i];
      if (e.alias_of >= 0) continue;
      const torch::Tensor& m = current[i];
      if (e.floating && (e.parameter || !options_.exclude_buffers)) {
        if (m.device() == e.value.device() && m.scalar_type() == e.value.scalar_type()) e.value.lerp_(m, weight);
        else e.value.lerp_(m.to(e.value.options()), weight);
      } else {
        e.value.copy_(m);
      }
    }
    return true;
  }

  /// Makes the average a copy of `model` (timm's set): to restart it, e.g. after loading weights.
  void set(const torch::nn::Module& model) {
    const auto current = model_tensors(model, "ema::set");
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].alias_of < 0) entries_[i].value.copy_(current[i]);
  }

  /// Copies the average into `model` (cast to its dtypes and devices): for export. The model's
  /// own weights are lost; swap_into keeps them.
  void copy_to(torch::nn::Module& model) const {
    const auto current = model_tensors(model, "ema::copy_to");
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].alias_of < 0) current[i].copy_(entries_[i].value);
  }

  /// The average in a model for a while: made by swap_into, it puts the model's own tensors
  /// back, bit for bit, when destroyed or on restore().
  class swapped {
  public:
    swapped(const swapped&) = delete;
    swapped& operator=(const swapped&) = delete;
    swapped(swapped&& o) noexcept : model_(std::exchange(o.model_, nullptr)), saved_(std::move(o.saved_)) {}
    swapped& operator=(swapped&&) = delete;
    ~swapped() { restore(); }
    /// Puts the model's own tensors back now (once).
    void restore() noexcept {
      if (!model_) return;
      torch::NoGradGuard no_grad;
      for (auto& [dst, src] : saved_) dst.copy_(src);
      model_ = nullptr;
      saved_.clear();
    }

  private:
    friend class ema;
    swapped(const torch::nn::Module* model, std::vector<std::pair<torch::Tensor, torch::Tensor>> saved)
        : model_(model), saved_(std::move(saved)) {}
    const torch::nn::Module* model_;
    std::vector<std::pair<torch::Tensor, torch::Tensor>> saved_;  // model tensor, its own values
  };

  /// Puts the average into `model` until the returned object is destroyed (evaluation with the
  /// averaged weights, then training goes on from the model's own). Holds one copy of the
  /// model's tensors meanwhile.
  [[nodiscard]] swapped swap_into(torch::nn::Module& model) const {
    const auto current = model_tensors(model, "ema::swap_into");
    std::vector<std::pair<torch::Tensor, torch::Tensor>> saved;
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].alias_of < 0) saved.emplace_back(current[i], current[i].detach().clone());
    swapped guard(&model, std::move(saved));
    for (std::size_t i = 0; i < entries_.size(); ++i)
      if (entries_[i].alias_of < 0) current[i].copy_(entries_[i].value);
    return guard;
  }

  /// The average under the model's state_dict keys (tied tensors under every name), as the
  /// average's own tensors: save it (graft::save), or load it into a model (graft::load) as
  /// timm's "state_dict_ema".
  graft::state_dict state_dict() const {
    graft::state_dict sd;
    for (const auto& e : entries_) sd.insert(e.key, e.value);
    return sd;
  }

  /// Restores the average from `sd` (what state_dict() gave, read back): every key of the model,
  /// with its shape, and no other; key_error or shape_error naming the first that differs, before
  /// anything changes.
  void load_state_dict(const graft::state_dict& sd) {
    check_state_dict(sd);
    torch::NoGradGuard no_grad;
    for (const auto& e : entries_)
      if (e.alias_of < 0) e.value.copy_(sd.find(e.key)->tensor);
  }

  /// What load_state_dict checks, without loading: key_error or shape_error naming the first key
  /// that differs.
  void check_state_dict(const graft::state_dict& sd) const {
    for (const auto& e : entries_) {
      const state_entry* found = sd.find(e.key);
      if (!found)
        throw key_error(fmt::format("ema::load_state_dict: the state dict has no '{}' ({} entries; the average has {})",
                                    e.key, sd.size(), entries_.size()),
                        {.key = e.key});
      if (found->tensor.sizes() != e.value.sizes())
        throw shape_error(fmt::format("ema::load_state_dict: '{}' has shape {} in the state dict, {} in the average", e.key,
                                      graft::detail::bracketed(found->tensor.sizes()), graft::detail::bracketed(e.value.sizes())),
                          {.key = e.key});
      if (found->tensor.is_floating_point() != e.floating)
        throw shape_error(fmt::format("ema::load_state_dict: '{}' is {} in the state dict, {} in the average", e.key,
                                      c10::toString(found->tensor.scalar_type()), c10::toString(e.value.scalar_type())),
                          {.key = e.key});
    }
    if (sd.size() != entries_.size())
      for (const auto& s : sd)
        if (!has_key(s.key))
          throw key_error(fmt::format("ema::load_state_dict: unexpected key '{}': the model has no such tensor", s.key),
                          {.key = s.key});
  }

private:
  struct entry {
    std::string key;
    torch::Tensor value;  // the average (shared with the first name for a tied tensor)
    bool parameter;
    bool floating;
    int alias_of;  // index of the entry whose tensor this name shares, or -1
  };

  bool has_key(std::string_view key) const {
    for (const auto& e : entries_)
      if (e.key == key) return true;
    return false;
  }

  // `model`'s state tensors, parallel to entries_, checked against them.
  std::vector<torch::Tensor> model_tensors(const torch::nn::Module& model, const char* caller) const {
    std::vector<torch::Tensor> out;
    out.reserve(entries_.size());
    for (auto t : walk(model, walk_options::state())) {
      const std::size_t i = out.size();
      if (i >= entries_.size() || entries_[i].key != t.path())
        throw key_error(fmt::format("{}: the model's tensor '{}' is not the average's {} ('{}'): the model is not the "
                                    "one the average was made from",
                                    caller, t.path(), i + 1, i < entries_.size() ? entries_[i].key : std::string("none")),
                        {.key = std::string(t.path())});
      if (t.tensor().sizes() != entries_[i].value.sizes())
        throw shape_error(fmt::format("{}: '{}' has shape {} in the model, {} in the average", caller, t.path(),
                                      graft::detail::bracketed(t.tensor().sizes()), graft::detail::bracketed(entries_[i].value.sizes())),
                          {.key = entries_[i].key});
      out.push_back(t.tensor());
    }
    if (out.size() != entries_.size())
      throw key_error(fmt::format("{}: the model has no '{}' (it has {} tensors, the average {})", caller,
                                  entries_[out.size()].key, out.size(), entries_.size()),
                      {.key = entries_[out.size()].key});
    return out;
  }

  static void check_options(const ema_options& o) {
    auto bad = [](const char* name, double v, const char* want) {
      throw option_error(fmt::format("ema_options: {} {} {}", name, v, want), {.key = name});
    };
    if (!(o.decay >= 0.0 && o.decay <= 1.0)) bad("decay", o.decay, "must be in [0, 1]");
    if (!(o.min_decay >= 0.0 && o.min_decay <= o.decay)) bad("min_decay", o.min_decay, "must be in [0, decay]");
    if (!(o.warmup_gamma > 0.0)) bad("warmup_gamma", o.warmup_gamma, "must be > 0");
    if (!(o.warmup_power > 0.0)) bad("warmup_power", o.warmup_power, "must be > 0");
    if (o.every < 1) bad("every", static_cast<double>(o.every), "must be >= 1");
    if (o.update_after_step < 0) bad("update_after_step", static_cast<double>(o.update_after_step), "must be >= 0");
    if (o.dtype && !c10::isFloatingType(*o.dtype))
      throw option_error(fmt::format("ema_options: dtype {} is not a floating-point dtype", c10::toString(*o.dtype)),
                         {.key = "dtype"});
  }

  ema_options options_;
  std::vector<entry> entries_;
};

} // namespace graft
