#pragma once
// Linear factor ramps, and a linear warm-up in front of any other schedule.

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include <graft/optim/schedules/concepts.hpp>

namespace graft {

/// lr = base * factor, the factor moving linearly from start_factor to end_factor over total_iters
/// epochs, then held (torch.optim.lr_scheduler.LinearLR).
struct linear_lr {
  double start_factor = 1.0 / 3; ///< factor at epoch 0, in (0, 1]
  double end_factor = 1.0;       ///< factor from total_iters on, in [0, 1]
  std::int64_t total_iters = 5;  ///< epochs of the ramp, >= 1

  void validate() const {
    // PyTorch allows 0, but its chainable form then stays at lr 0 forever.
    detail::sched::require_fraction("linear_lr.start_factor", start_factor);
    detail::sched::require_between("linear_lr.end_factor", end_factor, 0, 1);
    detail::sched::require_count("linear_lr.total_iters", total_iters);
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    // Same operation order as PyTorch's closed form, so values agree to the last bits.
    auto done = static_cast<double>(std::min(total_iters, epoch));
    return g.lr * (start_factor + (end_factor - start_factor) * done / static_cast<double>(total_iters));
  }
  static std::string name() { return "linear_lr"; }
};

/// The ramp of graft::warmup: from base * start_factor up to base over `steps` epochs.
struct linear_warmup {
  double start_factor = 0.1; ///< factor at epoch 0, in (0, 1]
  std::int64_t steps = 0;    ///< epochs of warm-up; the next schedule starts at epoch `steps`

  void validate() const {
    detail::sched::require_fraction("linear_warmup.start_factor", start_factor);
    detail::sched::require_count("linear_warmup.steps", steps);
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    return linear_lr{start_factor, 1.0, steps}.lr(epoch, g);
  }
  static std::string name() { return "linear_warmup"; }
};

/// A linear warm-up, then `then` restarted at its epoch 0 (SequentialLR([LinearLR, then], [steps])).
// Not for momentum schedules: one_cycle has its own warm-up phase (pct_start) and owns momentum.
template <lr_schedule S>
  requires(!momentum_schedule<S>)
struct with_warmup {
  linear_warmup ramp; ///< the warm-up
  S then;             ///< the schedule that follows, seeing epochs from 0

  void validate() const {
    ramp.validate();
    then.validate();
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    return epoch < ramp.steps ? ramp.lr(epoch, g) : then.lr(epoch - ramp.steps, g);
  }
  void check_groups(std::size_t groups) const {
    if constexpr (group_checked_schedule<S>) then.check_groups(groups);
  }
  std::string name() const { return "warmup(" + std::string(then.name()) + ")"; }
};

/// Puts a linear warm-up in front of `then`.
template <lr_schedule S>
  requires(!momentum_schedule<S>)
with_warmup<S> warmup(linear_warmup ramp, S then) {
  return {ramp, std::move(then)};
}

} // namespace graft
