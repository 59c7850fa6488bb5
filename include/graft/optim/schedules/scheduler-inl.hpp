#pragma once
// The definitions of optim/schedules/scheduler.hpp: setting the lrs (and momenta) of an epoch,
// and restoring a saved scheduler.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>
#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/optim/schedules/scheduler.hpp>

namespace graft {
namespace detail {

GRAFT_FUNC double* momentum_slot(torch::optim::OptimizerOptions& o) {
  using namespace torch::optim;
  if (auto* p = dynamic_cast<SGDOptions*>(&o)) return &p->momentum();
  if (auto* p = dynamic_cast<RMSpropOptions*>(&o)) return &p->momentum();
  if (auto* p = dynamic_cast<AdamOptions*>(&o)) return &std::get<0>(p->betas());
  if (auto* p = dynamic_cast<AdamWOptions*>(&o)) return &std::get<0>(p->betas());
  return nullptr;
}

} // namespace detail

GRAFT_FUNC void lr_scheduler::apply(std::int64_t epoch, std::vector<double> bases, bool take_up_new_groups) {
  auto& groups = optimizer_->param_groups();
  if (groups.size() < bases.size())
    throw state_error(fmt::format("lr_scheduler: the optimizer has {} param groups, fewer than the {} "
                                  "the scheduler drives", groups.size(), bases.size()));
  if (take_up_new_groups)
    for (auto i = bases.size(); i < groups.size(); ++i) bases.push_back(groups[i].options().get_lr());
  const std::size_t n = bases.size();
  schedule_->check_groups(n);
  std::vector<double> lrs;
  std::vector<std::pair<double*, double>> momenta;
  for (std::size_t i = 0; i < n; ++i) {
    lrs.push_back(schedule_->lr(epoch, {i, bases[i]}));
    if (auto m = schedule_->momentum(epoch, {i, bases[i]})) {
      auto* slot = detail::momentum_slot(groups[i].options());
      if (!slot)
        throw option_error(fmt::format(
            "{}.cycle_momentum needs an optimizer with momentum or betas (SGD, RMSprop, Adam, "
            "AdamW), but param group {} has neither; set .cycle_momentum = false",
            schedule_->name(), i));
      momenta.emplace_back(slot, *m);
    }
  }
  for (std::size_t i = 0; i < n; ++i) groups[i].options().set_lr(lrs[i]);
  for (auto [slot, m] : momenta) *slot = m;
  epoch_ = epoch;
  base_lrs_ = std::move(bases);
  last_lrs_ = std::move(lrs);
}

GRAFT_FUNC void lr_scheduler::load(torch::serialize::InputArchive& archive) {
  c10::IValue name, epoch;
  torch::Tensor bases;
  if (!archive.try_read("schedule", name) || !archive.try_read("epoch", epoch) ||
      !archive.try_read("base_lrs", bases))
    throw key_error("lr_scheduler.load: the archive lacks 'schedule', 'epoch' or 'base_lrs'");
  if (name.toStringRef() != schedule_->name())
    throw state_error(fmt::format("lr_scheduler.load: the archive holds a '{}' schedule, this scheduler "
                                  "runs '{}'", name.toStringRef(), schedule_->name()));
  bases = bases.to(torch::kFloat64).contiguous();
  std::vector<double> restored(bases.data_ptr<double>(), bases.data_ptr<double>() + bases.numel());
  apply(epoch.toInt(), std::move(restored), false);
}

} // namespace graft
