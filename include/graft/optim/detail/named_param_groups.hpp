#pragma once
// named_param_groups: what param_groups(...).build(options) returns — libtorch's param groups
// with their names, their settings and where each parameter went — and its table formatter.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

#include <fmt/format.h>
#include <c10/util/Type.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>
#include <torch/types.h>
#include <torch/version.h>

#include <graft/config.hpp>
#include <graft/detail/join.hpp>
#include <graft/detail/report_formatter.hpp>
#include <graft/error.hpp>
#include <graft/optim/options.hpp>

// libtorch releases whose Optimizer(groups, defaults) merges each group's options with the
// defaults by comparing them with a default-constructed options object (seen in 2.13).
#ifndef GRAFT_OPTIMIZER_MERGES_GROUP_OPTIONS
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 9)
#define GRAFT_OPTIMIZER_MERGES_GROUP_OPTIONS 1
#else
#define GRAFT_OPTIMIZER_MERGES_GROUP_OPTIONS 0
#endif
#endif

namespace graft {

namespace detail {
// The options type of each libtorch optimizer, for make_optimizer<Opt>().
template <class Opt> struct options_of_t {};
template <> struct options_of_t<torch::optim::SGD> { using type = torch::optim::SGDOptions; };
template <> struct options_of_t<torch::optim::Adam> { using type = torch::optim::AdamOptions; };
template <> struct options_of_t<torch::optim::AdamW> { using type = torch::optim::AdamWOptions; };
template <> struct options_of_t<torch::optim::RMSprop> { using type = torch::optim::RMSpropOptions; };
template <> struct options_of_t<torch::optim::Adagrad> { using type = torch::optim::AdagradOptions; };
template <> struct options_of_t<torch::optim::LBFGS> { using type = torch::optim::LBFGSOptions; };
template <class Opt> using options_of = typename options_of_t<Opt>::type;
} // namespace detail

/// Built param groups: libtorch's groups plus their names, settings and which parameter went where.
class named_param_groups {
public:
  /// One group as built.
  struct group_info {
    std::string name;
    double lr;
    std::optional<double> weight_decay;  ///< empty for an optimizer without weight decay
    std::size_t tensors = 0;
    std::int64_t elements = 0;
  };
  /// One parameter of the model and where it went.
  struct parameter_info {
    std::string_view path;  ///< valid while a named_param_groups holding it (or a copy of it) lives
    torch::Tensor tensor;
    bool trainable;
    std::optional<std::size_t> group;  ///< empty for a frozen parameter left out
    torch::IntArrayRef shape() const { return tensor.sizes(); }
  };

  /// libtorch's param groups, in declaration order.
  const std::vector<torch::optim::OptimizerParamGroup>& groups() const noexcept { return groups_; }
  /// Passes straight to an optimizer: torch::optim::SGD opt(groups, defaults). Prefer
  /// make_optimizer<SGD>(), which takes build()'s options as the defaults: from libtorch 2.9 this
  /// constructor replaces every group option equal to its options class's default
  /// (weight_decay 0, an lr of 1e-3, ...) with the optimizer's default, so a no-decay group
  /// decays again.
#if GRAFT_OPTIMIZER_MERGES_GROUP_OPTIONS
  [[deprecated("libtorch >= 2.9's optimizer constructor overwrites group options that equal their "
               "class's defaults (a no-decay group's weight_decay 0): use groups.make_optimizer<Opt>()")]]
#endif
  operator std::vector<torch::optim::OptimizerParamGroup>() const { return groups_; }
  std::size_t size() const noexcept { return groups_.size(); }
  /// Group names, parallel to groups() and to an optimizer's param_groups().
  const std::vector<std::string>& names() const noexcept { return names_; }
  const std::vector<group_info>& info() const noexcept { return info_; }
  /// Every parameter of the model (tied ones once), in named_parameters() order.
  const std::vector<parameter_info>& parameters() const noexcept { return params_; }

  /// The index of the group called `name` (the same in the optimizer); key_error if none.
  GRAFT_FUNC std::size_t index_of(std::string_view name) const;
  /// The group called `name`.
  const torch::optim::OptimizerParamGroup& operator[](std::string_view name) const { return groups_[index_of(name)]; }
  /// The name of the group that holds the parameter at `path`, if any.
  std::optional<std::string_view> group_of(std::string_view path) const {
    for (auto& p : params_)
      if (p.path == path) return p.group ? std::optional<std::string_view>(names_[*p.group]) : std::nullopt;
    return std::nullopt;
  }

  /// The options build() was given: the optimizer's defaults. A group added to the optimizer
  /// later (gradual unfreezing, add_param_group) starts from them. Null for a default-constructed one.
  const torch::optim::OptimizerOptions* defaults() const noexcept { return defaults_.get(); }

  /// Constructs optimizer `Opt` (torch::optim::SGD, Adam, AdamW, RMSprop, Adagrad, LBFGS; for
  /// another optimizer name its options type too: make_optimizer<MyOpt, MyOptions>()) over
  /// these groups, with build()'s options as its defaults: the options are given once. Equal to
  /// Opt(groups, options), but installs the groups as built and skips libtorch's per-parameter
  /// duplicate check (a string built per parameter), which the build already guarantees.
  /// option_error if build() was given another optimizer's options.
  template <class Opt, optimizer_options O = detail::options_of<Opt>>
    requires std::derived_from<Opt, torch::optim::Optimizer> && std::constructible_from<Opt, std::vector<torch::Tensor>, O>
  Opt make_optimizer() const {
    const O* built = dynamic_cast<const O*>(defaults_.get());
    if (!built) throw_other_options(c10::demangle(typeid(O).name()));
    Opt opt(std::vector<torch::Tensor>{}, *built);
    install(opt);
    return opt;
  }
  /// The same, with the options given again: option_error unless they equal build()'s (which
  /// the groups hold), since the optimizer's defaults would otherwise differ from its groups'
  /// base and a group added later would silently lose momentum or weight decay.
  template <class Opt, optimizer_options O>
    requires std::derived_from<Opt, torch::optim::Optimizer> && std::constructible_from<Opt, std::vector<torch::Tensor>, O>
  Opt make_optimizer(const O& defaults) const {
    const O* built = dynamic_cast<const O*>(defaults_.get());
    if (!built) throw_other_options(c10::demangle(typeid(O).name()));
    if (!(*built == defaults)) throw_options_differ();
    return make_optimizer<Opt, O>();
  }

  named_param_groups() = default;
  // Compiled once in graft::compiled rather than in every unit that lets the groups go.
  GRAFT_FUNC named_param_groups(const named_param_groups&);
  GRAFT_FUNC named_param_groups(named_param_groups&&) noexcept;
  GRAFT_FUNC named_param_groups& operator=(named_param_groups&&) noexcept;
  GRAFT_FUNC ~named_param_groups();

private:
  // Replaces the optimizer's param groups with copies of these (copies clone the options).
  GRAFT_FUNC void install(torch::optim::Optimizer& opt) const;
  [[noreturn]] GRAFT_FUNC void throw_other_options(const std::string& wanted) const;
  [[noreturn]] GRAFT_FUNC static void throw_options_differ();
  template <class...> friend class param_groups_builder;
  // Appends a built group; option_error if a group of that name exists.
  GRAFT_FUNC void add_group(std::string name, double lr, std::optional<double> weight_decay, std::vector<torch::Tensor> members,
                            std::unique_ptr<torch::optim::OptimizerOptions> options);
  std::vector<torch::optim::OptimizerParamGroup> groups_;
  std::vector<std::string> names_;
  std::vector<group_info> info_;
  std::vector<parameter_info> params_;
  std::shared_ptr<const std::string> paths_;  // every parameter's path, end to end: params_[i].path views it
  std::shared_ptr<const torch::optim::OptimizerOptions> defaults_;
};

} // namespace graft

/// A table of the groups: name, lr, weight decay, tensors, elements. "{:v}" adds one line per
/// parameter: its group, shape and whether it trains.
template <>
struct fmt::formatter<graft::named_param_groups> {
  bool verbose = false;
  constexpr auto parse(format_parse_context& ctx) {
    auto it = ctx.begin();
    if (it != ctx.end() && *it == 'v') {
      verbose = true;
      ++it;
    }
    return it;
  }
  template <class Ctx>
  auto format(const graft::named_param_groups& g, Ctx& ctx) const {
    std::size_t w = 5;
    for (auto& i : g.info()) w = std::max(w, i.name.size());
    std::string out = fmt::format("{:<{}}  {:>10}  {:>12}  {:>7}  {:>10}\n", "group", w, "lr",
                                  "weight_decay", "tensors", "elements");
    for (auto& i : g.info())
      out += fmt::format("{:<{}}  {:>10.4g}  {:>12}  {:>7}  {:>10}\n", i.name, w, i.lr,
                         i.weight_decay ? fmt::format("{:.4g}", *i.weight_decay) : std::string("-"), i.tensors,
                         i.elements);
    if (verbose)
      for (auto& p : g.parameters())
        out += fmt::format("  {} [{}] {} {}\n", p.path, graft::detail::join(p.shape(), ", "),
                           p.group ? g.names()[*p.group] : std::string("(no group)"),
                           p.trainable ? "trainable" : "frozen");
    return graft::detail::write_text(ctx, out);
  }
};

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/optim/detail/named_param_groups-inl.hpp>
#endif
