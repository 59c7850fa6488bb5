#pragma once
// Cosine annealing from each group's base lr down to eta_min.

#include <cmath>
#include <cstdint>
#include <numbers>
#include <string>

#include <graft/optim/schedules/concepts.hpp>

namespace graft {

/// lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / t_max)) / 2 (CosineAnnealingLR); past
/// t_max it rises again, as PyTorch's does. t_max is required.
struct cosine_annealing {
  std::int64_t t_max = 0; ///< epochs from base lr down to eta_min, >= 1
  double eta_min = 0.0;   ///< the lowest lr, >= 0 (absolute, the same for every group)

  void validate() const {
    detail::sched::require_count("cosine_annealing.t_max", t_max);
    detail::sched::require_non_negative("cosine_annealing.eta_min", eta_min);
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    // Same operation order as PyTorch's closed form.
    auto angle = std::numbers::pi * static_cast<double>(epoch) / static_cast<double>(t_max);
    return eta_min + (g.lr - eta_min) * (1 + std::cos(angle)) / 2;
  }
  static std::string name() { return "cosine_annealing"; }
};

} // namespace graft
