#pragma once
// select(module, selector): the tensors a selector picks from a model, in PyTorch's order. An
// empty selection is an error that offers the nearest real names, unless the selector is
// marked optional(): a silent no-op is the most common fine-tuning bug.

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/select/concepts.hpp>
#include <graft/walk/walk.hpp>

namespace graft {

/// One selected tensor, owning its path.
struct selected_tensor {
  std::string path;
  torch::Tensor tensor;
  torch::nn::Module* owner;
  tensor_kind kind;
};

/// The tensors a selector picked, in walk order.
class selection {
public:
  selection(std::string description, std::vector<selected_tensor> items)
      : description_(std::move(description)), items_(std::move(items)) {}
  auto begin() const noexcept { return items_.begin(); }
  auto end() const noexcept { return items_.end(); }
  std::size_t size() const noexcept { return items_.size(); }
  bool empty() const noexcept { return items_.empty(); }
  const selected_tensor& operator[](std::size_t i) const { return items_[i]; }
  /// Total number of elements of the selected tensors.
  std::int64_t numel() const {
    std::int64_t n = 0;
    for (auto& t : items_) n += t.tensor.numel();
    return n;
  }
  /// The selector's description.
  const std::string& description() const noexcept { return description_; }
  std::vector<std::string> paths() const {
    std::vector<std::string> p;
    p.reserve(items_.size());
    for (auto& t : items_) p.push_back(t.path);
    return p;
  }

private:
  std::string description_;
  std::vector<selected_tensor> items_;
};

namespace detail {

/// Edits (insertions, deletions, substitutions) that turn a into b.
GRAFT_FUNC std::size_t edit_distance(std::string_view a, std::string_view b);

/// The last dotted segment of a name: "fc" of "layer4.fc".
constexpr std::string_view leaf_name(std::string_view k) noexcept { return k.substr(k.rfind('.') + 1); }

/// Up to `most` names from `candidates` closest to `wanted` by edit distance, closest first:
/// those within max(3, |wanted|/2) edits and, with `same_leaf`, any that ends in wanted's last
/// dotted segment (the same tensor under another module path). The one suggester behind
/// "did you mean" (selections) and "nearest" (merge reports).
GRAFT_FUNC std::vector<std::string> nearest_names(std::string_view wanted, std::vector<std::string> candidates,
                                                  std::size_t most = 3, bool same_leaf = false);

/// The "matched nothing" error for a model, with suggestions.
GRAFT_FUNC selection_error empty_selection(const torch::nn::Module& m, const std::string& description,
                                           const std::string& pattern, walk_options opts);

/// Walks `m` with `sel`, pruning subtrees the selector rules out, calling f(tensor_view) on
/// every match; returns the number of matches.
// The pruner of a walk for a selector of type S: false for a subtree it rules out. Behind a
// pointer (erased_prune), so that one walk serves every selector and every caller.
template <class S>
bool keep_subtree(const void* sel, std::string_view prefix) {
  return graft::could_match_under(*static_cast<const S*>(sel), prefix);
}

/// A for_each_match callback that only lets it count.
struct ignore_match {
  void operator()(const tensor_view&) const noexcept {}
};

template <selector S, class F>
std::size_t for_each_match(const torch::nn::Module& m, const S& sel, walk_options opts, F&& f) {
  std::size_t n = 0;
  for (auto t : walk(m, opts, erased_prune{&sel, &keep_subtree<S>}))
    if (sel.matches(t)) {
      ++n;
      f(t);
    }
  return n;
}

/// Throws the "matched nothing" error unless the selector allows it.
template <selector S>
void require_nonempty(std::size_t n, const torch::nn::Module& m, const S& sel, walk_options opts) {
  if constexpr (!allows_empty<S>)
    if (n == 0) throw empty_selection(m, sel.describe(), pattern_text(sel), opts);
}

} // namespace detail

/// The tensors of `module` that `sel` selects (by default among its parameters; pass
/// walk_options{.buffers = true} to include buffers). Throws selection_error if none match,
/// unless `sel` is optional(...).
template <selector S>
selection select(const torch::nn::Module& module, const S& sel, walk_options opts = {}) {
  std::vector<selected_tensor> out;
  auto n = detail::for_each_match(module, sel, opts, [&](const tensor_view& t) {
    out.push_back({std::string(t.path()), t.tensor(), &t.owner(), t.kind()});
  });
  detail::require_nonempty(n, module, sel, opts);
  return selection(sel.describe(), std::move(out));
}

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/select/select-inl.hpp>
#endif
