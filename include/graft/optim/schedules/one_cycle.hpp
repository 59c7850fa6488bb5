#pragma once
// The one-cycle policy: lr up to max_lr and down far below it, momentum the opposite way.

#include <array>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <graft/optim/schedules/concepts.hpp>

namespace graft {

/// How one_cycle moves between two values within a phase.
enum class anneal {
  cos,   ///< half a cosine wave
  linear ///< a straight line
};

/// torch.optim.lr_scheduler.OneCycleLR: valid for epochs 0..total_steps (step() once per batch).
/// max_lr empty means each group's own lr is its peak, so relative group lrs survive the cycle.
struct one_cycle {
  std::int64_t total_steps = 0;       ///< steps in the cycle, required (epochs * steps_per_epoch)
  std::vector<double> max_lr = {};    ///< peak lr: empty = each group's base, one value, or one per group
  double pct_start = 0.3;             ///< share of the steps spent rising, in [0, 1]
  anneal anneal_strategy = anneal::cos; ///< shape of every phase
  bool cycle_momentum = true;         ///< also drive momentum (SGD, RMSprop) or beta1 (Adam, AdamW)
  double base_momentum = 0.85;        ///< momentum at the lr peak
  double max_momentum = 0.95;         ///< momentum at the start and the end
  double div_factor = 25;             ///< initial lr = max_lr / div_factor
  double final_div_factor = 1e4;      ///< final lr = initial lr / final_div_factor
  bool three_phase = false;           ///< rise, fall back to the initial lr, then anneal to the final

  void validate() const {
    detail::sched::require_count("one_cycle.total_steps", total_steps);
    detail::sched::require_between("one_cycle.pct_start", pct_start, 0, 1);
    detail::sched::require_positive("one_cycle.div_factor", div_factor);
    detail::sched::require_positive("one_cycle.final_div_factor", final_div_factor);
    for (double m : max_lr) detail::sched::require_positive("one_cycle.max_lr", m);
    // A phase of length 0 makes PyTorch divide by zero (ZeroDivisionError) when it is reached.
    auto ends = phase_ends();
    double start = 0;
    for (int i = 0; i < phases(); start = ends[i++])
      if (ends[i] == start)
        throw option_error(fmt::format(
            "one_cycle.total_steps = {} is too small for pct_start = {}: phase {} has no steps",
            total_steps, pct_start, i + 1));
  }
  void check_groups(std::size_t groups) const {
    if (max_lr.size() > 1 && max_lr.size() != groups)
      throw option_error(fmt::format("one_cycle.max_lr has {} values but the optimizer has {} param groups",
                                     max_lr.size(), groups));
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    if (epoch > total_steps)
      throw option_error(fmt::format(
          "one_cycle.total_steps = {} exceeded: cannot step to {} (PyTorch raises here too)",
          total_steps, epoch));
    double peak = max_lr.empty() ? g.lr : max_lr.size() == 1 ? max_lr[0] : max_lr.at(g.index);
    double initial = peak / div_factor, final_lr = initial / final_div_factor;
    std::array<double, 4> points = three_phase ? std::array{initial, peak, initial, final_lr}
                                               : std::array{initial, peak, final_lr, 0.0};
    return interpolate(epoch, points);
  }
  std::optional<double> momentum(std::int64_t epoch, const group_base&) const {
    if (!cycle_momentum) return std::nullopt;
    std::array<double, 4> points = three_phase
        ? std::array{max_momentum, base_momentum, max_momentum, max_momentum}
        : std::array{max_momentum, base_momentum, max_momentum, 0.0};
    return interpolate(epoch, points);
  }
  static std::string name() { return "one_cycle"; }

private:
  int phases() const { return three_phase ? 3 : 2; }
  // Phase end steps as PyTorch computes them (floats, possibly negative for tiny total_steps).
  std::array<double, 3> phase_ends() const {
    auto total = static_cast<double>(total_steps);
    if (three_phase) return {pct_start * total - 1, 2 * pct_start * total - 2, total - 1};
    return {pct_start * total - 1, total - 1, 0};
  }
  // Walks the phases like OneCycleLR.get_lr; points[i] -> points[i + 1] is phase i.
  double interpolate(std::int64_t epoch, const std::array<double, 4>& points) const {
    auto ends = phase_ends();
    auto step = static_cast<double>(epoch);
    double start = 0;
    for (int i = 0; i < phases(); start = ends[i++]) {
      if (step <= ends[i] || i == phases() - 1) {
        double pct = (step - start) / (ends[i] - start);
        double from = points[i], to = points[i + 1];
        if (anneal_strategy == anneal::linear) return (to - from) * pct + from;
        return to + (from - to) / 2.0 * (std::cos(std::numbers::pi * pct) + 1);
      }
    }
    return points[phases()]; // unreachable: the last phase always matches
  }
};

} // namespace graft
