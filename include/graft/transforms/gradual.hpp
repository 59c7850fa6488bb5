#pragma once
// Gradual unfreezing (ULMFiT): at given epochs, unfreeze more of the model and add a param group
// for it to the live optimizer. The schedule remembers which stages it applied, so a resumed run
// re-creates the same groups before the optimizer's state is loaded.
//
// A group is added with lr = optimizer defaults' lr * lr_scale, the base lr; graft::lr_scheduler
// notices it at its next step() and from then on gives it the schedule's value for that epoch.

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <graft/detail/report_formatter.hpp>
#include <graft/detail/pointer_set.hpp>
#include <graft/error.hpp>
#include <graft/select/select.hpp>
#include <graft/transforms/freeze.hpp>

namespace graft {

/// One stage of gradual unfreezing as it was applied.
struct unfreeze_stage_result {
  std::string name;              ///< the stage's (and its param group's) name
  std::int64_t epoch;            ///< the epoch it was scheduled for
  freeze_result unfrozen;        ///< what unfreeze() changed
  std::size_t group_tensors = 0; ///< tensors added to the optimizer (0: all were already in it)
  double lr = 0;                 ///< the added group's base lr
};

/// A schedule of (epoch -> selector, lr_scale): at each stage's epoch, unfreezes what the
/// selector picks and adds a param group for the parameters the optimizer did not have yet.
///   graft::gradual_unfreezing stages(*net);
///   stages.at(2, "layer4", "layer4.**"_glob, 0.1).at(4, "layer3", "layer3.**"_glob, 0.01);
///   for (epoch ...) { stages.step(opt, epoch); train(); sched.step(); }
class gradual_unfreezing {
public:
  explicit gradual_unfreezing(torch::nn::Module& module) : module_(&module) {}

  /// Adds a stage: at `epoch`, unfreeze what `sel` picks into a group `name` with lr =
  /// defaults' lr * lr_scale. `sel` is checked now: selecting nothing throws selection_error.
  template <selector S>
  gradual_unfreezing& at(std::int64_t epoch, std::string name, S sel, double lr_scale = 1.0) {
    (void)select(*module_, sel);  // fail at declaration, not epochs later
    for (auto& s : stages_)
      if (s.name == name) throw option_error(fmt::format("gradual_unfreezing: two stages are named '{}'", name));
    stages_.push_back({epoch, std::move(name), lr_scale, false,
                       [sel](torch::nn::Module& m) { return unfreeze(m, sel); },
                       [sel](torch::nn::Module& m, std::vector<torch::Tensor>& out) {
                         detail::for_each_match(m, sel, {}, [&](const tensor_view& t) { out.push_back(t.tensor()); });
                       }});
    return *this;
  }

  /// Applies every stage due by `epoch` (stage epoch <= epoch) not applied yet, in declaration
  /// order; returns what each did. Call it at the start of every epoch.
  std::vector<unfreeze_stage_result> step(torch::optim::Optimizer& opt, std::int64_t epoch) {
    std::vector<unfreeze_stage_result> done;
    for (auto& s : stages_)
      if (!s.applied && s.epoch <= epoch) done.push_back(apply(s, opt));
    return done;
  }

  /// Stage names, in declaration order.
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (auto& s : stages_) n.push_back(s.name);
    return n;
  }
  /// Whether each stage was applied, in declaration order.
  std::vector<bool> applied() const {
    std::vector<bool> a;
    for (auto& s : stages_) a.push_back(s.applied);
    return a;
  }

  /// Writes which stages were applied, by name.
  void save(torch::serialize::OutputArchive& archive) const {
    c10::List<std::string> applied;
    for (auto& s : stages_)
      if (s.applied) applied.push_back(s.name);
    archive.write("gradual_unfreezing.applied", c10::IValue(applied));
  }

  /// Re-applies the stages a saved run had applied (unfreezing and adding their groups to
  /// `opt`, in declaration order), so the optimizer's own state can be loaded next. Throws
  /// key_error for a missing entry or a stage this schedule does not declare.
  void load(torch::serialize::InputArchive& archive, torch::optim::Optimizer& opt) {
    c10::IValue v;
    if (!archive.try_read("gradual_unfreezing.applied", v))
      throw key_error("gradual_unfreezing.load: the archive has no 'gradual_unfreezing.applied' entry");
    std::vector<std::string> saved;
    for (const c10::IValue& n : v.toListRef()) saved.push_back(n.toStringRef());
    restore(saved, opt);
  }

  /// The names of the stages applied so far, in declaration order.
  std::vector<std::string> applied_names() const {
    std::vector<std::string> n;
    for (auto& s : stages_)
      if (s.applied) n.push_back(s.name);
    return n;
  }

  /// Re-applies the stages named in `applied` that are not applied yet, in declaration order
  /// (a saved run's, from applied_names()). key_error, before anything changes, for a name this
  /// schedule does not declare.
  void restore(const std::vector<std::string>& applied, torch::optim::Optimizer& opt) {
    check_declared(applied);
    for (auto& s : stages_)
      if (!s.applied && std::find(applied.begin(), applied.end(), s.name) != applied.end()) apply(s, opt);
  }

  /// The param groups restore(applied, opt) would add to `opt`, one per stage that adds tensors,
  /// in order, without changing anything: to check a saved optimizer state against them first.
  std::vector<std::vector<torch::Tensor>> groups_to_restore(const std::vector<std::string>& applied,
                                                           const torch::optim::Optimizer& opt) const {
    check_declared(applied);
    detail::pointer_set in_optimizer;
    for (auto& g : opt.param_groups())
      for (auto& p : g.params()) in_optimizer.insert(p.unsafeGetTensorImpl());
    std::vector<std::vector<torch::Tensor>> groups;
    for (auto& s : stages_) {
      if (s.applied || std::find(applied.begin(), applied.end(), s.name) == applied.end()) continue;
      std::vector<torch::Tensor> selected, params;
      s.collect(*module_, selected);
      for (auto& p : selected)
        if (in_optimizer.insert(p.unsafeGetTensorImpl())) params.push_back(p);
      if (!params.empty()) groups.push_back(std::move(params));
    }
    return groups;
  }

private:
  void check_declared(const std::vector<std::string>& applied) const {
    for (auto& n : applied) {
      bool known = false;
      for (auto& s : stages_) known = known || s.name == n;
      if (!known)
        throw key_error(fmt::format("gradual_unfreezing: the saved run applied stage '{}', which is not declared", n),
                        {.key = n});
    }
  }

  struct stage {
    std::int64_t epoch;
    std::string name;
    double lr_scale;
    bool applied;
    std::function<freeze_result(torch::nn::Module&)> unfreeze;
    std::function<void(torch::nn::Module&, std::vector<torch::Tensor>&)> collect;
  };

  unfreeze_stage_result apply(stage& s, torch::optim::Optimizer& opt) {
    unfreeze_stage_result r{s.name, s.epoch, s.unfreeze(*module_)};
    detail::pointer_set in_optimizer;
    for (auto& g : opt.param_groups())
      for (auto& p : g.params()) in_optimizer.insert(p.unsafeGetTensorImpl());
    std::vector<torch::Tensor> selected, params;
    s.collect(*module_, selected);
    for (auto& p : selected)  // only what the optimizer does not have yet
      if (in_optimizer.insert(p.unsafeGetTensorImpl())) params.push_back(p);
    r.lr = opt.defaults().get_lr() * s.lr_scale;
    r.group_tensors = params.size();
    if (!params.empty()) {
      auto options = opt.defaults().clone();
      options->set_lr(r.lr);
      // Set the options after adding: libtorch 2.x's add_param_group replaces a group option
      // that equals its options class's default (an lr of 1e-3, say) with the optimizer's.
      auto kept = options->clone();
      opt.add_param_group(torch::optim::OptimizerParamGroup(std::move(params), std::move(options)));
      opt.param_groups().back().set_options(std::move(kept));
    }
    s.applied = true;
    return r;
  }

  torch::nn::Module* module_;
  std::vector<stage> stages_;
};

} // namespace graft

/// "epoch 2: stage 'layer4' unfroze 15 tensors (...) and added a group of 15 tensors at lr 0.001".
template <>
struct fmt::formatter<graft::unfreeze_stage_result> : graft::detail::report_formatter {
  template <class Ctx>
  auto format(const graft::unfreeze_stage_result& r, Ctx& ctx) const {
    return graft::detail::write_text(ctx, fmt::format("epoch {}: stage '{}' {}; {}", r.epoch, r.name, r.unfrozen,
                                                      r.group_tensors ? fmt::format("added a group of {} tensors at lr {:g}", r.group_tensors, r.lr)
                                          : std::string("its parameters were already in the optimizer")));
  }
};
