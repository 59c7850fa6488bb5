#pragma once
// freeze / unfreeze: set requires_grad on the parameters a selector picks, and say what changed.
// Selecting nothing is an error (unless optional()): a freeze that silently froze nothing is
// the fine-tuning bug graft exists to prevent.

#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <graft/detail/report_formatter.hpp>
#include <graft/select/select.hpp>

namespace graft {

/// What a freeze or unfreeze did: how many parameters it selected and how many it changed.
struct freeze_result {
  std::string selector;             ///< the selector's description
  bool requires_grad = false;       ///< the value set: false for freeze, true for unfreeze
  std::size_t selected_tensors = 0;
  std::int64_t selected_elements = 0;
  std::size_t changed_tensors = 0;  ///< selected tensors whose requires_grad was different before
  std::int64_t changed_elements = 0;
};

namespace detail {
template <selector S>
freeze_result set_requires_grad(torch::nn::Module& module, const S& sel, bool on) {
  freeze_result r{sel.describe(), on};
  auto n = for_each_match(module, sel, walk_options::parameters_only(), [&](const tensor_view& t) {
    const auto& p = t.tensor();
    auto numel = p.numel();
    ++r.selected_tensors;
    r.selected_elements += numel;
    if (p.requires_grad() != on) {
      p.set_requires_grad(on);  // a handle: changes the model's parameter
      ++r.changed_tensors;
      r.changed_elements += numel;
    }
  });
  require_nonempty(n, module, sel, walk_options::parameters_only());
  return r;
}
} // namespace detail

/// Stops gradients for the parameters `sel` picks (requires_grad = false). Throws
/// selection_error, with did-you-mean, if it picks none, unless `sel` is optional(...).
template <selector S>
freeze_result freeze(torch::nn::Module& module, const S& sel) {
  return detail::set_requires_grad(module, sel, false);
}

/// Makes the parameters `sel` picks trainable again (requires_grad = true); as freeze.
template <selector S>
freeze_result unfreeze(torch::nn::Module& module, const S& sel) {
  return detail::set_requires_grad(module, sel, true);
}

/// The parameters that require grad, each tied tensor once, in named_parameters() order: what
/// to hand an optimizer when only part of a model trains.
inline std::vector<torch::Tensor> trainable_parameters(const torch::nn::Module& module) {
  std::vector<torch::Tensor> out;
  for (auto t : walk(module))
    if (t.tensor().requires_grad()) out.push_back(t.tensor());
  return out;
}

/// How much of a model trains: tensors and elements, trainable and frozen.
struct parameter_counts {
  std::size_t tensors = 0;
  std::int64_t elements = 0;
  std::size_t trainable_tensors = 0;
  std::int64_t trainable_elements = 0;

  std::size_t frozen_tensors() const noexcept { return tensors - trainable_tensors; }
  std::int64_t frozen_elements() const noexcept { return elements - trainable_elements; }
};

/// Counts `module`'s parameters (tied tensors once), trainable and frozen.
inline parameter_counts count_parameters(const torch::nn::Module& module) {
  parameter_counts c;
  for (auto t : walk(module)) {
    auto n = t.tensor().numel();
    ++c.tensors;
    c.elements += n;
    if (t.tensor().requires_grad()) {
      ++c.trainable_tensors;
      c.trainable_elements += n;
    }
  }
  return c;
}

} // namespace graft

/// "froze 60 of 62 tensors (11176512 elements) selected by 'not fc.**'" and, if some were
/// already frozen, how many changed.
template <>
struct fmt::formatter<graft::freeze_result> : graft::detail::report_formatter {
  template <class Ctx>
  auto format(const graft::freeze_result& r, Ctx& ctx) const {
    const char* verb = r.requires_grad ? "unfroze" : "froze";
    std::string out = fmt::format("{} {} tensors ({} elements) selected by '{}'", verb,
                                  r.changed_tensors, r.changed_elements, r.selector);
    if (r.changed_tensors != r.selected_tensors)
      out += fmt::format("; {} of the {} selected were already {}",
                         r.selected_tensors - r.changed_tensors, r.selected_tensors,
                         r.requires_grad ? "trainable" : "frozen");
    return graft::detail::write_text(ctx, out);
  }
};

/// "trainable: 513000 of 11689512 elements (4.39%) in 2 of 62 tensors".
template <>
struct fmt::formatter<graft::parameter_counts> : graft::detail::report_formatter {
  template <class Ctx>
  auto format(const graft::parameter_counts& c, Ctx& ctx) const {
    double pct = c.elements ? 100.0 * static_cast<double>(c.trainable_elements) / static_cast<double>(c.elements) : 0.0;
    return graft::detail::write_text(ctx, fmt::format("trainable: {} of {} elements ({:.2f}%) in {} of {} tensors",
                                                      c.trainable_elements, c.elements, pct, c.trainable_tensors, c.tensors));
  }
};
