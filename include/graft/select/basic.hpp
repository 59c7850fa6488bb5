#pragma once
// Name selectors that need no pattern language: everything, exact names, a prefix, the local
// name (".bias"), a user predicate, and a label for any selector.

#include <algorithm>
#include <concepts>
#include <functional>
#include <initializer_list>
#include <memory>
#include <type_traits>
#include <ranges>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/detail/join.hpp>
#include <graft/select/concepts.hpp>
#include <graft/select/detail/predicate.hpp>

namespace graft {
/// Selects every tensor.
struct everything_t : selector_base {
  static constexpr needs requirement = needs::name;
  template <detail::has_path V>
  bool matches(const V&) const noexcept { return true; }
  std::string describe() const { return "everything"; }
};
inline constexpr everything_t everything{};

/// Selects the tensors with exactly these dotted paths.
class names : public selector_base {
public:
  static constexpr needs requirement = needs::name;
  names(std::initializer_list<std::string_view> paths) : names(std::vector<std::string_view>(paths)) {}
  template <std::ranges::input_range R>
    requires std::convertible_to<std::ranges::range_reference_t<R>, std::string_view>
  explicit names(const R& paths) {
    for (std::string_view p : paths) list_.emplace_back(p);
    set_ = std::make_shared<const std::unordered_set<std::string_view>>(list_.begin(), list_.end());
  }
  names(const names& o) : list_(o.list_), set_(std::make_shared<const std::unordered_set<std::string_view>>(list_.begin(), list_.end())) {}
  names& operator=(const names& o) {
    names copy(o);
    std::swap(list_, copy.list_);
    std::swap(set_, copy.set_);
    return *this;
  }
  names(names&&) = default;
  names& operator=(names&&) = default;

  template <detail::has_path V>
  bool matches(const V& v) const { return set_->contains(v.path()); }
  bool could_match_under(std::string_view prefix) const {
    return std::any_of(list_.begin(), list_.end(), [&](const std::string& n) { return n.starts_with(prefix); });
  }
  std::string describe() const { return fmt::format("names {{{}}}", graft::detail::join(list_, ", ")); }

private:
  std::vector<std::string> list_;
  std::shared_ptr<const std::unordered_set<std::string_view>> set_;  // views into list_
};

/// Selects the tensors whose path starts with `p` ("layer4." selects layer4's subtree).
class prefix : public selector_base {
public:
  static constexpr needs requirement = needs::name;
  explicit prefix(std::string_view p) : p_(p) {}
  template <detail::has_path V>
  bool matches(const V& v) const { return v.path().starts_with(p_); }
  bool could_match_under(std::string_view module_prefix) const {
    return module_prefix.starts_with(p_) || std::string_view(p_).starts_with(module_prefix);
  }
  std::string describe() const { return "prefix '" + p_ + "'"; }

private:
  std::string p_;
};

/// Selects tensors by the name their module registered them under ("bias", "weight").
class local_name : public selector_base {
public:
  static constexpr needs requirement = needs::name;
  explicit local_name(std::string_view n) : n_(n) {}
  template <detail::has_path V>
  bool matches(const V& v) const { return v.name() == n_; }
  std::string describe() const { return "*." + n_; }

private:
  std::string n_;
};

/// Every bias: the tensors registered as "bias".
inline const local_name bias{"bias"};

/// Satisfied by a predicate on a dotted path: where(f, text) is then a name selector.
template <class F>
concept path_predicate = std::is_invocable_r_v<bool, const F&, std::string_view>;
/// Satisfied by a predicate on a model's tensor_view: where(f, text) then needs a live model.
template <class F>
concept view_predicate = std::is_invocable_r_v<bool, const F&, const tensor_view&>;

/// The selector where(f, text) makes: a name selector for a path_predicate, a module selector
/// for a view_predicate.
template <class F>
using where_t = detail::predicate_selector<std::conditional_t<path_predicate<F>, detail::pass_path, detail::pass_view>, F>;

/// Selects what `f` accepts; `text` is how the selector describes itself. `f` takes a
/// std::string_view (the dotted path) or a const graft::tensor_view& and returns bool.
template <class F>
  requires path_predicate<F> || view_predicate<F>
where_t<F> where(F f, std::string text) { return where_t<F>(std::move(f), std::move(text)); }

/// Any selector under another description: labeled(of_type<...>, "norm layers").
template <selector S>
class labeled_t : public S {
public:
  labeled_t(S s, std::string text) : S(std::move(s)), text_(std::move(text)) {}
  std::string describe() const { return text_; }

private:
  std::string text_;
};
template <selector S>
labeled_t<S> labeled(S s, std::string text) { return labeled_t<S>(std::move(s), std::move(text)); }

} // namespace graft
