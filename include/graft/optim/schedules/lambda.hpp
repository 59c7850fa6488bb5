#pragma once
// A user function of the epoch scales each group's base lr.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <graft/optim/schedules/concepts.hpp>

namespace graft {

/// lr = base * factor(epoch) (torch.optim.lr_scheduler.LambdaLR); per_group[i] replaces factor for
/// group i, as PyTorch's list of lambdas does. Groups past per_group use factor.
struct lambda_lr {
  std::function<double(std::int64_t)> factor = {};                ///< the multiplier for every group
  std::vector<std::function<double(std::int64_t)>> per_group = {}; ///< multipliers by group index

  void validate() const {
    if (!factor && per_group.empty())
      throw option_error("lambda_lr needs .factor or .per_group, got neither");
    for (std::size_t i = 0; i < per_group.size(); ++i)
      if (!per_group[i]) throw option_error(fmt::format("lambda_lr.per_group[{}] is empty", i));
  }
  void check_groups(std::size_t groups) const {
    // Like PyTorch, a list must match the groups; .factor covers groups added later.
    if (per_group.size() > groups || (!factor && per_group.size() != groups))
      throw option_error(fmt::format(
          "lambda_lr.per_group has {} functions but the optimizer has {} param groups{}",
          per_group.size(), groups, factor ? "" : " (set .factor for groups beyond the list)"));
  }
  double lr(std::int64_t epoch, const group_base& g) const {
    const auto& f = g.index < per_group.size() ? per_group[g.index] : factor;
    return g.lr * f(epoch);
  }
  static std::string name() { return "lambda_lr"; }
};

} // namespace graft
