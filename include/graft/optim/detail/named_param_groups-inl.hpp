#pragma once
// The definitions of optim/detail/named_param_groups.hpp.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <c10/util/Type.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/optim/detail/named_param_groups.hpp>

namespace graft {

GRAFT_FUNC named_param_groups::named_param_groups(const named_param_groups&) = default;
GRAFT_FUNC named_param_groups::named_param_groups(named_param_groups&&) noexcept = default;
GRAFT_FUNC named_param_groups& named_param_groups::operator=(named_param_groups&&) noexcept = default;
GRAFT_FUNC named_param_groups::~named_param_groups() = default;

GRAFT_FUNC void named_param_groups::install(torch::optim::Optimizer& opt) const {
  auto& installed = opt.param_groups();
  installed.clear();
  installed.reserve(groups_.size());
  for (auto& g : groups_) installed.push_back(g);
}

GRAFT_FUNC void named_param_groups::throw_other_options(const std::string& wanted) const {
  if (!defaults_) throw state_error("make_optimizer: these param groups were not made by build()");
  const torch::optim::OptimizerOptions& built = *defaults_;
  throw option_error(fmt::format("make_optimizer: the groups were built with {}, not {}: build() and the optimizer "
                                 "take the same options type",
                                 c10::demangle(typeid(built).name()), wanted));
}

GRAFT_FUNC void named_param_groups::throw_options_differ() {
  throw option_error(
      "make_optimizer: its options differ from those given to build(); the groups were made from build()'s, and "
      "the optimizer's defaults, from which a group added later (gradual unfreezing, add_param_group) starts, would "
      "be these: give the options once, to build(), and call make_optimizer<Opt>()");
}

GRAFT_FUNC std::size_t named_param_groups::index_of(std::string_view name) const {
  for (std::size_t i = 0; i < names_.size(); ++i)
    if (names_[i] == name) return i;
  throw key_error(fmt::format("no param group named '{}'; the groups are '{}'", name, graft::detail::join(names_, "', '")));
}

GRAFT_FUNC void named_param_groups::add_group(std::string name, double lr, std::optional<double> weight_decay,
                                              std::vector<torch::Tensor> members,
                                              std::unique_ptr<torch::optim::OptimizerOptions> options) {
  for (auto& existing : names_)
    if (existing == name) throw option_error(fmt::format("two param groups are named '{}'", name));
  group_info info{name, lr, weight_decay, members.size(), 0};
  for (auto& p : members) info.elements += p.numel();
  names_.push_back(std::move(name));
  info_.push_back(std::move(info));
  groups_.emplace_back(std::move(members), std::move(options));
}

} // namespace graft
