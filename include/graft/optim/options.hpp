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

namespace detail {
// Whether options O have the option: one concept per option, so that a setting given to an
// optimizer without it fails on this line, whose comment says who has it.
// clang-format off
template <class O> concept has_weight_decay_option = requires(O& o) { o.weight_decay(double{}); };  // graft::opt::weight_decay: this optimizer has no 'weight_decay' option (SGD, Adam, AdamW, RMSprop and Adagrad have one; LBFGS has none)
template <class O> concept has_momentum_option = requires(O& o) { o.momentum(double{}); };  // graft::opt::momentum: this optimizer has no 'momentum' option (only SGD and RMSprop have momentum)
template <class O> concept has_dampening_option = requires(O& o) { o.dampening(double{}); };  // graft::opt::dampening: this optimizer has no 'dampening' option (only SGD has dampening)
template <class O> concept has_nesterov_option = requires(O& o) { o.nesterov(bool{}); };  // graft::opt::nesterov: this optimizer has no 'nesterov' option (only SGD has nesterov)
template <class O> concept has_eps_option = requires(O& o) { o.eps(double{}); };  // graft::opt::eps: this optimizer has no 'eps' option (Adam, AdamW, RMSprop and Adagrad have one)
template <class O> concept has_amsgrad_option = requires(O& o) { o.amsgrad(bool{}); };  // graft::opt::amsgrad: this optimizer has no 'amsgrad' option (only Adam and AdamW have amsgrad)
template <class O> concept has_alpha_option = requires(O& o) { o.alpha(double{}); };  // graft::opt::alpha: this optimizer has no 'alpha' option (only RMSprop has alpha)
template <class O> concept has_centered_option = requires(O& o) { o.centered(bool{}); };  // graft::opt::centered: this optimizer has no 'centered' option (only RMSprop has centered)
template <class O> concept has_lr_decay_option = requires(O& o) { o.lr_decay(double{}); };  // graft::opt::lr_decay: this optimizer has no 'lr_decay' option (only Adagrad has lr_decay)
template <class O> concept has_initial_accumulator_value_option = requires(O& o) { o.initial_accumulator_value(double{}); };  // graft::opt::initial_accumulator_value: this optimizer has no 'initial_accumulator_value' option (only Adagrad has initial_accumulator_value)
template <class O> concept has_betas_option = requires(O& o) { o.betas(std::make_tuple(0.9, 0.999)); };  // graft::opt::betas: this optimizer has no 'betas' option (only Adam and AdamW have)
template <class F, class O> concept accepts_options = std::is_invocable_v<const F&, O&>;  // graft::opt::custom(f): f must accept the options type given to build() (e.g. torch::optim::SGDOptions& for build(torch::optim::SGDOptions(...)))
// clang-format on
} // namespace detail

namespace opt {

#define GRAFT_OPTIMIZER_SETTING(name, type)                                                \
  /** Sets the optimizer option `name` for one param group. */                            \
  struct name {                                                                           \
    static constexpr bool is_group_setting = true;                                        \
    type value;                                                                           \
    template <detail::has_##name##_option O>                                              \
    void apply(O& o) const {                                                              \
      o.name(value);                                                                      \
    }                                                                                     \
  };

GRAFT_OPTIMIZER_SETTING(weight_decay, double)
GRAFT_OPTIMIZER_SETTING(momentum, double)
GRAFT_OPTIMIZER_SETTING(dampening, double)
GRAFT_OPTIMIZER_SETTING(nesterov, bool)
GRAFT_OPTIMIZER_SETTING(eps, double)
GRAFT_OPTIMIZER_SETTING(amsgrad, bool)
GRAFT_OPTIMIZER_SETTING(alpha, double)
GRAFT_OPTIMIZER_SETTING(centered, bool)
GRAFT_OPTIMIZER_SETTING(lr_decay, double)
GRAFT_OPTIMIZER_SETTING(initial_accumulator_value, double)
#undef GRAFT_OPTIMIZER_SETTING

/// Sets Adam's and AdamW's betas for one param group.
struct betas {
  static constexpr bool is_group_setting = true;
  double beta1, beta2;
  template <detail::has_betas_option O>
  void apply(O& o) const {
    o.betas(std::make_tuple(beta1, beta2));
  }
};

/// Any change to one group's options: custom([](torch::optim::SGDOptions& o) { o.nesterov(true); }).
/// The callable's parameter names the optimizer it is for.
template <class F>
struct custom {
  static constexpr bool is_group_setting = true;
  F f;
  template <class O>
    requires detail::accepts_options<F, O>
  void apply(O& o) const {
    f(o);
  }
};
template <class F>
custom(F) -> custom<F>;

} // namespace opt

/// Satisfied by a per-group setting: graft::opt::momentum(0.5), graft::opt::custom(f), ...
template <class S>
concept group_setting = requires { requires S::is_group_setting; };

/// Satisfied by a per-group setting that applies to optimizer options O: graft::opt::momentum
/// for torch::optim::SGDOptions, not for AdamOptions.
template <class S, class O>
concept group_setting_for = group_setting<S> && requires(const S& s, O& o) { s.apply(o); };

} // namespace graft
