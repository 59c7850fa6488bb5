#pragma once
// Multiplicative decays: step, multi-step, exponential and constant factors of each group's base lr.
// Each lr() is PyTorch's closed form (_get_closed_form_lr), equal to its chainable form.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <graft/optim/schedules/concepts.hpp>

namespace graft {

/// lr = base * gamma^(epoch / step_size) (torch.optim.lr_scheduler.StepLR). step_size is required.
struct step_lr {
  std::int64_t step_size = 0; ///< epochs between decays, >= 1
  double gamma = 0.1;         ///< factor applied at each decay, > 0

  void validate() const {
    detail::sched::require_count("step_lr.step_size", step_size);
    detail::sched::require_positive("step_lr.gamma", gamma);
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    return g.lr * std::pow(gamma, static_cast<double>(epoch / step_size));
  }
  static std::string name() { return "step_lr"; }
};

/// lr = base * gamma^(milestones passed) (MultiStepLR); a repeated milestone decays once per entry.
struct multi_step_lr {
  std::vector<std::int64_t> milestones = {}; ///< epochs at which to decay, in any order
  double gamma = 0.1;                        ///< factor applied at each milestone, > 0

  void validate() const { detail::sched::require_positive("multi_step_lr.gamma", gamma); }
  double lr(std::int64_t epoch, const group_base& g) const {
    auto passed = std::count_if(milestones.begin(), milestones.end(),
                                [&](std::int64_t m) { return m <= epoch; });
    return g.lr * std::pow(gamma, static_cast<double>(passed));
  }
  static std::string name() { return "multi_step_lr"; }
};

/// lr = base * gamma^epoch (ExponentialLR). gamma is required.
struct exponential_lr {
  double gamma = 0; ///< factor applied every epoch, > 0

  void validate() const { detail::sched::require_positive("exponential_lr.gamma", gamma); }
  double lr(std::int64_t epoch, const group_base& g) const {
    return g.lr * std::pow(gamma, static_cast<double>(epoch));
  }
  static std::string name() { return "exponential_lr"; }
};

/// lr = base * factor before total_iters, base from then on (ConstantLR).
struct constant_lr {
  double factor = 1.0 / 3;     ///< multiplier for the first epochs, in (0, 1]
  std::int64_t total_iters = 5; ///< epochs at the reduced lr, >= 1

  void validate() const {
    // PyTorch accepts 0 but then divides by it when restoring the lr.
    detail::sched::require_fraction("constant_lr.factor", factor);
    detail::sched::require_count("constant_lr.total_iters", total_iters);
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    return g.lr * (factor + (epoch >= total_iters ? 1.0 - factor : 0.0));
  }
  static std::string name() { return "constant_lr"; }
};

} // namespace graft
