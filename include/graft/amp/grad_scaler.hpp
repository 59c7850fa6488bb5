#pragma once
// graft::amp::grad_scaler: PyTorch's torch.amp.GradScaler for any libtorch optimizer. The loss
// is multiplied by a scale before backward, so that small float16 gradients do not flush to
// zero; the gradients are divided by it again before the optimizer's step, and a step whose
// gradients hold an inf or NaN is skipped and the scale lowered. The fused ATen kernels
// (_amp_foreach_non_finite_check_and_unscale_, _amp_update_scale_) do the work where libtorch
// has them: on CUDA, and on every device from libtorch 2.4; libtorch 1.13's CPU has none, and
// the same float32 math is written out here (detail::amp_unscale, detail::amp_update_scale).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <graft/detail/dtypes.hpp>
#include <graft/error.hpp>

namespace graft {
namespace detail {

/// Multiplies every tensor of `grads` (one device, one dtype) by `inv_scale` (a one-element
/// float32 tensor on that device) in place and sets `found_inf` (one float32 element) to 1 if
/// any element is inf or NaN: at::_amp_foreach_non_finite_check_and_unscale_.
inline void amp_unscale(const std::vector<torch::Tensor>& grads, torch::Tensor& found_inf,
                        const torch::Tensor& inv_scale) {
  if (grads.empty()) return;
#if !GRAFT_TORCH_AT_LEAST(2, 4)
  if (!found_inf.is_cuda()) {
    // No kernel on this device: the kernel's math, written out. Each element is checked, then
    // multiplied in float32 (float64 stays float64), and rounded back to its dtype.
    for (const auto& g : grads) {
      if (!g.isfinite().all().item<bool>()) found_inf.fill_(1.0);
      if (g.scalar_type() == torch::kFloat32 || g.scalar_type() == torch::kFloat64) g.mul_(inv_scale);
      else g.copy_(g.to(torch::kFloat32).mul_(inv_scale));
    }
    return;
  }
#endif
  at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale);
}

/// Updates `scale` (one float32 element) and `growth_tracker` (one int32 element) in place
/// from `found_inf`: at::_amp_update_scale_. An inf or NaN: scale * backoff_factor, tracker 0.
/// Otherwise the tracker counts the step, and on reaching growth_interval the scale grows by
/// growth_factor (unless that overflows float32) and the tracker restarts at 0.
inline void amp_update_scale(torch::Tensor& scale, torch::Tensor& growth_tracker, const torch::Tensor& found_inf,
                             double growth_factor, double backoff_factor, std::int64_t growth_interval) {
#if !GRAFT_TORCH_AT_LEAST(2, 4)
  if (!scale.is_cuda()) {
    // No kernel on this device: the kernel's arithmetic, float32 scale times a double factor.
    const float current = scale.item<float>();
    if (found_inf.item<float>() != 0.0f) {
      scale.fill_(static_cast<double>(static_cast<float>(static_cast<double>(current) * backoff_factor)));
      growth_tracker.fill_(0);
      return;
    }
    const std::int64_t successful = static_cast<std::int64_t>(growth_tracker.item<std::int32_t>()) + 1;
    if (successful == growth_interval) {
      const float grown = static_cast<float>(static_cast<double>(current) * growth_factor);
      if (std::isfinite(grown)) scale.fill_(static_cast<double>(grown));
      growth_tracker.fill_(0);
    } else {
      growth_tracker.fill_(successful);
    }
    return;
  }
#endif
  at::_amp_update_scale_(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval);
}

/// Where an optimizer is in a grad_scaler's iteration (GradScaler's OptState).
enum class amp_stage { ready, unscaled, stepped };

/// One optimizer's progress through a grad_scaler's iteration, and its found_inf per device.
struct amp_optimizer_state {
  amp_stage progress = amp_stage::ready;
  std::vector<std::pair<torch::Device, torch::Tensor>> found_inf{};
};

} // namespace detail

namespace amp {

/// The settings of a grad_scaler: torch.amp.GradScaler's arguments, with its defaults.
struct grad_scaler_options {
  double init_scale = 65536.0;          ///< the first scale (2^16); > 0 and finite
  double growth_factor = 2.0;           ///< the scale's growth after growth_interval finite steps; > 1
  double backoff_factor = 0.5;          ///< the scale's factor after a step with an inf or NaN; in (0, 1)
  std::int64_t growth_interval = 2000;  ///< consecutive finite steps before the scale grows; >= 1
  bool enabled = true;                  ///< false: scale() returns the loss, step() just steps
};

/// A grad_scaler's state, with the fields of PyTorch's GradScaler.state_dict(): "scale"
/// (float), "growth_factor" (float), "backoff_factor" (float), "growth_interval" (int) and
/// "_growth_tracker" (int). Turning it into a graft::value dict (to write it with graft's
/// writers in PyTorch's layout) or reading it back is left to the caller: docs/amp.md shows how.
struct grad_scaler_state {
  double scale = 65536.0;               ///< "scale": the current scale
  double growth_factor = 2.0;           ///< "growth_factor"
  double backoff_factor = 0.5;          ///< "backoff_factor"
  std::int64_t growth_interval = 2000;  ///< "growth_interval"
  std::int64_t growth_tracker = 0;      ///< "_growth_tracker": consecutive finite steps so far
};

/// Gradient scaling for mixed-precision training, equal to PyTorch's torch.amp.GradScaler:
///
///     scaler.scale(loss).backward();
///     scaler.unscale_(opt);        // optional: to clip or inspect the true gradients
///     scaler.step(opt);            // skipped if a gradient holds an inf or NaN
///     scaler.update();             // backoff after a skipped step, growth after growth_interval
///
/// With several optimizers: unscale_ (optionally) and step each, then one update(). The scale
/// lives in a float32 tensor made on the device of the first loss scaled.
class grad_scaler {
public:
  using options = grad_scaler_options;
  using state = grad_scaler_state;

  /// A scaler with `o`'s settings; option_error naming the setting for a bad one (checked
  /// whether or not enabled).
  explicit grad_scaler(grad_scaler_options o = {}) : options_(o), init_scale_(o.init_scale) {
    check_settings("grad_scaler_options", "init_scale", o.init_scale, o.growth_factor, o.backoff_factor, o.growth_interval);
  }

  grad_scaler(const grad_scaler&) = delete;
  grad_scaler& operator=(const grad_scaler&) = delete;
  grad_scaler(grad_scaler&&) = default;
  grad_scaler& operator=(grad_scaler&&) = default;

  /// `loss` times the scale (GradScaler.scale); the loss itself when disabled. The first call
  /// makes the scale tensor, float32, on the loss's device.
  torch::Tensor scale(const torch::Tensor& loss) {
    if (!options_.enabled) return loss;
    if (!scale_.defined()) {
      scale_ = torch::scalar_tensor(init_scale_, torch::TensorOptions().dtype(torch::kFloat32).device(loss.device()));
      growth_tracker_ = torch::scalar_tensor(init_growth_tracker_,
                                             torch::TensorOptions().dtype(torch::kInt32).device(loss.device()));
    }
    return loss * scale_.to(loss.device(), scale_.scalar_type(), /*non_blocking=*/true);
  }

  /// Divides every gradient of every param group of `optimizer` by the scale, in place
  /// (float32 math), and records whether any holds an inf or NaN (GradScaler.unscale_). Once
  /// per optimizer between update()s, before its step(); state_error otherwise, before scale(),
  /// and for a float16 gradient. Does nothing when disabled.
  void unscale_(torch::optim::Optimizer& optimizer) {
    if (!options_.enabled) return;
    check_scaled("unscale_");
    auto& st = optimizers_[&optimizer];
    if (st.progress == stage::unscaled)
      throw state_error("grad_scaler::unscale_: unscale_() has already been called on this optimizer since "
                        "the last update()");
    if (st.progress == stage::stepped)
      throw state_error("grad_scaler::unscale_: unscale_() is being called after step() on this optimizer; "
                        "call update() first");
    const torch::Tensor inv_scale = scale_.to(torch::kFloat64).reciprocal().to(torch::kFloat32);
    const torch::Tensor found_inf =
        torch::scalar_tensor(0.0, torch::TensorOptions().dtype(torch::kFloat32).device(scale_.device()));
    st.found_inf = unscale_grads(optimizer, inv_scale, found_inf);
    st.progress = stage::unscaled;
  }

  /// Unscales `optimizer`'s gradients unless unscale_() did, then calls optimizer.step() if
  /// none held an inf or NaN (GradScaler.step); returns whether it stepped. Once per optimizer
  /// between update()s: state_error otherwise, before scale(), and for an optimizer none of
  /// whose parameters has a gradient. Disabled: steps and returns true.
  bool step(torch::optim::Optimizer& optimizer) {
    if (!options_.enabled) {
      optimizer.step();
      return true;
    }
    check_scaled("step");
    auto& st = optimizers_[&optimizer];
    if (st.progress == stage::stepped)
      throw state_error("grad_scaler::step: step() has already been called on this optimizer since the last update()");
    if (st.progress == stage::ready) unscale_(optimizer);
    if (st.found_inf.empty())
      throw state_error("grad_scaler::step: no inf checks were recorded for this optimizer: none of its "
                        "parameters has a gradient");
    bool finite = true;
    for (const auto& device_found : st.found_inf)
      if (device_found.second.item<double>() != 0.0) finite = false;
    if (finite) optimizer.step();
    st.progress = stage::stepped;
    return finite;
  }

  /// Updates the scale from every optimizer unscaled since the last update (GradScaler.update):
  /// times backoff_factor if any gradient held an inf or NaN, times growth_factor after
  /// growth_interval finite updates in a row. state_error before scale() or if no optimizer was
  /// unscaled or stepped since the last update. Does nothing when disabled.
  void update() {
    if (!options_.enabled) return;
    check_scaled("update");
    std::vector<torch::Tensor> found;
    for (const auto& opt : optimizers_)
      for (const auto& device_found : opt.second.found_inf)
        found.push_back(device_found.second.to(scale_.device(), device_found.second.scalar_type(), /*non_blocking=*/true));
    if (found.empty())
      throw state_error("grad_scaler::update: no inf checks were recorded prior to update(): call step() (or "
                        "unscale_()) for an optimizer first");
    torch::Tensor found_inf = found[0];
    for (std::size_t i = 1; i < found.size(); ++i) found_inf = found_inf + found[i];
    detail::amp_update_scale(scale_, growth_tracker_, found_inf, options_.growth_factor, options_.backoff_factor,
                             options_.growth_interval);
    optimizers_.clear();
  }

  /// Sets the scale to `new_scale` (> 0 and finite, else option_error) and forgets this
  /// iteration's optimizers, leaving the growth tracker as it is (GradScaler.update(new_scale)).
  /// state_error before scale(). Does nothing when disabled.
  void update(double new_scale) {
    if (!options_.enabled) return;
    check_scaled("update");
    if (!(new_scale > 0) || !std::isfinite(new_scale))
      throw option_error(fmt::format("grad_scaler::update: new_scale must be > 0 and finite, got {}", new_scale));
    scale_.fill_(new_scale);
    optimizers_.clear();
  }

  /// The current scale (GradScaler.get_scale()): init_scale before the first scale(), 1.0
  /// when disabled. Reads the tensor: a device sync on CUDA.
  double get_scale() const {
    if (!options_.enabled) return 1.0;
    return scale_.defined() ? scale_.item<double>() : init_scale_;
  }

  /// Finite steps since the scale last changed (GradScaler._get_growth_tracker()); 0 when disabled.
  std::int64_t growth_tracker() const {
    if (!options_.enabled) return 0;
    return growth_tracker_.defined() ? growth_tracker_.item<std::int64_t>() : init_growth_tracker_;
  }

  /// Whether it scales (GradScaler.is_enabled()).
  bool is_enabled() const noexcept { return options_.enabled; }

  /// The state to save after update() (GradScaler.state_dict()); nullopt when disabled, where
  /// PyTorch returns an empty dict.
  std::optional<grad_scaler_state> state_dict() const {
    if (!options_.enabled) return std::nullopt;
    return grad_scaler_state{.scale = get_scale(),
                             .growth_factor = options_.growth_factor,
                             .backoff_factor = options_.backoff_factor,
                             .growth_interval = options_.growth_interval,
                             .growth_tracker = growth_tracker()};
  }

  /// Restores a state_dict() (GradScaler.load_state_dict): the scale, factors, interval and
  /// tracker. option_error for settings a grad_scaler_options would refuse or a negative
  /// tracker. Does nothing when disabled.
  void load_state_dict(const grad_scaler_state& s) {
    if (!options_.enabled) return;
    check_settings("grad_scaler_state", "scale", s.scale, s.growth_factor, s.backoff_factor, s.growth_interval);
    if (s.growth_tracker < 0)
      throw option_error(fmt::format("grad_scaler_state.growth_tracker must be >= 0, got {}", s.growth_tracker));
    init_scale_ = s.scale;
    if (scale_.defined()) scale_.fill_(s.scale);
    options_.growth_factor = s.growth_factor;
    options_.backoff_factor = s.backoff_factor;
    options_.growth_interval = s.growth_interval;
    init_growth_tracker_ = s.growth_tracker;
    if (growth_tracker_.defined()) growth_tracker_.fill_(s.growth_tracker);
  }

private:
  using stage = detail::amp_stage;

  // `what` names the settings ("grad_scaler_options"), `scale_name` their scale field.
  static void check_settings(const char* what, const char* scale_name, double scale, double growth_factor,
                             double backoff_factor, std::int64_t growth_interval) {
    if (!(scale > 0) || !std::isfinite(scale))
      throw option_error(fmt::format("{}.{} must be > 0 and finite, got {}", what, scale_name, scale));
    if (!(growth_factor > 1) || !std::isfinite(growth_factor))
      throw option_error(fmt::format("{}.growth_factor must be > 1 and finite, got {}", what, growth_factor));
    if (!(backoff_factor > 0 && backoff_factor < 1))
      throw option_error(fmt::format("{}.backoff_factor must be in (0, 1), got {}", what, backoff_factor));
    if (growth_interval < 1)
      throw option_error(fmt::format("{}.growth_interval must be >= 1, got {}", what, growth_interval));
  }

  void check_scaled(const char* caller) const {
    if (!scale_.defined())
      throw state_error(fmt::format("grad_scaler::{}: there is no scale yet: call scale(loss) (and backward) "
                                    "earlier in the iteration",
                                    caller));
  }

  /// A copy of `master` on `device`, one per device (PyTorch's _MultiDeviceReplicator).
  static torch::Tensor on_device(std::vector<std::pair<torch::Device, torch::Tensor>>& copies,
                                 const torch::Tensor& master, torch::Device device) {
    for (const auto& c : copies)
      if (c.first == device) return c.second;
    copies.emplace_back(device, master.to(device, master.scalar_type(), /*non_blocking=*/true, /*copy=*/true));
    return copies.back().second;
  }

  /// Unscales the gradients of `optimizer` grouped by device and dtype, as GradScaler's
  /// _unscale_grads_; returns found_inf per device.
  static std::vector<std::pair<torch::Device, torch::Tensor>> unscale_grads(torch::optim::Optimizer& optimizer,
                                                                           const torch::Tensor& inv_scale,
                                                                           const torch::Tensor& found_inf) {
    struct bucket {
      torch::Device device;
      torch::Dtype dtype;
      std::vector<torch::Tensor> grads;
    };
    std::vector<bucket> buckets;
    torch::NoGradGuard no_grad;
    std::size_t group_index = 0;
    for (const auto& group : optimizer.param_groups()) {
      std::size_t param_index = 0;
      for (const auto& p : group.params()) {
        const torch::Tensor& grad = p.grad();
        if (grad.defined()) {
          if (grad.scalar_type() == torch::kFloat16)
            throw state_error(fmt::format("grad_scaler::unscale_: parameter {} of param group {} has a float16 "
                                          "gradient; attempting to unscale float16 gradients (keep the "
                                          "parameters in float32: autocast runs the ops in float16)",
                                          param_index, group_index));
          torch::Tensor to_unscale = grad.is_sparse() ? grad._values() : grad;
          bucket* b = nullptr;
          for (auto& candidate : buckets)
            if (candidate.device == to_unscale.device() && candidate.dtype == to_unscale.scalar_type()) b = &candidate;
          if (!b) b = &buckets.emplace_back(bucket{to_unscale.device(), to_unscale.scalar_type(), {}});
          b->grads.push_back(std::move(to_unscale));
        }
        ++param_index;
      }
      ++group_index;
    }
    std::vector<std::pair<torch::Device, torch::Tensor>> found_per_device, inv_per_device;
    for (const auto& b : buckets) {
      torch::Tensor found = on_device(found_per_device, found_inf, b.device);
      const torch::Tensor inv = on_device(inv_per_device, inv_scale, b.device);
      detail::amp_unscale(b.grads, found, inv);
    }
    return found_per_device;
  }

  grad_scaler_options options_;
  double init_scale_;
  std::int64_t init_growth_tracker_ = 0;
  torch::Tensor scale_;           // float32, made by the first scale()
  torch::Tensor growth_tracker_;  // int32, beside it
  std::map<const torch::optim::Optimizer*, detail::amp_optimizer_state> optimizers_;
};

} // namespace amp
} // namespace graft
