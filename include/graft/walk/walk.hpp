#pragma once
// walk(module): a lazy, allocation-light enumeration of a module tree's tensors in PyTorch's
// order, built on one path buffer instead of named_parameters()' OrderedDict of full paths.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <ranges>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <range/v3/range_fwd.hpp>
#include <torch/nn/module.h>

#include <graft/config.hpp>
#include <graft/detail/module_access.hpp>
#include <graft/detail/pointer_set.hpp>
#include <graft/walk/tensor_view.hpp>

namespace graft {

/// What a walk visits.
struct walk_options {
  bool parameters = true;   ///< visit parameters
  bool buffers = false;     ///< visit buffers (BatchNorm's running statistics, ...)
  bool every_name = false;  ///< visit a tensor registered under several names (tied) once per name

  /// Parameters only, each tensor once: named_parameters()' set and order.
  static constexpr walk_options parameters_only() { return {}; }
  /// Parameters and buffers, every name: Python's state_dict() keys and order.
  static constexpr walk_options state() { return {true, true, true}; }
};

namespace detail {
/// A pruner that never prunes.
struct keep_every_module {
  constexpr bool operator()(std::string_view) const noexcept { return true; }
};
/// A pruner behind a pointer: one walk type serves every selector (select.hpp's for_each_match).
struct erased_prune {
  const void* arg;
  bool (*keep)(const void* arg, std::string_view prefix);
  bool operator()(std::string_view prefix) const { return keep(arg, prefix); }
};
} // namespace detail

/// The range walk() returns. Its iterators point into it: keep it alive (and in place) while
/// iterating, as with std::ranges::istream_view. Prune(prefix) is asked for every submodule,
/// with its dotted prefix ending in '.'; returning false skips that whole subtree. A view for
/// the standard's views and range-v3's alike (both view_base classes).
template <class Prune = detail::keep_every_module>
class basic_walk : public std::ranges::view_base, public ranges::view_base {
public:
  basic_walk(const torch::nn::Module& root, walk_options options, Prune prune = {})
      : root_(&root), options_(options), prune_(std::move(prune)) {}

  class iterator {
  public:
    using iterator_concept = std::input_iterator_tag;
    using iterator_category = std::input_iterator_tag;
    using value_type = tensor_view;
    using reference = tensor_view;
    using difference_type = std::ptrdiff_t;

    iterator() = default;
    explicit iterator(basic_walk* w) noexcept : w_(w) {}
    tensor_view operator*() const noexcept { return w_->current(); }
    iterator& operator++() {
      w_->advance();
      return *this;
    }
    void operator++(int) { w_->advance(); }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept { return it.at_end(); }

  private:
    bool at_end() const noexcept { return w_ == nullptr || w_->done(); }
    basic_walk* w_ = nullptr;
  };

  /// Starts (or restarts) the walk.
  iterator begin() {
    start();
    return iterator(this);
  }
  std::default_sentinel_t end() const noexcept { return {}; }

private:
  struct frame {
    const torch::nn::Module* module;
    detail::module_registries own;
    std::size_t prefix_len;  // length of "a.b." for this module in path_
    std::size_t next;        // index over own parameters, then buffers, then children
  };

  void start();
  bool done() const noexcept { return stack_.empty(); }
  tensor_view current() const noexcept {
    return tensor_view(path_, name_offset_, *tensor_, *stack_.back().module, kind_);
  }
  // Moves to the next tensor to visit, or empties the stack.
  void advance();

  const torch::nn::Module* root_;
  walk_options options_;
  Prune prune_;
  std::vector<frame> stack_;
  std::string path_;
  std::size_t name_offset_ = 0;
  const at::Tensor* tensor_ = nullptr;
  tensor_kind kind_ = tensor_kind::parameter;
  detail::pointer_set seen_;
};

template <class Prune>
void basic_walk<Prune>::start() {
  stack_.clear();
  seen_.clear();
  path_.clear();
  stack_.push_back({root_, detail::module_registries(*root_), 0, 0});
  advance();
}

template <class Prune>
void basic_walk<Prune>::advance() {
  while (!stack_.empty()) {
    frame& f = stack_.back();
    const auto& params = f.own.parameters();
    const auto& buffers = f.own.buffers();
    const auto& children = f.own.children();
    std::size_t np = options_.parameters ? params.size() : 0;
    std::size_t nb = options_.buffers ? buffers.size() : 0;
    if (f.next < np + nb) {
      std::size_t i = f.next++;
      bool is_param = i < np;
      const auto& item = is_param ? params[i] : buffers[i - np];
      const at::Tensor& t = item.value();
      if (!t.defined()) continue;  // e.g. Linear(bias=false) registers an undefined bias
      if (!options_.every_name && !seen_.insert(t.unsafeGetTensorImpl())) continue;
      path_.resize(f.prefix_len);
      path_.append(item.key());
      name_offset_ = f.prefix_len;
      tensor_ = &t;
      kind_ = is_param ? tensor_kind::parameter : tensor_kind::buffer;
      return;
    }
    std::size_t c = f.next - np - nb;
    if (c < children.size()) {
      ++f.next;
      std::size_t len = f.prefix_len;
      path_.resize(len);
      path_.append(children[c].key());
      path_.push_back('.');
      if (!prune_(std::string_view(path_))) continue;
      const torch::nn::Module* child = children[c].value().get();
      stack_.push_back({child, detail::module_registries(*child), path_.size(), 0});
      continue;
    }
    stack_.pop_back();
  }
}

/// Walks `module`'s tensors lazily in PyTorch's order (by default its parameters, once each,
/// as named_parameters() lists them).
inline basic_walk<> walk(const torch::nn::Module& module, walk_options options = {}) {
  return basic_walk<>(module, options);
}

namespace detail {
template <class M, class F>
void for_each_module_at(M& m, std::string& path, F& f) {
  f(m, std::string_view(path));
  const auto len = path.size();
  module_registries own(m);
  for (const auto& c : own.children()) {
    path.resize(len);
    if (len) path.push_back('.');
    path.append(c.key());
    for_each_module_at(static_cast<M&>(*c.value()), path, f);
  }
  path.resize(len);
}
} // namespace detail

/// Calls f(module, path) for `module` and every submodule below it, in pre-order and
/// registration order (the order of Python's named_modules(), each once per name), with the
/// dotted path of each ("" for `module` itself). `module` may be const.
template <class M, class F>
  requires std::same_as<std::remove_const_t<M>, torch::nn::Module>
void for_each_module(M& module, F&& f) {
  std::string path;
  detail::for_each_module_at(module, path, f);
}

/// Walks with a pruner: prune(prefix) == false skips the submodule at "prefix." and below.
template <class Prune>
basic_walk<Prune> walk(const torch::nn::Module& module, walk_options options, Prune prune) {
  return basic_walk<Prune>(module, options, std::move(prune));
}

} // namespace graft


#ifdef GRAFT_SEPARATE_COMPILATION
// The two walks graft itself uses are compiled once, in graft::compiled (walk-inl.hpp).
extern template class graft::basic_walk<graft::detail::keep_every_module>;
extern template class graft::basic_walk<graft::detail::erased_prune>;
#endif
