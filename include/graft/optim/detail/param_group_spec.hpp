#pragma once
// What param_groups' builder holds and what its build() computes before it makes any group:
// the declared groups (group_spec), the settings that split every group (split_options), and
// where each parameter went (placement).

#include <algorithm>
#include <compare>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include <torch/types.h>

#include <graft/optim/detail/named_param_groups.hpp>
#include <graft/select/basic.hpp>
#include <graft/walk/tensor_view.hpp>

namespace graft {

/// The settings every optimizer shares, per group: {.lr_scale = 10}, {.weight_decay = 0}.
struct group_options {
  std::optional<double> lr;                  ///< absolute learning rate
  std::optional<double> lr_scale;            ///< multiplies the base learning rate
  std::optional<double> weight_decay;        ///< absolute weight decay
  std::optional<double> weight_decay_scale;  ///< multiplies the base weight decay
  bool include_frozen = false;               ///< also take parameters that do not require grad
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

  explicit placement(std::size_t specs) : taken(specs, 0) {}

  // Adds `p` to the slot `key`; returns the slot's index in keys.
  std::size_t add(slot_key key, const torch::Tensor& p) {
    auto k = static_cast<std::size_t>(std::find(keys.begin(), keys.end(), key) - keys.begin());
    if (k == keys.size()) {
      keys.push_back(key);
      members.emplace_back();
    }
    members[k].push_back(p);
    ++taken[key.spec];
    return k;
  }

  // The slots as groups: in declaration order; within one, by layer id, then the decayed half
  // first. Renumbers each parameter's slot index in `params` into its group's index.
  std::vector<std::size_t> order(std::vector<named_param_groups::parameter_info>& params) const {
    std::vector<std::size_t> by(keys.size()), rank(keys.size());
    for (std::size_t i = 0; i < by.size(); ++i) by[i] = i;
    std::sort(by.begin(), by.end(), [&](std::size_t a, std::size_t b) { return keys[a] < keys[b]; });
    for (std::size_t g = 0; g < by.size(); ++g) rank[by[g]] = g;
    for (auto& info : params)
      if (info.group) info.group = rank[*info.group];
    return by;
  }
};

} // namespace detail
} // namespace graft
