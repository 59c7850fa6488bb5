#pragma once
// graft::clip_grad_norm / clip_grad_value: torch.nn.utils.clip_grad_norm_ and
// clip_grad_value_, over a list of tensors, every trainable parameter of a module, or each named
// group of graft's param groups with a limit of its own (the head clipped harder than the
// backbone). The same arithmetic as PyTorch 2.x: the norm of each gradient, the norm of those
// norms, a coefficient 1 / (total + 1e-6) * max_norm clamped at 1, every gradient multiplied by it.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <graft/error.hpp>
#include <graft/optim/param_groups.hpp>

namespace graft {

/// How clip_grad_norm measures: torch.nn.utils.clip_grad_norm_'s keyword arguments.
struct clip_norm_options {
  double norm_type = 2.0;           ///< the p of the p-norm; INFINITY for the largest magnitude
  bool error_if_nonfinite = false;  ///< state_error when the total norm is inf or NaN (else the gradients are scaled by it)
};

/// One named group's total gradient norm, as clip_grad_norm measured it before clipping.
struct group_norm {
  std::string group;
  torch::Tensor total_norm;  ///< a 0-dim tensor on the device of the group's first gradient
};

namespace detail::clip {

inline void check_max_norm(double max_norm, const char* caller, const std::string& group = {}) {
  if (!(max_norm > 0.0))
    throw option_error(fmt::format("{}: max_norm {} {}must be > 0 (a negative limit would flip the gradients)", caller,
                                   max_norm, group.empty() ? "" : fmt::format("of group '{}' ", group)),
                       {.key = group});
}
inline void check_norm_type(double norm_type, const char* caller) {
  if (std::isnan(norm_type)) throw option_error(fmt::format("{}: norm_type is NaN", caller));
}
inline void check_clip_value(double clip_value, const char* caller, const std::string& group = {}) {
  if (!(clip_value >= 0.0))
    throw option_error(fmt::format("{}: clip_value {} {}must be >= 0", caller, clip_value,
                                   group.empty() ? "" : fmt::format("of group '{}' ", group)),
                       {.key = group});
}

/// The defined gradients of `params`, in order.
inline std::vector<torch::Tensor> grads_of(const std::vector<torch::Tensor>& params) {
  std::vector<torch::Tensor> grads;
  grads.reserve(params.size());
  for (const auto& p : params)
    if (p.grad().defined()) grads.push_back(p.grad());
  return grads;
}

/// The total norm of `grads` (torch.nn.utils.get_total_norm): the norm of each, stacked on the
/// first one's device, and the norm of that. 0 (a float32 CPU scalar) when there are none.
inline torch::Tensor total_norm(const std::vector<torch::Tensor>& grads, const clip_norm_options& o, const char* caller,
                                const std::string& group) {
  if (grads.empty()) return torch::scalar_tensor(0.0, torch::kFloat32);
  const auto first = grads.front().device();
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(torch::linalg_vector_norm(g, o.norm_type).to(first));
  torch::Tensor total = torch::linalg_vector_norm(torch::stack(norms), o.norm_type);
  if (o.error_if_nonfinite && !total.isfinite().item<bool>())
    throw state_error(fmt::format("{}: the total norm of order {} of the gradients{} is {}, so they cannot be clipped "
                                  "(error_if_nonfinite; with it off they would be scaled by it)",
                                  caller, o.norm_type, group.empty() ? "" : fmt::format(" of group '{}'", group),
                                  total.item<double>()),
                      {.key = group});
  return total;
}

/// A measured group: its gradients and their total norm.
struct measured {
  std::vector<torch::Tensor> grads;
  torch::Tensor total;
};

/// The gradients of `params` and their total norm, checked; nothing changes yet.
inline measured measure(const std::vector<torch::Tensor>& params, double max_norm, const clip_norm_options& o,
                        const char* caller, const std::string& group) {
  check_max_norm(max_norm, caller, group);
  check_norm_type(o.norm_type, caller);
  torch::NoGradGuard no_grad;
  measured m{grads_of(params), {}};
  m.total = total_norm(m.grads, o, caller, group);
  return m;
}

/// Scales the measured gradients to at most `max_norm`: max_norm / (total + 1e-6), which Python
/// evaluates as a reciprocal times max_norm, clamped at 1.
inline void scale(const measured& m, double max_norm) {
  if (m.grads.empty()) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor coef = ((m.total + 1e-6).reciprocal() * max_norm).clamp_max(1.0);
  for (const auto& g : m.grads) g.mul_(coef.to(g.device()));
}

/// clip_grad_norm over `params`, `group` naming them in errors.
inline torch::Tensor clip_norm(const std::vector<torch::Tensor>& params, double max_norm, const clip_norm_options& o,
                               const char* caller, const std::string& group) {
  measured m = measure(params, max_norm, o, caller, group);
  scale(m, max_norm);
  return m.total;
}

inline void clip_value(const std::vector<torch::Tensor>& params, double clip_value, const char* caller,
                       const std::string& group) {
  check_clip_value(clip_value, caller, group);
  torch::NoGradGuard no_grad;
  for (const auto& g : grads_of(params)) {
    g.clamp_min_(-clip_value);
    g.clamp_max_(clip_value);
  }
}

/// The parameters of `module` that require a gradient, tied ones once.
inline std::vector<torch::Tensor> trainable(const torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (const auto& p : module.parameters(/*recurse=*/true)) {
    if (!p.requires_grad()) continue;
    bool seen = false;
    for (const auto& q : out) seen = seen || q.unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
    if (!seen) out.push_back(p);
  }
  return out;
}

} // namespace detail::clip

/// Scales the gradients of `params` (those that have one) so that their total `norm_type`-norm
/// is at most `max_norm`, and returns that total norm as it was: torch.nn.utils.clip_grad_norm_.
/// option_error for max_norm <= 0 or a NaN norm_type; state_error for a non-finite total norm
/// with error_if_nonfinite. After grad_scaler::unscale_, it clips the true gradients.
inline torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm,
                                    clip_norm_options options = {}) {
  return detail::clip::clip_norm(params, max_norm, options, "clip_grad_norm", {});
}

/// The same over every parameter of `module` that requires a gradient (tied ones once).
inline torch::Tensor clip_grad_norm(const torch::nn::Module& module, double max_norm, clip_norm_options options = {}) {
  return detail::clip::clip_norm(detail::clip::trainable(module), max_norm, options, "clip_grad_norm", {});
}

/// Clips each group named in `max_norms` ({{"head", 1.0}, {"backbone", 5.0}}) on its own, as
/// clip_grad_norm_ over that group's parameters would; groups not named are left alone. Returns
/// the named groups' total norms, in the groups' order. key_error for a name that is not a group
/// (nothing is clipped then), option_error for a limit <= 0.
inline std::vector<group_norm> clip_grad_norm(const named_param_groups& groups, const std::map<std::string, double>& max_norms,
                                              clip_norm_options options = {}) {
  std::vector<std::size_t> order;
  for (const auto& [name, limit] : max_norms) {
    order.push_back(groups.index_of(name));
    detail::clip::check_max_norm(limit, "clip_grad_norm", name);
  }
  std::sort(order.begin(), order.end());
  // Every group measured (and error_if_nonfinite checked) before any gradient changes.
  std::vector<detail::clip::measured> measured;
  for (std::size_t i : order) {
    const std::string& name = groups.names()[i];
    measured.push_back(detail::clip::measure(groups.groups()[i].params(), max_norms.at(name), options, "clip_grad_norm", name));
  }
  std::vector<group_norm> out;
  for (std::size_t k = 0; k < order.size(); ++k) {
    const std::string& name = groups.names()[order[k]];
    detail::clip::scale(measured[k], max_norms.at(name));
    out.push_back({name, measured[k].total});
  }
  return out;
}

/// Clamps every gradient of `params` to [-clip_value, clip_value]: torch.nn.utils.clip_grad_value_.
/// option_error for a negative clip_value.
inline void clip_grad_value(const std::vector<torch::Tensor>& params, double clip_value) {
  detail::clip::clip_value(params, clip_value, "clip_grad_value", {});
}

/// The same over every parameter of `module` that requires a gradient.
inline void clip_grad_value(const torch::nn::Module& module, double clip_value) {
  detail::clip::clip_value(detail::clip::trainable(module), clip_value, "clip_grad_value", {});
}

/// Clamps each group named in `clip_values` to its own limit; groups not named are left alone.
/// key_error for a name that is not a group (nothing is clamped then).
inline void clip_grad_value(const named_param_groups& groups, const std::map<std::string, double>& clip_values) {
  std::vector<std::size_t> order;
  for (const auto& [name, limit] : clip_values) {
    order.push_back(groups.index_of(name));
    detail::clip::check_clip_value(limit, "clip_grad_value", name);
  }
  for (std::size_t i : order) {
    const std::string& name = groups.names()[i];
    detail::clip::clip_value(groups.groups()[i].params(), clip_values.at(name), "clip_grad_value", name);
  }
}

} // namespace graft
