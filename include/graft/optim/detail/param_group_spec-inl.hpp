#pragma once
// The definitions of optim/detail/param_group_spec.hpp: where build() puts each parameter, and
// the errors of groups that take nothing or contradict themselves.

#include <algorithm>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/detail/join.hpp>
#include <graft/detail/order.hpp>
#include <graft/error.hpp>
#include <graft/optim/detail/named_param_groups.hpp>
#include <graft/optim/detail/param_group_spec.hpp>
#include <graft/select/select.hpp>
#include <graft/walk/walk.hpp>

namespace graft::detail {

GRAFT_FUNC placement::placement(std::size_t specs) : taken(specs, 0) {}
GRAFT_FUNC placement::placement(placement&&) noexcept = default;
GRAFT_FUNC placement::~placement() = default;

GRAFT_FUNC std::size_t placement::add(slot_key key, const torch::Tensor& p) {
  auto k = static_cast<std::size_t>(std::find(keys.begin(), keys.end(), key) - keys.begin());
  if (k == keys.size()) {
    keys.push_back(key);
    members.emplace_back();
  }
  members[k].push_back(p);
  ++taken[key.spec];
  return k;
}

GRAFT_FUNC std::vector<std::size_t> placement::order(std::vector<named_param_groups::parameter_info>& params) const {
  auto by = stable_order(keys.size(), [&](std::size_t a, std::size_t b) { return keys[a] < keys[b]; });
  std::vector<std::size_t> rank(keys.size());
  for (std::size_t g = 0; g < by.size(); ++g) rank[by[g]] = g;
  for (auto& info : params)
    if (info.group) info.group = rank[*info.group];
  return by;
}

GRAFT_FUNC placement place_parameters(const torch::nn::Module& module, const std::vector<spec_matcher>& specs,
                                      const split_options& split,
                                      std::vector<named_param_groups::parameter_info>& params,
                                      std::shared_ptr<const std::string>& paths) {
  placement placed(specs.size());
  // The paths go end to end into one buffer (one allocation, not one per parameter); each
  // parameter's view is set once the buffer is complete.
  std::string buffer;
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  buffer.reserve(4096);
  spans.reserve(256);
  params.reserve(256);
  for (auto t : walk(module)) {
    const auto& p = t.tensor();
    bool trainable = p.requires_grad();
    spans.emplace_back(buffer.size(), t.path().size());
    buffer += t.path();
    params.push_back({std::string_view(), p, trainable, std::nullopt});
    std::size_t index = 0;
    while (index < specs.size() &&
           !((trainable || specs[index].include_frozen) && specs[index].matches(specs[index].sel, t)))
      ++index;
    if (index == specs.size()) {
      if (trainable) placed.leftovers.emplace_back(t.path());
      continue;
    }
    int layer = split.layer_of ? (*split.layer_of)(t.path()) : 0;
    bool nd = split.no_decay && (*split.no_decay)(t);
    params.back().group = placed.add({index, layer, nd}, p);
  }
  paths = std::make_shared<const std::string>(std::move(buffer));
  for (std::size_t i = 0; i < params.size(); ++i) params[i].path = std::string_view(*paths).substr(spans[i].first, spans[i].second);
  return placed;
}

GRAFT_FUNC void check_leftovers(const std::vector<std::string>& leftovers) {
  if (leftovers.empty()) return;
  std::size_t shown = std::min<std::size_t>(leftovers.size(), 5);
  throw selection_error(fmt::format(
      "param groups leave {} trainable parameters in no group: '{}'{} (add a group for them, or "
      ".rest(\"name\"), or freeze them)",
      leftovers.size(), graft::detail::join(leftovers.begin(), leftovers.begin() + shown, "', '"),
      leftovers.size() > shown ? ", ..." : ""));
}

GRAFT_FUNC void throw_empty_group(const torch::nn::Module& module, const std::string& name, std::size_t matched,
                                  const std::string& description, const std::string& pattern,
                                  const std::vector<std::string>& earlier) {
  if (matched == 0) {
    auto e = empty_selection(module, description, pattern, {});
    throw selection_error(fmt::format("param group '{}': {}", name, e.text()));
  }
  throw selection_error(fmt::format(
      "param group '{}' is empty: its {} parameters matched by '{}' are frozen or taken by earlier groups ('{}')",
      name, matched, description, graft::detail::join(earlier, "', '")));
}

GRAFT_FUNC void check_groups(const torch::nn::Module& module, const std::vector<spec_matcher>& specs,
                             const std::vector<std::size_t>& taken) {
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    if (taken[i] != 0 || !s.explain) continue;
    std::string description, pattern;
    s.explain(s.sel, description, pattern);
    std::vector<std::string> earlier;
    for (std::size_t j = 0; j < i; ++j) earlier.push_back(*specs[j].name);
    throw_empty_group(module, *s.name, s.count(module, s.sel), description, pattern, earlier);
  }
}

GRAFT_FUNC void throw_group_option(std::string_view group, std::string_view problem) {
  throw option_error(fmt::format("param group '{}' {}", group, problem));
}

GRAFT_FUNC std::string slot_name(const std::string& group, const placement::slot_key& k, const split_options& split) {
  std::string name = group;
  if (split.layer_of) name += fmt::format(".layer{}", k.layer);
  if (k.no_decay) name += ".no_decay";
  return name;
}

GRAFT_FUNC void require_single_group(const named_param_groups& groups) {
  if (groups.size() > 1)
    throw option_error(fmt::format("LBFGS optimizes a single param group; these settings make {} ('{}')",
                                   groups.size(), graft::detail::join(groups.names(), "', '")));
}

} // namespace graft::detail
