#pragma once
// What param_groups' builder holds and what its build() computes before it makes any group:
// the declared groups (group_spec), the settings that split every group (split_options), and
// where each parameter went (placement).

#include <algorithm>
#include <compare>
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

#include <torch/nn/module.h>
#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/optim/detail/named_param_groups.hpp>
#include <graft/select/basic.hpp>
#include <graft/walk/tensor_view.hpp>

namespace graft {

/// The settings every optimizer shares, per group: {.lr_scale = 10}, {.weight_decay = 0}.
struct group_options {
  std::optional<double> lr{};                  ///< absolute learning rate
  std::optional<double> lr_scale{};            ///< multiplies the base learning rate
  std::optional<double> weight_decay{};        ///< absolute weight decay
  std::optional<double> weight_decay_scale{};  ///< multiplies the base weight decay
  bool include_frozen = false;                 ///< also take parameters that do not require grad
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

// Where build() put the parameters. A parameter's destination (its slot) is its declared
// group, its layer id and its decay half; few distinct ones exist, so a linear search over
// them beats sorting the parameters.
struct placement {
  struct slot_key {
    std::size_t spec;
    int layer;
    bool no_decay;
    auto operator<=>(const slot_key&) const = default;
  };
  std::vector<slot_key> keys;                      // the slots, in order of first use
  std::vector<std::vector<torch::Tensor>> members;  // parallel to keys
  std::vector<std::size_t> taken;                   // per declared group: the parameters it took
  std::vector<std::string> leftovers;               // trainable parameters no group took

  GRAFT_FUNC explicit placement(std::size_t specs);
  GRAFT_FUNC placement(placement&&) noexcept;
  GRAFT_FUNC ~placement();

  // Adds `p` to the slot `key`; returns the slot's index in keys.
  GRAFT_FUNC std::size_t add(slot_key key, const torch::Tensor& p);

  // The slots as groups: in declaration order; within one, by layer id, then the decayed half
  // first. Renumbers each parameter's slot index in `params` into its group's index.
  GRAFT_FUNC std::vector<std::size_t> order(std::vector<named_param_groups::parameter_info>& params) const;
};

// A declared group as the placement sees it: its selector behind a pointer, so that walking
// the parameters is compiled once, not once per combination of selectors.
struct spec_matcher {
  const void* sel;
  bool (*matches)(const void* sel, const tensor_view& t);
  bool include_frozen;
  const std::string* name;
  // For a group that took nothing: the parameters its selector matches in all, and its
  // description and pattern. explain is null for a selector that may match nothing.
  std::size_t (*count)(const torch::nn::Module& module, const void* sel);
  void (*explain)(const void* sel, std::string& description, std::string& pattern);
};
template <class S>
bool erased_matches(const void* sel, const tensor_view& t) {
  return static_cast<const S*>(sel)->matches(t);
}

// Walks `module`'s parameters, recording each one in `params`, and puts each one in the first
// of `specs` that takes it (a trainable parameter, or any with include_frozen), split by layer
// id and decay half. A parameter's group in `params` is its slot index for now.
GRAFT_FUNC placement place_parameters(const torch::nn::Module& module, const std::vector<spec_matcher>& specs,
                                      const split_options& split,
                                      std::vector<named_param_groups::parameter_info>& params,
                                      std::shared_ptr<const std::string>& paths);

// Throws selection_error naming trainable parameters that no group took (when no rest()).
GRAFT_FUNC void check_leftovers(const std::vector<std::string>& leftovers);

// Throws the error for the first group of `specs` that took nothing (`taken`, parallel to
// `specs`) and may not be empty.
GRAFT_FUNC void check_groups(const torch::nn::Module& module, const std::vector<spec_matcher>& specs,
                             const std::vector<std::size_t>& taken);

// Throws the error for the group `name` that took nothing: its selector matched nothing at
// all (`matched` == 0: did-you-mean), or earlier groups took everything it matched.
[[noreturn]] GRAFT_FUNC void throw_empty_group(const torch::nn::Module& module, const std::string& name,
                                               std::size_t matched, const std::string& description,
                                               const std::string& pattern, const std::vector<std::string>& earlier);

// Throws option_error "param group '<group>' <problem>".
[[noreturn]] GRAFT_FUNC void throw_group_option(std::string_view group, std::string_view problem);

// The name of one slot's group: its declared group's name, ".layer<id>" with layer decay,
// ".no_decay" for the decay-free half.
GRAFT_FUNC std::string slot_name(const std::string& group, const placement::slot_key& k, const split_options& split);

// LBFGS optimizes one param group: option_error if the build made more.
GRAFT_FUNC void require_single_group(const named_param_groups& groups);

} // namespace detail
} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/optim/detail/param_group_spec-inl.hpp>
#endif
