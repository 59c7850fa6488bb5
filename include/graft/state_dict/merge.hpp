#pragma once
// merge(module, policy): load a state dict into a model, transactionally. The plan matches
// every key, shape and dtype first and builds a load_report; only if the policy accepts the
// plan are tensors copied (into the model's own tensors under NoGradGuard, so optimizers and
// tied weights stay valid; a tensor viewing a mapped checkpoint is read straight from its
// file). A refused plan throws load_error and leaves the model bit-for-bit unchanged.
// Defined in merge-inl.hpp (compiled once in the separately compiled mode).

#include <string>
#include <utility>

#include <torch/nn/module.h>

#include <graft/config.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/policy.hpp>
#include <graft/state_dict/report.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft {
namespace detail {
/// Throws the load_error that refuses `r`: a key_error if a key is not allowed, else a shape_error.
[[noreturn]] GRAFT_FUNC void refuse(const torch::nn::Module& module, load_report r);
} // namespace detail

/// Plans loading `sd` into `module` without changing anything: the report a merge would give.
GRAFT_FUNC load_report preview(const torch::nn::Module& module, const state_dict& sd, const load_policy& policy = {});

/// Loads `sd` into `module` if `policy` accepts the plan; otherwise throws load_error and
/// changes nothing. Returns the report.
GRAFT_FUNC load_report merge(torch::nn::Module& module, const state_dict& sd, const load_policy& policy = {});

/// The sink merge(module, policy) makes.
class merge_sink : public pipe_base {
public:
  merge_sink(torch::nn::Module& m, load_policy p) : module_(&m), policy_(std::move(p)) {}
  load_report consume(state_dict&& sd) const { return merge(*module_, sd, policy_); }

private:
  torch::nn::Module* module_;
  load_policy policy_;
};
/// Ends a pipeline by loading into `module` (see merge(module, sd, policy)).
inline merge_sink merge(torch::nn::Module& module, load_policy policy = {}) { return {module, std::move(policy)}; }

/// The sink preview(module, policy) makes.
class preview_sink : public pipe_base {
public:
  preview_sink(const torch::nn::Module& m, load_policy p) : module_(&m), policy_(std::move(p)) {}
  load_report consume(state_dict&& sd) const { return preview(*module_, sd, policy_); }

private:
  const torch::nn::Module* module_;
  load_policy policy_;
};
/// Ends a pipeline with the report a merge would give, changing nothing.
inline preview_sink preview(const torch::nn::Module& module, load_policy policy = {}) { return {module, std::move(policy)}; }

/// The stage validate(module, policy) makes.
class validate_stage : public pipe_base {
public:
  validate_stage(const torch::nn::Module& m, load_policy p) : module_(&m), policy_(std::move(p)) {}
  void run(state_dict& sd) const {
    auto r = preview(*module_, sd, policy_);
    if (!r.accepted()) detail::refuse(*module_, std::move(r));
  }
  std::string describe() const { return "validate"; }

private:
  const torch::nn::Module* module_;
  load_policy policy_;
};
/// A stage that checks the state dict against `module` and `policy` and passes it on
/// unchanged, or throws load_error: fail before saving or merging elsewhere.
inline validate_stage validate(const torch::nn::Module& module, load_policy policy = {}) {
  return {module, std::move(policy)};
}

/// The sink collect() makes.
struct collect_sink : pipe_base {
  state_dict consume(state_dict&& sd) const { return std::move(sd); }
};
/// Ends a pipeline with its state dict.
inline collect_sink collect() { return {}; }

/// The source from(module) makes: the module's own tensors under Python's keys.
class module_source : public pipe_base {
public:
  explicit module_source(const torch::nn::Module& m) : module_(&m) {}
  state_dict load() const { return state_dict(*module_); }
  std::string describe() const { return "from(" + module_->name() + ")"; }

private:
  const torch::nn::Module* module_;
};
/// A module's state as a pipeline source (its live tensors, not copies).
inline module_source from(const torch::nn::Module& module) { return module_source(module); }

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/state_dict/merge-inl.hpp>
#endif
