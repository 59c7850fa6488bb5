#pragma once
// Per-group optimizer settings, typed: graft::opt::momentum(0.5) on a param group of an
// optimizer without momentum (Adam) is a compile error that says so, instead of an option
// silently ignored or a cast that fails at run time.

#include <concepts>
#include <tuple>
#include <type_traits>

#include <torch/optim/optimizer.h>

namespace graft {

/// Satisfied by a libtorch optimizer options type (torch::optim::SGDOptions, AdamOptions, ...).
template <class O>
concept optimizer_options = std::derived_from<O, torch::optim::OptimizerOptions> && std::copy_constructible<O> &&
                            requires(O& o, const O& c) {
                              { c.lr() } -> std::convertible_to<double>;
                              o.lr(1.0);
                            };

/// Satisfied by an options type with a weight_decay option (all but LBFGS).
template <class O>
concept has_weight_decay = requires(O& o, const O& c) {
  { c.weight_decay() } -> std::convertible_to<double>;
  o.weight_decay(1.0);
};

namespace opt {

#define GRAFT_OPTIMIZER_SETTING(name, type, who)                                                    \
  /** Sets the optimizer option `name` for one param group (an option of who). */                  \
  struct name {                                                                                   \
    static constexpr bool is_group_setting = true;                                                \
    type value;                                                                                   \
    template <class O>                                                                            \
    void apply(O& o) const {                                                                      \
      constexpr bool has = requires(O& x, type v) { x.name(v); };                                 \
      static_assert(has, "graft::opt::" #name ": this optimizer has no '" #name "' option (" who ")"); \
      if constexpr (has) o.name(value);                                                           \
    }                                                                                             \
  };

GRAFT_OPTIMIZER_SETTING(weight_decay, double, "SGD, Adam, AdamW, RMSprop and Adagrad have one; LBFGS has none")
GRAFT_OPTIMIZER_SETTING(momentum, double, "only SGD and RMSprop have momentum")
GRAFT_OPTIMIZER_SETTING(dampening, double, "only SGD has dampening")
GRAFT_OPTIMIZER_SETTING(nesterov, bool, "only SGD has nesterov")
GRAFT_OPTIMIZER_SETTING(eps, double, "Adam, AdamW, RMSprop and Adagrad have one")
GRAFT_OPTIMIZER_SETTING(amsgrad, bool, "only Adam and AdamW have amsgrad")
GRAFT_OPTIMIZER_SETTING(alpha, double, "only RMSprop has alpha")
GRAFT_OPTIMIZER_SETTING(centered, bool, "only RMSprop has centered")
GRAFT_OPTIMIZER_SETTING(lr_decay, double, "only Adagrad has lr_decay")
GRAFT_OPTIMIZER_SETTING(initial_accumulator_value, double, "only Adagrad has initial_accumulator_value")
#undef GRAFT_OPTIMIZER_SETTING

/// Sets Adam's and AdamW's betas for one param group.
struct betas {
  static constexpr bool is_group_setting = true;
  double beta1, beta2;
  template <class O>
  void apply(O& o) const {
    constexpr bool has = requires(O& x) { x.betas(std::make_tuple(0.9, 0.999)); };
    static_assert(has, "graft::opt::betas: this optimizer has no 'betas' option (only Adam and AdamW have)");
    if constexpr (has) o.betas(std::make_tuple(beta1, beta2));
  }
};

/// Any change to one group's options: custom([](torch::optim::SGDOptions& o) { o.nesterov(true); }).
/// The callable's parameter names the optimizer it is for.
template <class F>
struct custom {
  static constexpr bool is_group_setting = true;
  F f;
  template <class O>
  void apply(O& o) const {
    constexpr bool fits = std::is_invocable_v<const F&, O&>;
    static_assert(fits, "graft::opt::custom(f): f must accept the options type given to build() "
                        "(e.g. torch::optim::SGDOptions& for build(torch::optim::SGDOptions(...)))");
    if constexpr (fits) f(o);
  }
};
template <class F>
custom(F) -> custom<F>;

} // namespace opt

/// Satisfied by a per-group setting: graft::opt::momentum(0.5), graft::opt::custom(f), ...
template <class S>
concept group_setting = requires { requires S::is_group_setting; };

} // namespace graft
