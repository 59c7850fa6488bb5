#pragma once
// The training state of a libtorch optimizer, a graft::lr_scheduler and a grad_scaler in
// PyTorch's state_dict() layouts, as graft::value trees: a Python training checkpoint
// (torch.save({"model": ..., "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
// ...})) read with graft::read_value continues in C++, and a checkpoint written from C++ with
// graft::write_torch_save continues in Python (opt.load_state_dict, sched.load_state_dict).
//
// Python's optimizer state refers to parameters by their position in its param groups, taken
// in order (group 0's parameters are 0..n0-1, group 1's follow): the C++ optimizer's groups must
// hold the same parameters in the same order, which graft::param_groups gives when the Python
// groups were built the same way. Counts and shapes are checked; a mismatch is refused before
// anything changes.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <typeinfo>
#include <unordered_map>
#include <utility>
#include <vector>

#include <c10/util/Type.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>

#include <graft/amp/grad_scaler.hpp>
#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/optim/schedules.hpp>
#include <graft/state_dict/value.hpp>
#include <graft/walk/walk.hpp>

namespace graft {
namespace detail::pystate {

/// The key of a parameter in libtorch's optimizer state map.
#if TORCH_VERSION_MAJOR >= 2
inline void* state_key(const torch::Tensor& p) { return p.unsafeGetTensorImpl(); }
#else
inline std::string state_key(const torch::Tensor& p) { return c10::guts::to_string(p.unsafeGetTensorImpl()); }
#endif

enum class kind { sgd, adam, adamw };

inline std::string_view name_of(kind k) {
  switch (k) {
    case kind::sgd: return "SGD";
    case kind::adam: return "Adam";
    case kind::adamw: return "AdamW";
  }
  return "?";
}

/// The kind of `opt`, from its first group's options; option_error for another optimizer.
inline kind kind_of(const torch::optim::Optimizer& opt, const char* caller) {
  if (opt.param_groups().empty())
    throw state_error(fmt::format("{}: the optimizer has no param groups", caller));
  const auto& o = opt.param_groups().front().options();
  if (dynamic_cast<const torch::optim::SGDOptions*>(&o)) return kind::sgd;
  if (dynamic_cast<const torch::optim::AdamWOptions*>(&o)) return kind::adamw;
  if (dynamic_cast<const torch::optim::AdamOptions*>(&o)) return kind::adam;
  throw option_error(fmt::format("{}: {} is not supported; PyTorch's state layout is known for SGD, Adam and AdamW",
                                 caller, c10::demangle(typeid(opt).name())));
}

inline value str(std::string_view s) { return value(std::string(s)); }

/// The dotted names of `model`'s parameters, by tensor, for messages.
inline std::unordered_map<const void*, std::string> names_of(const torch::nn::Module* model) {
  std::unordered_map<const void*, std::string> names;
  if (!model) return names;
  for (auto t : walk(*model)) names.emplace(t.tensor().unsafeGetTensorImpl(), std::string(t.path()));
  return names;
}

/// A field of a dict in a checkpoint, with the path to it for messages.
inline const value& field(const dict& d, std::string_view key, const std::string& where, const char* caller) {
  if (const value* v = d.find(key)) return *v;
  std::vector<std::string> keys;
  for (const auto& [k, v] : d) keys.push_back(k.key_text());
  throw key_error(fmt::format("{}: {} has no '{}' (it has: {})", caller, where, key, graft::detail::join(keys, ", ")),
                  {.key = where + "." + std::string(key)});
}
inline double number(const value& v, const std::string& where, const char* caller) {
  if (v.is_int() || v.is_float()) return v.as_number();
  if (v.is_bool()) return v.as_bool() ? 1.0 : 0.0;
  if (v.is_tensor() && v.as_tensor().numel() == 1) return v.as_tensor().item<double>();
  throw type_error(fmt::format("{}: {} is a {}, not a number", caller, where, v.type_name()), {.key = where});
}
inline bool flag(const value& v, const std::string& where, const char* caller) {
  if (v.is_bool()) return v.as_bool();
  if (v.is_none()) return false;
  if (v.is_int()) return v.as_int() != 0;
  throw type_error(fmt::format("{}: {} is a {}, not a bool", caller, where, v.type_name()), {.key = where});
}
inline std::vector<double> numbers(const value& v, const std::string& where, const char* caller) {
  if (!v.is_sequence())
    throw type_error(fmt::format("{}: {} is a {}, not a list", caller, where, v.type_name()), {.key = where});
  std::vector<double> out;
  for (std::size_t i = 0; i < v.as_sequence().items.size(); ++i)
    out.push_back(number(v.as_sequence().items[i], fmt::format("{}[{}]", where, i), caller));
  return out;
}

/// One parameter's state as read, before anything is installed.
struct param_state {
  std::size_t group;
  torch::Tensor param;
  std::optional<torch::Tensor> momentum_buffer;
  std::int64_t step = 0;
  torch::Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
};

} // namespace detail::pystate

/// `opt`'s state as PyTorch's optimizer.state_dict() holds it: {"state": {index: {...}},
/// "param_groups": [{"lr": ..., ..., "params": [indices]}]}, for SGD ("momentum_buffer"),
/// Adam and AdamW ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq" with amsgrad). The tensors
/// are the optimizer's own, as Python's state_dict() gives them: write them (graft::
/// write_torch_save) before the next step. option_error for another optimizer.
inline value optimizer_state(const torch::optim::Optimizer& opt) {
  using namespace detail::pystate;
  const char* caller = "optimizer_state";
  const kind k = kind_of(opt, caller);
  dict state;
  sequence groups;
  std::int64_t index = 0;
  for (const auto& group : opt.param_groups()) {
    dict g;
    const auto& options = group.options();
    if (k == kind::sgd) {
      const auto& o = static_cast<const torch::optim::SGDOptions&>(options);
      g.set(str("lr"), o.lr());
      g.set(str("momentum"), o.momentum());
      g.set(str("dampening"), o.dampening());
      g.set(str("weight_decay"), o.weight_decay());
      g.set(str("nesterov"), o.nesterov());
      g.set(str("maximize"), false);
      g.set(str("foreach"), nullptr);
      g.set(str("differentiable"), false);
      g.set(str("fused"), nullptr);
    } else {
      double lr, eps, weight_decay;
      bool amsgrad;
      std::tuple<double, double> betas;
      if (k == kind::adam) {
        const auto& o = static_cast<const torch::optim::AdamOptions&>(options);
        lr = o.lr(), eps = o.eps(), weight_decay = o.weight_decay(), amsgrad = o.amsgrad(), betas = o.betas();
      } else {
        const auto& o = static_cast<const torch::optim::AdamWOptions&>(options);
        lr = o.lr(), eps = o.eps(), weight_decay = o.weight_decay(), amsgrad = o.amsgrad(), betas = o.betas();
      }
      g.set(str("lr"), lr);
      g.set(str("betas"), sequence{{std::get<0>(betas), std::get<1>(betas)}, /*is_tuple=*/true});
      g.set(str("eps"), eps);
      g.set(str("weight_decay"), weight_decay);
      g.set(str("amsgrad"), amsgrad);
      g.set(str("maximize"), false);
      g.set(str("foreach"), nullptr);
      g.set(str("capturable"), false);
      g.set(str("differentiable"), false);
      g.set(str("fused"), nullptr);
      g.set(str("decoupled_weight_decay"), k == kind::adamw);
    }
    sequence params;
    for (const auto& p : group.params()) {
      auto found = opt.state().find(state_key(p));
      if (found != opt.state().end()) {
        dict s;
        if (k == kind::sgd) {
          const auto& ps = static_cast<const torch::optim::SGDParamState&>(*found->second);
          s.set(str("momentum_buffer"), ps.momentum_buffer().defined() ? value(ps.momentum_buffer()) : value(nullptr));
        } else {
          // Adam and AdamW keep the same four fields; PyTorch's step is a float32 scalar tensor.
          std::int64_t step = 0;
          torch::Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
          if (k == kind::adam) {
            const auto& ps = static_cast<const torch::optim::AdamParamState&>(*found->second);
            step = ps.step(), exp_avg = ps.exp_avg(), exp_avg_sq = ps.exp_avg_sq(), max_exp_avg_sq = ps.max_exp_avg_sq();
          } else {
            const auto& pw = static_cast<const torch::optim::AdamWParamState&>(*found->second);
            step = pw.step(), exp_avg = pw.exp_avg(), exp_avg_sq = pw.exp_avg_sq(), max_exp_avg_sq = pw.max_exp_avg_sq();
          }
          s.set(str("step"), torch::scalar_tensor(static_cast<double>(step), torch::kFloat32));
          s.set(str("exp_avg"), exp_avg);
          s.set(str("exp_avg_sq"), exp_avg_sq);
          const bool amsgrad = k == kind::adam ? static_cast<const torch::optim::AdamOptions&>(options).amsgrad()
                                               : static_cast<const torch::optim::AdamWOptions&>(options).amsgrad();
          if (amsgrad && max_exp_avg_sq.defined()) s.set(str("max_exp_avg_sq"), max_exp_avg_sq);
        }
        state.append(value(index), value(std::move(s)));
      }
      params.items.emplace_back(index++);
    }
    g.set(str("params"), std::move(params));
    groups.items.emplace_back(std::move(g));
  }
  dict out;
  out.set(str("state"), std::move(state));
  out.set(str("param_groups"), std::move(groups));
  return out;
}

namespace detail::pystate {

/// A checked restore of an optimizer: what install() puts in.
struct optimizer_plan {
  kind k;
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  std::vector<param_state> states;
};

/// Reads and checks everything load_optimizer_state restores; changes nothing.
/// `added`: groups the optimizer will have by then, after its own (gradual unfreezing's).
inline optimizer_plan plan_optimizer(const torch::optim::Optimizer& opt, const value& saved, const torch::nn::Module* model,
                                     const char* caller, const std::vector<std::vector<torch::Tensor>>& added = {}) {
  const kind k = kind_of(opt, caller);
  if (!saved.is_dict())
    throw type_error(fmt::format("{}: the optimizer state is a {}, not a dict", caller, saved.type_name()));
  const auto& root = saved.as_dict();
  const value& groups_v = field(root, "param_groups", "the optimizer state", caller);
  const value& state_v = field(root, "state", "the optimizer state", caller);
  if (!groups_v.is_sequence())
    throw type_error(fmt::format("{}: param_groups is a {}, not a list", caller, groups_v.type_name()), {.key = "param_groups"});
  if (!state_v.is_dict())
    throw type_error(fmt::format("{}: state is a {}, not a dict", caller, state_v.type_name()), {.key = "state"});
  const auto& saved_groups = groups_v.as_sequence().items;
  std::vector<std::vector<torch::Tensor>> groups;
  for (const auto& g : opt.param_groups()) groups.push_back(g.params());
  groups.insert(groups.end(), added.begin(), added.end());
  if (saved_groups.size() != groups.size())
    throw state_error(fmt::format("{}: the saved state has {} param groups, the optimizer {}", caller, saved_groups.size(),
                                  groups.size()),
                      {.key = "param_groups"});
  const auto names = names_of(model);
  auto describe = [&](const torch::Tensor& p, std::int64_t index) {
    auto it = names.find(p.unsafeGetTensorImpl());
    return it == names.end() ? fmt::format("parameter {}", index) : fmt::format("parameter {} ('{}')", index, it->second);
  };

  // Every group's settings and every index's parameter, read and checked first.
  std::vector<std::unique_ptr<torch::optim::OptimizerOptions>> options;
  std::unordered_map<std::int64_t, std::pair<std::size_t, torch::Tensor>> by_index;
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    const std::string where = fmt::format("param_groups[{}]", gi);
    if (!saved_groups[gi].is_dict())
      throw type_error(fmt::format("{}: {} is a {}, not a dict", caller, where, saved_groups[gi].type_name()), {.key = where});
    const auto& g = saved_groups[gi].as_dict();
    const value& params = field(g, "params", where, caller);
    if (!params.is_sequence())
      throw type_error(fmt::format("{}: {}.params is a {}, not a list", caller, where, params.type_name()), {.key = where});
    const auto& indices = params.as_sequence().items;
    if (indices.size() != groups[gi].size())
      throw state_error(fmt::format("{}: {} holds {} parameters in the saved state, {} in the optimizer", caller, where,
                                    indices.size(), groups[gi].size()),
                        {.key = where});
    for (std::size_t j = 0; j < indices.size(); ++j) {
      if (!indices[j].is_int())
        throw type_error(fmt::format("{}: {}.params[{}] is a {}, not an int", caller, where, j, indices[j].type_name()),
                         {.key = where});
      if (!by_index.emplace(indices[j].as_int(), std::make_pair(gi, groups[gi][j])).second)
        throw state_error(fmt::format("{}: parameter index {} appears twice in the saved param groups", caller,
                                      indices[j].as_int()),
                          {.key = where});
    }
    auto get = [&](std::string_view key) { return number(field(g, key, where, caller), where + "." + std::string(key), caller); };
    auto refuse_if = [&](std::string_view key, std::string_view why) {
      if (const value* v = g.find(key); v && flag(*v, where + "." + std::string(key), caller))
        throw option_error(fmt::format("{}: {} has {} set, which libtorch's {} does not have{}", caller, where, key,
                                       name_of(k), why),
                           {.key = where + "." + std::string(key)});
    };
    refuse_if("maximize", "");
    if (k == kind::sgd) {
      auto o = std::make_unique<torch::optim::SGDOptions>(get("lr"));
      o->momentum(get("momentum")).dampening(get("dampening")).weight_decay(get("weight_decay"));
      o->nesterov(flag(field(g, "nesterov", where, caller), where + ".nesterov", caller));
      options.push_back(std::move(o));
    } else {
      if (k == kind::adam) refuse_if("decoupled_weight_decay", " (that is AdamW: use torch::optim::AdamW)");
      const auto betas = numbers(field(g, "betas", where, caller), where + ".betas", caller);
      if (betas.size() != 2)
        throw type_error(fmt::format("{}: {}.betas has {} values, not 2", caller, where, betas.size()), {.key = where});
      const bool amsgrad = flag(field(g, "amsgrad", where, caller), where + ".amsgrad", caller);
      if (k == kind::adam) {
        auto o = std::make_unique<torch::optim::AdamOptions>(get("lr"));
        o->betas({betas[0], betas[1]}).eps(get("eps")).weight_decay(get("weight_decay")).amsgrad(amsgrad);
        options.push_back(std::move(o));
      } else {
        auto o = std::make_unique<torch::optim::AdamWOptions>(get("lr"));
        o->betas({betas[0], betas[1]}).eps(get("eps")).weight_decay(get("weight_decay")).amsgrad(amsgrad);
        options.push_back(std::move(o));
      }
    }
  }

  std::vector<param_state> states;
  for (const auto& [key, entry] : state_v.as_dict()) {
    const std::string where = fmt::format("state[{}]", key.key_text());
    if (!key.is_int()) throw type_error(fmt::format("{}: {}: the key is a {}, not an int", caller, where, key.type_name()), {.key = where});
    auto found = by_index.find(key.as_int());
    if (found == by_index.end())
      throw key_error(fmt::format("{}: {} belongs to no parameter of the saved param groups ({} parameters)", caller, where,
                                  by_index.size()),
                      {.key = where});
    if (!entry.is_dict())
      throw type_error(fmt::format("{}: {} is a {}, not a dict", caller, where, entry.type_name()), {.key = where});
    const auto& s = entry.as_dict();
    param_state ps{found->second.first, found->second.second, {}, 0, {}, {}, {}};
    auto tensor = [&](std::string_view name) {
      const value& v = field(s, name, where, caller);
      if (!v.is_tensor())
        throw type_error(fmt::format("{}: {}.{} is a {}, not a tensor", caller, where, name, v.type_name()), {.key = where});
      const torch::Tensor& t = v.as_tensor();
      if (t.sizes() != ps.param.sizes())
        throw shape_error(fmt::format("{}: {}.{} has shape {}, but {} has shape {}", caller, where, name,
                                      graft::detail::bracketed(t.sizes()), describe(ps.param, key.as_int()),
                                      graft::detail::bracketed(ps.param.sizes())),
                          {.key = where});
      return t;
    };
    if (k == kind::sgd) {
      if (const value* v = s.find("momentum_buffer"); v && !v->is_none()) ps.momentum_buffer = tensor("momentum_buffer");
    } else {
      const double step = number(field(s, "step", where, caller), where + ".step", caller);
      if (!(step >= 0 && step == std::floor(step)))
        throw type_error(fmt::format("{}: {}.step is {}, not a count", caller, where, step), {.key = where});
      ps.step = static_cast<std::int64_t>(step);
      ps.exp_avg = tensor("exp_avg");
      ps.exp_avg_sq = tensor("exp_avg_sq");
      const bool amsgrad = k == kind::adam ? static_cast<torch::optim::AdamOptions&>(*options[ps.group]).amsgrad()
                                           : static_cast<torch::optim::AdamWOptions&>(*options[ps.group]).amsgrad();
      if (amsgrad) ps.max_exp_avg_sq = tensor("max_exp_avg_sq");
    }
    states.push_back(std::move(ps));
  }

  return {k, std::move(options), std::move(states)};
}

/// Installs a checked plan: each group's settings and each parameter's state, copied in the
/// parameter's dtype and on its device.
inline void install(torch::optim::Optimizer& opt, optimizer_plan&& plan) {
  const kind k = plan.k;
  auto& options = plan.options;
  auto& groups = opt.param_groups();
  torch::NoGradGuard no_grad;
  auto own = [](const torch::Tensor& t, const torch::Tensor& p) { return t.to(p.options(), false, /*copy=*/true).contiguous(); };
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    for (const auto& p : groups[gi].params()) opt.state().erase(state_key(p));
    groups[gi].set_options(std::move(options[gi]));
  }
  for (const auto& ps : plan.states) {
    if (k == kind::sgd) {
      if (!ps.momentum_buffer) continue;  // None: the next step starts the buffer, as in Python
      auto st = std::make_unique<torch::optim::SGDParamState>();
      st->momentum_buffer(own(*ps.momentum_buffer, ps.param));
      opt.state()[state_key(ps.param)] = std::move(st);
    } else if (k == kind::adam) {
      auto st = std::make_unique<torch::optim::AdamParamState>();
      st->step(ps.step).exp_avg(own(ps.exp_avg, ps.param)).exp_avg_sq(own(ps.exp_avg_sq, ps.param));
      if (ps.max_exp_avg_sq.defined()) st->max_exp_avg_sq(own(ps.max_exp_avg_sq, ps.param));  // amsgrad only, as libtorch
      opt.state()[state_key(ps.param)] = std::move(st);
    } else {
      auto st = std::make_unique<torch::optim::AdamWParamState>();
      st->step(ps.step).exp_avg(own(ps.exp_avg, ps.param)).exp_avg_sq(own(ps.exp_avg_sq, ps.param));
      if (ps.max_exp_avg_sq.defined()) st->max_exp_avg_sq(own(ps.max_exp_avg_sq, ps.param));  // amsgrad only, as libtorch
      opt.state()[state_key(ps.param)] = std::move(st);
    }
  }
}

} // namespace detail::pystate

/// Restores `opt` from PyTorch's optimizer.state_dict() layout (what optimizer_state gives, or a
/// Python optimizer's state read from its checkpoint), as Python's load_state_dict does: each
/// group's settings (lr, momentum, betas, ...) and each parameter's state, cast to the
/// parameter's dtype and device. The groups must match in number and size, and every state
/// tensor the shape of its parameter; settings libtorch's optimizer does not have (maximize,
/// Adam's decoupled_weight_decay) are refused, naming them. key_error, type_error, shape_error,
/// state_error or option_error before anything changes. `model`, if given, names parameters in
/// messages.
inline void load_optimizer_state(torch::optim::Optimizer& opt, const value& saved, const torch::nn::Module* model = nullptr) {
  detail::pystate::install(opt, detail::pystate::plan_optimizer(opt, saved, model, "load_optimizer_state"));
}

/// `sched`'s state as a PyTorch LRScheduler's state_dict() holds it: "base_lrs", "last_epoch",
/// "_step_count", "_last_lr", "_is_initial" and "_get_lr_called_within_step". The schedule's own
/// settings are not written: the Python scheduler's constructor gives them, and its
/// load_state_dict keeps those it is not given. A Python SequentialLR also needs its
/// schedulers' states ("_schedulers"), which this does not write.
inline value scheduler_state(const lr_scheduler& sched) {
  using detail::pystate::str;
  auto list = [](const std::vector<double>& xs) {
    sequence s;
    for (double x : xs) s.items.emplace_back(x);
    return s;
  };
  dict d;
  d.set(str("base_lrs"), list(sched.base_lrs()));
  d.set(str("last_epoch"), sched.epoch());
  d.set(str("_step_count"), sched.epoch() + 1);
  d.set(str("_is_initial"), false);
  d.set(str("_get_lr_called_within_step"), false);
  d.set(str("_last_lr"), list(sched.last_lrs()));
  return d;
}

namespace detail::pystate {

/// Reads and checks what load_scheduler_state restores (last_epoch, base lrs); changes nothing.
/// `added_groups`: groups its optimizer will have by then, after its own (gradual unfreezing's).
/// `optimizer`: the saved optimizer state, whose groups' "max_lr" are a OneCycleLR's peaks.
inline std::pair<std::int64_t, std::vector<double>> plan_scheduler(const lr_scheduler& sched, const value& saved,
                                                                   const char* caller, std::size_t added_groups = 0,
                                                                   const value* optimizer = nullptr) {
  if (!saved.is_dict())
    throw type_error(fmt::format("{}: the scheduler state is a {}, not a dict", caller, saved.type_name()));
  const auto& d = saved.as_dict();
  if (d.find("lr_lambdas"))
    throw state_error(fmt::format("{}: the saved scheduler is a LambdaLR or MultiplicativeLR, whose factor is Python code "
                                  "that no state holds; write its schedule with graft's (docs/schedules.md) and continue "
                                  "it with lr_scheduler::resume(epoch, base_lrs)",
                                  caller),
                      {.key = "lr_lambdas"});
  const std::int64_t epoch = static_cast<std::int64_t>(number(field(d, "last_epoch", "the scheduler state", caller), "last_epoch", caller));
  // A SequentialLR keeps its base lrs in its first scheduler's state.
  const value* bases_v = d.find("base_lrs");
  if (const value* subs = d.find("_schedulers"); !bases_v && subs && subs->is_sequence() && !subs->as_sequence().items.empty() &&
                                                  subs->as_sequence().items.front().is_dict())
    bases_v = subs->as_sequence().items.front().as_dict().find("base_lrs");
  if (!bases_v) field(d, "base_lrs", "the scheduler state", caller);  // throws, listing the keys there are
  auto bases = numbers(*bases_v, "base_lrs", caller);
  // A OneCycleLR's base_lrs are its initial lrs (max_lr / div_factor); graft's one_cycle takes
  // each group's base as its peak, which the Python run kept in the optimizer's groups.
  std::vector<double> peaks;
  if (d.find("total_steps") && d.find("_schedule_phases") && optimizer && optimizer->is_dict())
    if (const value* groups_v = optimizer->as_dict().find("param_groups"); groups_v && groups_v->is_sequence())
      for (const auto& g : groups_v->as_sequence().items)
        if (const value* m = g.is_dict() ? g.as_dict().find("max_lr") : nullptr) peaks.push_back(number(*m, "max_lr", caller));
  // Fewer base lrs than groups: groups added since the saved scheduler's last step, which it
  // takes up at its next one, as lr_scheduler does.
  const std::size_t groups = sched.optimizer().param_groups().size() + added_groups;
  if (bases.size() > groups)
    throw state_error(fmt::format("{}: the saved scheduler drives {} param groups, this one's optimizer has {}", caller,
                                  bases.size(), groups),
                      {.key = "base_lrs"});
  if (const value* last = d.find("_last_lr")) {
    const auto python = numbers(*last, "_last_lr", caller);
    auto same_as_python = [&](const std::vector<double>& mine) {
      bool same = python.size() == mine.size();
      for (std::size_t i = 0; same && i < mine.size(); ++i)
        same = std::abs(python[i] - mine[i]) <= 1e-6 * std::max(std::abs(python[i]), 1e-12);
      return same;
    };
    const auto mine = sched.lrs_at(epoch, bases);
    bool same = same_as_python(mine);
    if (!same && peaks.size() == bases.size() && same_as_python(sched.lrs_at(epoch, peaks))) {
      bases = peaks;
      same = true;
    }
    if (!same)
      throw state_error(fmt::format("{}: at epoch {} the saved run's lrs were [{}], but this scheduler's {} gives [{}] from "
                                    "the same base lrs: the schedules differ",
                                    caller, epoch, graft::detail::join(python, ", "), sched.schedule_name(),
                                    graft::detail::join(mine, ", ")),
                        {.key = "_last_lr"});
  }
  return {epoch, bases};
}

} // namespace detail::pystate

/// Continues `sched` from a PyTorch scheduler's state_dict(): its last_epoch and base_lrs, the
/// optimizer's lrs set for that epoch. graft's schedule must be the Python one: the lrs it gives
/// at last_epoch are compared with the Python run's "_last_lr" (relative 1e-6), and a schedule
/// that differs is refused (state_error) with both lists. A LambdaLR or MultiplicativeLR
/// (whose factor is Python code) is refused by name. Nothing changes on a refusal. A OneCycleLR
/// keeps its peak lrs in the optimizer's groups ("max_lr"): pass the saved optimizer state too
/// (graft's one_cycle without max_lr takes each group's base lr as its peak).
inline void load_scheduler_state(lr_scheduler& sched, const value& saved, const value* optimizer_state = nullptr) {
  auto [epoch, bases] = detail::pystate::plan_scheduler(sched, saved, "load_scheduler_state", 0, optimizer_state);
  sched.resume(epoch, std::move(bases));
}

/// `scaler`'s state as torch.amp.GradScaler.state_dict() holds it ("scale", "growth_factor",
/// "backoff_factor", "growth_interval", "_growth_tracker"); an empty dict when disabled.
inline value scaler_state(const amp::grad_scaler& scaler) {
  using detail::pystate::str;
  dict d;
  if (auto s = scaler.state_dict()) {
    d.set(str("scale"), s->scale);
    d.set(str("growth_factor"), s->growth_factor);
    d.set(str("backoff_factor"), s->backoff_factor);
    d.set(str("growth_interval"), s->growth_interval);
    d.set(str("_growth_tracker"), s->growth_tracker);
  }
  return d;
}

/// Restores `scaler` from torch.amp.GradScaler.state_dict()'s layout. An empty dict (a disabled
/// scaler's) is refused by an enabled scaler, as PyTorch does.
inline void load_scaler_state(amp::grad_scaler& scaler, const value& saved) {
  using namespace detail::pystate;
  const char* caller = "load_scaler_state";
  if (!scaler.is_enabled()) return;
  if (!saved.is_dict())
    throw type_error(fmt::format("{}: the scaler state is a {}, not a dict", caller, saved.type_name()));
  const auto& d = saved.as_dict();
  if (d.empty())
    throw state_error(fmt::format("{}: the saved state is empty: it comes from a disabled GradScaler", caller));
  auto get = [&](std::string_view key) { return number(field(d, key, "the scaler state", caller), std::string(key), caller); };
  scaler.load_state_dict({.scale = get("scale"),
                          .growth_factor = get("growth_factor"),
                          .backoff_factor = get("backoff_factor"),
                          .growth_interval = static_cast<std::int64_t>(get("growth_interval")),
                          .growth_tracker = static_cast<std::int64_t>(get("_growth_tracker"))});
}

} // namespace graft
