#pragma once
// param_groups(module): named optimizer param groups from selectors, for any libtorch optimizer.
//   auto groups = graft::param_groups(*net)
//                     .group("head", "fc.**"_glob, {.lr_scale = 10})
//                     .group("no_decay", graft::bias | graft::norm_layers, {.weight_decay = 0})
//                     .rest("backbone")
//                     .build(torch::optim::SGDOptions(1e-3).momentum(0.9).weight_decay(1e-3));
//   auto opt = groups.make_optimizer<torch::optim::SGD>();   // build()'s options as its defaults
// The first group (in declaration order) whose selector matches a parameter takes it; every
// trainable parameter must land in a group; a group that takes nothing is an error.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <torch/optim/lbfgs.h>
#include <torch/optim/optimizer.h>

#include <graft/error.hpp>
#include <graft/optim/detail/named_param_groups.hpp>
#include <graft/optim/detail/param_group_spec.hpp>
#include <graft/optim/options.hpp>
#include <graft/select/basic.hpp>
#include <graft/select/regex.hpp>
#include <graft/select/select.hpp>
#include <graft/select/tensor.hpp>

namespace graft {

/// timm's no-weight-decay set: every tensor with ndim <= 1 (biases, norm scales) and every bias.
inline const auto no_weight_decay = labeled((ndim <= 1) | bias, "no_weight_decay");

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
      if (!detail::full_match_capture(re, path, id)) return unmatched;
      return id + offset;
    });
  }

  /// Makes the groups: each one `base` with the group's learning rate, weight decay and
  /// settings. Throws selection_error for a group that takes nothing or for trainable
  /// parameters left in no group, option_error for contradictory settings.
  template <optimizer_options O>
  named_param_groups build(const O& base) const {
    named_param_groups out;
    out.defaults_ = std::make_shared<const O>(base);
    const auto matchers = spec_matchers();
    auto placed = detail::place_parameters(*module_, matchers, split_, out.params_, out.paths_);
    detail::check_groups(*module_, matchers, placed.taken);
    if constexpr (!has_rest) detail::check_leftovers(placed.leftovers);
    for (auto slot : placed.order(out.params_))
      add_group(out, base, placed.keys[slot], std::move(placed.members[slot]));
    if constexpr (std::is_same_v<O, torch::optim::LBFGSOptions>) detail::require_single_group(out);
    return out;
  }

private:
  // The declared groups with their selectors behind pointers, for the non-template code.
  std::vector<detail::spec_matcher> spec_matchers() const {
    std::vector<detail::spec_matcher> matchers;
    matchers.reserve(sizeof...(Specs));
    std::apply([&](const auto&... spec) { (matchers.push_back(matcher_of(spec)), ...); }, specs_);
    return matchers;
  }
  template <class Spec>
  static detail::spec_matcher matcher_of(const Spec& spec) {
    using S = std::remove_cvref_t<decltype(spec.sel)>;
    detail::spec_matcher m{&spec.sel, &detail::erased_matches<S>, spec.opts.include_frozen, &spec.name, nullptr, nullptr};
    if constexpr (!allows_empty<S>) {
      m.count = [](const torch::nn::Module& module, const void* sel) {
        return detail::for_each_match(module, *static_cast<const S*>(sel), {}, detail::ignore_match{});
      };
      m.explain = [](const void* sel, std::string& description, std::string& pattern) {
        description = static_cast<const S*>(sel)->describe();
        pattern = detail::pattern_text(*static_cast<const S*>(sel));
      };
    }
    return m;
  }

  // Makes the group of one slot: `base` with its declared group's settings, then its layer's
  // learning-rate decay and its decay half.
  template <class O>
  void add_group(named_param_groups& out, const O& base, const detail::placement::slot_key& k,
                 std::vector<torch::Tensor> group_members) const {
    O opts = base;
    const std::string* group = nullptr;
    visit_spec(k.spec, [&](const auto& spec) {
      group = &spec.name;
      apply_common(opts, base, spec);
      std::apply([&](const auto&... s) { (s.apply(opts), ...); }, spec.settings);
    });
    if (split_.layer_of) opts.lr(opts.lr() * std::pow(split_.layer_decay, split_.num_layers - k.layer));
    std::optional<double> weight_decay;
    if constexpr (has_weight_decay<O>) {
      if (k.no_decay) opts.weight_decay(0.0);
      weight_decay = opts.weight_decay();
    } else if (k.no_decay) {
      throw option_error("no_decay(): this optimizer has no weight decay to turn off");
    }
    double lr = opts.lr();
    out.add_group(detail::slot_name(*group, k, split_), lr, weight_decay, std::move(group_members),
                  std::make_unique<O>(std::move(opts)));
  }

  template <class F>
  void visit_spec(std::size_t i, F&& f) const {
    std::size_t k = 0;
    std::apply([&](const auto&... spec) { ((k++ == i ? f(spec) : void()), ...); }, specs_);
  }

  template <class O, class Spec>
  static void apply_common(O& opts, const O& base, const Spec& spec) {
    const auto& g = spec.opts;
    if (g.lr && g.lr_scale) detail::throw_group_option(spec.name, "sets both lr and lr_scale; give one");
    if (g.lr) opts.lr(*g.lr);
    if (g.lr_scale) opts.lr(base.lr() * *g.lr_scale);
    if (g.weight_decay && g.weight_decay_scale)
      detail::throw_group_option(spec.name, "sets both weight_decay and weight_decay_scale; give one");
    if constexpr (has_weight_decay<O>) {
      if (g.weight_decay) opts.weight_decay(*g.weight_decay);
      if (g.weight_decay_scale) opts.weight_decay(base.weight_decay() * *g.weight_decay_scale);
    } else if (g.weight_decay || g.weight_decay_scale) {
      detail::throw_group_option(spec.name, "sets a weight decay, but this optimizer has none");
    }
  }

  torch::nn::Module* module_;
  std::tuple<Specs...> specs_;
  detail::split_options split_;
};

/// Starts declaring named param groups over `module`'s parameters.
inline param_groups_builder<> param_groups(torch::nn::Module& module) { return {module, {}, {}}; }

} // namespace graft

