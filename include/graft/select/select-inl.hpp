#pragma once
// The definitions of select/select.hpp: the "matched nothing" error and its suggestions.

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/detail/order.hpp>
#include <graft/error.hpp>
#include <graft/select/select.hpp>
#include <graft/walk/walk.hpp>

namespace graft::detail {

GRAFT_FUNC std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

GRAFT_FUNC std::vector<std::string> nearest_names(std::string_view wanted, std::vector<std::string> candidates,
                                                  std::size_t most, bool same_leaf) {
  // Candidates in name order, each once, then the nearest first (ties stay in name order).
  std::vector<std::size_t> distance;
  std::vector<std::string*> scored;
  std::size_t limit = std::max<std::size_t>(3, wanted.size() / 2);
  const std::string* previous = nullptr;
  for (auto i : stable_order(candidates.size(), [&](std::size_t a, std::size_t b) { return candidates[a] < candidates[b]; })) {
    auto& c = candidates[i];
    if (previous && *previous == c) continue;
    previous = &c;
    auto d = edit_distance(wanted, c);
    if (d <= limit || (same_leaf && leaf_name(c) == leaf_name(wanted))) distance.push_back(d), scored.push_back(&c);
  }
  std::vector<std::string> out;
  for (auto i : stable_order(scored.size(), [&](std::size_t a, std::size_t b) { return distance[a] < distance[b]; })) {
    if (out.size() == most) break;
    out.push_back(std::move(*scored[i]));
  }
  return out;
}

inline std::string kind_text(walk_options o) {
  return o.parameters && o.buffers ? "tensors" : o.buffers ? "buffers" : "parameters";
}

GRAFT_FUNC selection_error empty_selection(const torch::nn::Module& m, const std::string& description,
                                           const std::string& pattern, walk_options opts) {
  std::vector<std::string> candidates;
  std::size_t count = 0;
  for (auto t : walk(m, opts)) {
    ++count;
    std::string_view path = t.path();
    candidates.emplace_back(path);
    for (auto dot = path.find('.'); dot != std::string_view::npos; dot = path.find('.', dot + 1))
      candidates.push_back(std::string(path.substr(0, dot)) + ".**");  // every enclosing module
  }
  auto near = nearest_names(pattern, std::move(candidates));
  std::string msg = fmt::format("'{}' matched none of the {} {} of {}", description, count,
                                kind_text(opts), m.name());
  if (!near.empty()) {
    msg += "; did you mean ";
    for (std::size_t i = 0; i < near.size(); ++i)
      msg += (i ? (i + 1 == near.size() ? " or '" : ", '") : "'") + near[i] + "'";
    msg += "?";
  }
  msg += " (wrap the selector in graft::optional(...) if matching nothing is fine)";
  return selection_error(msg);
}

} // namespace graft::detail
