#pragma once
// graft::lr_scheduler: attaches a schedule description to any libtorch optimizer and sets every
// param group's lr (through OptimizerOptions::set_lr) from that group's own base lr.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/detail/training_state.hpp>
#include <graft/optim/schedules/concepts.hpp>

namespace graft {
namespace detail {

/// The schedule behind an lr_scheduler, with its type erased.
struct any_schedule {
  virtual ~any_schedule() = default;
  virtual double lr(std::int64_t epoch, const group_base& g) const = 0;
  virtual std::optional<double> momentum(std::int64_t epoch, const group_base& g) const = 0;
  virtual void check_groups(std::size_t groups) const = 0;
  virtual std::string name() const = 0;
};

template <lr_schedule S>
struct schedule_model final : any_schedule {
  S s;
  explicit schedule_model(S x) : s(std::move(x)) {}
  double lr(std::int64_t e, const group_base& g) const override { return s.lr(e, g); }
  std::optional<double> momentum(std::int64_t e, const group_base& g) const override {
    if constexpr (momentum_schedule<S>) return s.momentum(e, g);
    else return std::nullopt;
  }
  void check_groups(std::size_t n) const override {
    if constexpr (group_checked_schedule<S>) s.check_groups(n);
  }
  std::string name() const override { return s.name(); }
};

/// Where a group keeps the momentum a one-cycle drives (PyTorch's 'momentum' or betas[0]), or null.
GRAFT_FUNC double* momentum_slot(torch::optim::OptimizerOptions& o);

} // namespace detail

/// Drives every param group of a libtorch optimizer by a schedule; attaching sets epoch 0's lrs,
/// each step() moves one epoch (PyTorch's scheduler.step()). Groups added to the optimizer later
/// are picked up by the next step() (or at once by sync()), their lr then becoming their base lr.
class lr_scheduler {
public:
  /// Attaches `schedule`; each group's current lr becomes its base lr. Throws option_error on bad settings.
  template <lr_schedule S>
  lr_scheduler(torch::optim::Optimizer& optimizer, S schedule) : optimizer_(&optimizer) {
    schedule.validate();
    schedule_ = std::make_unique<detail::schedule_model<S>>(std::move(schedule));
    apply(0, {});
  }

  /// Moves to the next epoch and sets every group's lr (and momentum, for one_cycle). Call it
  /// after the optimizer's step: it also checks that no layer with frozen statistics was put
  /// back in training mode (state_error naming it: module->train() instead of graft::train),
  /// and brings LoRA adapters' merged weights up to date with the step (lora/adapters.hpp).
  void step() {
    detail::check_after_optimizer_step("lr_scheduler::step");
    apply(epoch_ + 1, base_lrs_);
  }
  /// Takes up groups added since the last step now, at the current epoch (their lr becomes
  /// their base lr), so a group added mid-epoch trains at its scheduled lr at once.
  void sync() { apply(epoch_, base_lrs_); }

  /// The epoch whose lrs are set: 0 after attaching, +1 per step() (PyTorch's last_epoch).
  std::int64_t epoch() const noexcept { return epoch_; }
  /// The lrs set by the last step (or by attaching), one per group (PyTorch's get_last_lr()).
  const std::vector<double>& last_lrs() const noexcept { return last_lrs_; }
  /// Each known group's base lr (PyTorch's base_lrs / initial_lr).
  const std::vector<double>& base_lrs() const noexcept { return base_lrs_; }
  /// What the known groups' lrs would be at `epoch`, without setting them.
  std::vector<double> lrs_at(std::int64_t epoch) const {
    std::vector<double> lrs;
    for (std::size_t i = 0; i < base_lrs_.size(); ++i) lrs.push_back(schedule_->lr(epoch, {i, base_lrs_[i]}));
    return lrs;
  }
  /// What the groups' lrs would be at `epoch` from the base lrs `bases` (one per group).
  std::vector<double> lrs_at(std::int64_t epoch, const std::vector<double>& bases) const {
    std::vector<double> lrs;
    for (std::size_t i = 0; i < bases.size(); ++i) lrs.push_back(schedule_->lr(epoch, {i, bases[i]}));
    return lrs;
  }
  /// Continues a run that another program (or a Python scheduler) started: the schedule at
  /// `epoch` (PyTorch's last_epoch) from these base lrs, one per group, whose lrs (and momenta,
  /// for one_cycle) it sets. Groups beyond them (added since that run's last step) keep their lr
  /// and are taken up at the next step(), as they would have been. state_error for more base
  /// lrs than groups.
  void resume(std::int64_t epoch, std::vector<double> base_lrs) { apply(epoch, std::move(base_lrs), false); }
  /// The optimizer whose groups it drives.
  const torch::optim::Optimizer& optimizer() const noexcept { return *optimizer_; }
  /// The schedule's name, e.g. "cosine_annealing" or "warmup(step_lr)".
  std::string schedule_name() const { return schedule_->name(); }

  /// Writes the epoch, base lrs and schedule name (not the schedule's settings: they are code).
  void save(torch::serialize::OutputArchive& archive) const {
    archive.write("schedule", c10::IValue(schedule_->name()));
    archive.write("epoch", c10::IValue(epoch_));
    archive.write("base_lrs", torch::tensor(base_lrs_, torch::kFloat64));
  }
  /// Restores epoch and base lrs and sets the optimizer's lrs for that epoch, so training resumes
  /// exactly. Throws key_error for a missing entry, state_error for another schedule or more groups.
  GRAFT_FUNC void load(torch::serialize::InputArchive& archive);

  /// `archive << sched`, so torch::save(sched, path) works.
  friend torch::serialize::OutputArchive& operator<<(torch::serialize::OutputArchive& a,
                                                     const lr_scheduler& s) {
    s.save(a);
    return a;
  }
  /// `archive >> sched`, so torch::load(sched, path) works.
  friend torch::serialize::InputArchive& operator>>(torch::serialize::InputArchive& a, lr_scheduler& s) {
    s.load(a);
    return a;
  }

private:
  // Computes everything for `epoch` first and commits only if nothing threw.
  // take_up_new_groups: groups beyond `bases` join with their current lr as base (else they
  // are left as they are).
  GRAFT_FUNC void apply(std::int64_t epoch, std::vector<double> bases, bool take_up_new_groups = true);

  torch::optim::Optimizer* optimizer_;
  std::unique_ptr<detail::any_schedule> schedule_;
  std::int64_t epoch_ = 0;
  std::vector<double> base_lrs_;
  std::vector<double> last_lrs_;
};

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/optim/schedules/scheduler-inl.hpp>
#endif
