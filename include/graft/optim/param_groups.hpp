#pragma once
// param_groups(module): named optimizer param groups from selectors, for any libtorch optimizer.
//   auto groups = graft::param_groups(*net)
//                     .group("head", "fc.**"_glob, {.lr_scale = 10})
//                     .group("no_decay", graft::bias | graft::norm_layers, {.weight_decay = 0})
//                     .rest("backbone")
//                     .build(torch::optim::SGDOptions(1e-3).momentum(0.9).weight_decay(1e-3));
//   torch::optim::SGD opt(groups, torch::optim::SGDOptions(1e-3));
// The first group (in declaration order) whose selector matches a parameter takes it; every
// trainable parameter must land in a group; a group that takes nothing is an error.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/optimizer.h>
#include <torch/version.h>

#include <graft/error.hpp>
#include <graft/optim/options.hpp>
#include <graft/select/basic.hpp>
#include <graft/select/regex.hpp>
#include <graft/select/select.hpp>
#include <graft/select/tensor.hpp>

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

/// The settings every optimizer shares, per group: {.lr_scale = 10}, {.weight_decay = 0}.
struct group_options {
  std::optional<double> lr;                  ///< absolute learning rate
  std::optional<double> lr_scale;            ///< multiplies the base learning rate
  std::optional<double> weight_decay;        ///< absolute weight decay
  std::optional<double> weight_decay_scale;  ///< multiplies the base weight decay
  bool include_frozen = false;               ///< also take parameters that do not require grad
};

/// timm's no-weight-decay set: every tensor with ndim <= 1 (biases, norm scales) and every bias.
inline const auto no_weight_decay = labeled((ndim <= 1) | bias, "no_weight_decay");

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
    std::string path;
    torch::Tensor tensor;
    bool trainable;
    std::optional<std::size_t> group;  ///< empty for a frozen parameter left out
    torch::IntArrayRef shape() const { return tensor.sizes(); }
  };

  /// libtorch's param groups, in declaration order.
  const std::vector<torch::optim::OptimizerParamGroup>& groups() const noexcept { return groups_; }
  /// Passes straight to an optimizer: torch::optim::SGD opt(groups, defaults). From libtorch
  /// 2.9 that constructor replaces every group option equal to its options class's default
  /// (weight_decay 0, an lr of 1e-3, ...) with the optimizer's default, so a no-decay group
  /// decays again: there, use make_optimizer, which installs the groups as built.
#if GRAFT_OPTIMIZER_MERGES_GROUP_OPTIONS
  [[deprecated("libtorch >= 2.9's optimizer constructor overwrites group options that equal their "
               "class's defaults (a no-decay group's weight_decay 0): use groups.make_optimizer<Opt>(defaults)")]]
#endif
  operator std::vector<torch::optim::OptimizerParamGroup>() const { return groups_; }
  std::size_t size() const noexcept { return groups_.size(); }
  /// Group names, parallel to groups() and to an optimizer's param_groups().
  const std::vector<std::string>& names() const noexcept { return names_; }
  const std::vector<group_info>& info() const noexcept { return info_; }
  /// Every parameter of the model (tied ones once), in named_parameters() order.
  const std::vector<parameter_info>& parameters() const noexcept { return params_; }

  /// The index of the group called `name` (the same in the optimizer); key_error if none.
  std::size_t index_of(std::string_view name) const {
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) return i;
    throw key_error(fmt::format("no param group named '{}'; the groups are '{}'", name, fmt::join(names_, "', '")));
  }
  /// The group called `name`.
  const torch::optim::OptimizerParamGroup& operator[](std::string_view name) const { return groups_[index_of(name)]; }
  /// The name of the group that holds the parameter at `path`, if any.
  std::optional<std::string_view> group_of(std::string_view path) const {
    for (auto& p : params_)
      if (p.path == path) return p.group ? std::optional<std::string_view>(names_[*p.group]) : std::nullopt;
    return std::nullopt;
  }

  /// Constructs optimizer `Opt` (torch::optim::SGD, Adam, ...) over these groups. Equal to
  /// Opt(groups, defaults), but skips libtorch's per-parameter duplicate check (a string
  /// built per parameter), which the build already guarantees: each tensor is in one group.
  template <class Opt, optimizer_options O>
    requires std::derived_from<Opt, torch::optim::Optimizer> && std::constructible_from<Opt, std::vector<torch::Tensor>, O>
  Opt make_optimizer(const O& defaults) const {
    Opt opt(std::vector<torch::Tensor>{}, defaults);
    auto& installed = opt.param_groups();
    installed.clear();
    installed.reserve(groups_.size());
    for (auto& g : groups_) installed.push_back(g);  // copies clone the options
    return opt;
  }

private:
  template <class...> friend class param_groups_builder;
  std::vector<torch::optim::OptimizerParamGroup> groups_;
  std::vector<std::string> names_;
  std::vector<group_info> info_;
  std::vector<parameter_info> params_;
};

namespace detail {

// The selector of rest(): every parameter no earlier group took.
struct rest_t : everything_t {
  std::string describe() const { return "rest"; }
};

template <class Sel, class... Settings>
struct group_spec {
  std::string name;
  Sel sel;
  group_options opts;
  std::tuple<Settings...> settings;
  static constexpr bool is_rest = std::is_same_v<Sel, rest_t>;
};

template <class T>
inline constexpr bool is_rest_spec = T::is_rest;

// Everything the build needs that is not a group's own.
struct split_options {
  std::optional<std::function<bool(const tensor_view&)>> no_decay;
  std::optional<std::function<int(std::string_view)>> layer_of;
  double layer_decay = 1.0;
  int num_layers = 0;
};


} // namespace detail

/// Declares named groups one by one, then build(options) makes them. Each call returns a new
/// builder: chain the calls.
template <class... Specs>
class param_groups_builder {
  static constexpr bool has_rest = (detail::is_rest_spec<Specs> || ... || false);

public:
  param_groups_builder(torch::nn::Module& module, std::tuple<Specs...> specs, detail::split_options split)
      : module_(&module), specs_(std::move(specs)), split_(std::move(split)) {}

  /// A group called `name` of the parameters `sel` selects that no earlier group took, with its
  /// learning rate and weight decay in `opts` and any optimizer option in `settings`
  /// (graft::opt::momentum(0.5), graft::opt::custom(f), ...).
  template <selector S, group_setting... Settings>
  auto group(std::string name, S sel, group_options opts = {}, Settings... settings) && {
    static_assert(!has_rest, "param_groups: group() after rest(): rest takes every parameter left, so declare it last");
    using spec = detail::group_spec<S, Settings...>;
    return param_groups_builder<Specs..., spec>(
        *module_,
        std::tuple_cat(std::move(specs_), std::tuple<spec>(spec{std::move(name), std::move(sel), opts, {settings...}})),
        std::move(split_));
  }

  /// A last group called `name` of every parameter no other group took.
  template <group_setting... Settings>
  auto rest(std::string name, group_options opts = {}, Settings... settings) && {
    static_assert(!has_rest, "param_groups: rest() given twice");
    using spec = detail::group_spec<detail::rest_t, Settings...>;
    return param_groups_builder<Specs..., spec>(
        *module_, std::tuple_cat(std::move(specs_), std::tuple<spec>(spec{std::move(name), {}, opts, {settings...}})),
        std::move(split_));
  }

  /// Splits every group in two: "<name>" and "<name>.no_decay", the tensors `sel` selects
  /// (timm's rule by default: ndim <= 1 or a bias), with weight decay 0.
  template <selector S = std::remove_cvref_t<decltype(no_weight_decay)>>
  param_groups_builder no_decay(S sel = no_weight_decay) && {
    split_.no_decay = [sel = std::move(sel)](const tensor_view& t) { return sel.matches(t); };
    return std::move(*this);
  }

  /// Layer-wise learning-rate decay (BEiT, timm): every group is split by layer id into
  /// "<name>.layer<id>", whose lr is multiplied by decay^(num_layers - id); `layer_of(path)`
  /// gives the id (0 for the stem, num_layers for the head).
  template <class F>
    requires std::is_invocable_r_v<int, const F&, std::string_view>
  param_groups_builder layer_decay(double decay, int num_layers, F layer_of) && {
    split_.layer_of = std::function<int(std::string_view)>(std::move(layer_of));
    split_.layer_decay = decay;
    split_.num_layers = num_layers;
    return std::move(*this);
  }
  /// Layer-wise decay with the id taken from `re`'s first capture plus `offset`; a path that
  /// does not match gets `unmatched`.
  param_groups_builder layer_decay(double decay, int num_layers, const regex& re, int offset = 0, int unmatched = 0) && {
    return std::move(*this).layer_decay(decay, num_layers, [re, offset, unmatched](std::string_view path) {
      int id = 0;
      if (!RE2::FullMatch(re2::StringPiece(path.data(), path.size()), re.compiled(), &id)) return unmatched;
      return id + offset;
    });
  }

  /// Makes the groups: each one `base` with the group's learning rate, weight decay and
  /// settings. Throws selection_error for a group that takes nothing or for trainable
  /// parameters left in no group, option_error for contradictory settings.
  template <optimizer_options O>
  named_param_groups build(const O& base) const {
    named_param_groups out;
    constexpr std::size_t n_specs = sizeof...(Specs);
    std::vector<std::size_t> taken(n_specs, 0);

    // A parameter's destination: its declared group, layer id and decay half. Few distinct
    // ones exist, so a linear search over them beats sorting the parameters.
    struct slot_key {
      std::size_t spec;
      int layer;
      bool no_decay;
      auto operator<=>(const slot_key&) const = default;
    };
    std::vector<slot_key> keys;
    std::vector<std::vector<torch::Tensor>> members;
    std::vector<std::string> leftovers;

    for (auto t : walk(*module_)) {
      const auto& p = t.tensor();
      bool trainable = p.requires_grad();
      out.params_.push_back({std::string(t.path()), p, trainable, std::nullopt});
      std::size_t index = 0;
      bool found = false;
      auto try_spec = [&](const auto& spec) {
        if (found) return;
        if ((trainable || spec.opts.include_frozen) && spec.sel.matches(t))
          found = true;
        else
          ++index;
      };
      std::apply([&](const auto&... spec) { (try_spec(spec), ...); }, specs_);
      if (!found) {
        if (trainable) leftovers.emplace_back(t.path());
        continue;
      }
      ++taken[index];
      int layer = split_.layer_of ? (*split_.layer_of)(t.path()) : 0;
      bool nd = split_.no_decay && (*split_.no_decay)(t);
      slot_key key{index, layer, nd};
      auto k = static_cast<std::size_t>(std::find(keys.begin(), keys.end(), key) - keys.begin());
      if (k == keys.size()) {
        keys.push_back(key);
        members.emplace_back();
      }
      members[k].push_back(p);
      out.params_.back().group = k;  // an index into keys for now; a group index below
    }

    check_groups(taken);
    if (!leftovers.empty() && !has_rest) {
      std::size_t shown = std::min<std::size_t>(leftovers.size(), 5);
      throw selection_error(fmt::format(
          "param groups leave {} trainable parameters in no group: '{}'{} (add a group for them, or "
          ".rest(\"name\"), or freeze them)",
          leftovers.size(), fmt::join(leftovers.begin(), leftovers.begin() + shown, "', '"),
          leftovers.size() > shown ? ", ..." : ""));
    }

    // Groups in declaration order; within one, by layer id, then the decayed half first.
    std::vector<std::size_t> order(keys.size()), rank(keys.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return keys[a] < keys[b]; });
    for (std::size_t g = 0; g < order.size(); ++g) rank[order[g]] = g;
    for (auto& info : out.params_)
      if (info.group) info.group = rank[*info.group];

    for (std::size_t g = 0; g < order.size(); ++g) {
      const auto& k = keys[order[g]];
      auto& group_members = members[order[g]];
      O opts = base;
      std::string name;
      visit_spec(k.spec, [&](const auto& spec) {
        name = spec.name;
        apply_common(opts, base, spec);
        std::apply([&](const auto&... s) { (s.apply(opts), ...); }, spec.settings);
      });
      if (split_.layer_of) {
        name += fmt::format(".layer{}", k.layer);
        opts.lr(opts.lr() * std::pow(split_.layer_decay, split_.num_layers - k.layer));
      }
      if (k.no_decay) {
        name += ".no_decay";
        if constexpr (has_weight_decay<O>)
          opts.weight_decay(0.0);
        else
          throw option_error("no_decay(): this optimizer has no weight decay to turn off");
      }
      for (auto& existing : out.names_)
        if (existing == name)
          throw option_error(fmt::format("two param groups are named '{}'", name));
      named_param_groups::group_info info{name, opts.lr(), std::nullopt, group_members.size(), 0};
      if constexpr (has_weight_decay<O>) info.weight_decay = opts.weight_decay();
      for (auto& p : group_members) info.elements += p.numel();
      out.names_.push_back(name);
      out.info_.push_back(std::move(info));
      out.groups_.emplace_back(std::move(group_members), std::make_unique<O>(std::move(opts)));
    }
    if constexpr (std::is_same_v<O, torch::optim::LBFGSOptions>)
      if (out.groups_.size() > 1)
        throw option_error(fmt::format("LBFGS optimizes a single param group; these settings make {} ('{}')",
                                       out.groups_.size(), fmt::join(out.names_, "', '")));
    return out;
  }

private:
  template <class F>
  void visit_spec(std::size_t i, F&& f) const {
    std::size_t k = 0;
    std::apply([&](const auto&... spec) { ((k++ == i ? f(spec) : void()), ...); }, specs_);
  }

  template <class O, class Spec>
  static void apply_common(O& opts, const O& base, const Spec& spec) {
    const auto& g = spec.opts;
    if (g.lr && g.lr_scale)
      throw option_error(fmt::format("param group '{}' sets both lr and lr_scale; give one", spec.name));
    if (g.lr) opts.lr(*g.lr);
    if (g.lr_scale) opts.lr(base.lr() * *g.lr_scale);
    if (g.weight_decay && g.weight_decay_scale)
      throw option_error(fmt::format("param group '{}' sets both weight_decay and weight_decay_scale; give one", spec.name));
    if constexpr (has_weight_decay<O>) {
      if (g.weight_decay) opts.weight_decay(*g.weight_decay);
      if (g.weight_decay_scale) opts.weight_decay(base.weight_decay() * *g.weight_decay_scale);
    } else if (g.weight_decay || g.weight_decay_scale) {
      throw option_error(fmt::format("param group '{}' sets a weight decay, but this optimizer has none", spec.name));
    }
  }

  // A group that took nothing is an error: either its selector matched nothing at all
  // (did-you-mean), or earlier groups took everything it matched.
  void check_groups(const std::vector<std::size_t>& taken) const {
    std::size_t i = 0;
    std::vector<std::string> earlier;
    std::apply(
        [&](const auto&... spec) {
          (
              [&] {
                std::size_t index = i++;
                if (taken[index] == 0) check_empty(spec, earlier);
                earlier.push_back(spec.name);
                (void)index;
              }(),
              ...);
        },
        specs_);
  }

  template <class Spec>
  void check_empty(const Spec& spec, const std::vector<std::string>& earlier) const {
    if constexpr (allows_empty<decltype(spec.sel)>) {
      return;
    } else {
      std::size_t n = detail::for_each_match(*module_, spec.sel, {}, [](const tensor_view&) {});
      if (n == 0) {
        auto e = detail::empty_selection(*module_, spec.sel.describe(), detail::pattern_text(spec.sel), {});
        throw selection_error(fmt::format("param group '{}': {}", spec.name, e.text()));
      }
      throw selection_error(fmt::format(
          "param group '{}' is empty: its {} parameters matched by '{}' are frozen or taken by earlier groups ('{}')",
          spec.name, n, spec.sel.describe(), fmt::join(earlier, "', '")));
    }
  }

  torch::nn::Module* module_;
  std::tuple<Specs...> specs_;
  detail::split_options split_;
};

/// Starts declaring named param groups over `module`'s parameters.
inline param_groups_builder<> param_groups(torch::nn::Module& module) { return {module, {}, {}}; }

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
    auto out = fmt::format_to(ctx.out(), "{:<{}}  {:>10}  {:>12}  {:>7}  {:>10}\n", "group", w, "lr",
                              "weight_decay", "tensors", "elements");
    for (auto& i : g.info())
      out = fmt::format_to(out, "{:<{}}  {:>10.4g}  {:>12}  {:>7}  {:>10}\n", i.name, w, i.lr,
                           i.weight_decay ? fmt::format("{:.4g}", *i.weight_decay) : std::string("-"), i.tensors,
                           i.elements);
    if (verbose)
      for (auto& p : g.parameters())
        out = fmt::format_to(out, "  {} [{}] {} {}\n", p.path, fmt::join(p.shape(), ", "),
                             p.group ? g.names()[*p.group] : std::string("(no group)"),
                             p.trainable ? "trainable" : "frozen");
    return out;
  }
};
