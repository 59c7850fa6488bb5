#pragma once
// explain(module, selector): what a selector matched and what it left, printable with fmt.

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <graft/detail/join.hpp>
#include <graft/detail/report_formatter.hpp>
#include <graft/select/select.hpp>

namespace graft {

/// The outcome of a selector on a model: every tensor, matched or not.
struct explanation {
  struct entry {
    std::string path;
    std::vector<std::int64_t> shape;
    std::int64_t numel;
    bool matched;
  };
  std::string selector;
  std::vector<entry> entries;

  std::size_t matched_count() const {
    return static_cast<std::size_t>(std::count_if(entries.begin(), entries.end(), [](auto& e) { return e.matched; }));
  }
};

/// Explains `sel` on `module`: each tensor (parameters by default) and whether it matched.
/// Never throws for an empty match: explaining one is the point.
template <selector S>
explanation explain(const torch::nn::Module& module, const S& sel, walk_options opts = {}) {
  explanation ex{sel.describe(), {}};
  for (auto t : walk(module, opts)) {
    auto sizes = t.tensor().sizes();
    ex.entries.push_back({std::string(t.path()), {sizes.begin(), sizes.end()}, t.tensor().numel(), sel.matches(t)});
  }
  return ex;
}

} // namespace graft

/// Prints the selector, then "+ path [shape]" per matched tensor and "- path" per other one.
template <>
struct fmt::formatter<graft::explanation> : graft::detail::report_formatter {
  template <class Ctx>
  auto format(const graft::explanation& ex, Ctx& ctx) const {
    std::int64_t all = 0, hit = 0;
    for (auto& e : ex.entries) {
      all += e.numel;
      if (e.matched) hit += e.numel;
    }
    std::string out = fmt::format("{}: matched {} of {} tensors ({} of {} elements)\n",
                                  ex.selector, ex.matched_count(), ex.entries.size(), hit, all);
    for (auto& e : ex.entries)
      out += fmt::format("  {} {} [{}]\n", e.matched ? '+' : '-', e.path, graft::detail::join(e.shape, ", "));
    return graft::detail::write_text(ctx, out);
  }
};
