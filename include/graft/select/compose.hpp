#pragma once
// Selector expressions: a & b, a | b, a - b, !a. Each composite owns its operands by value,
// needs what its most demanding operand needs, and describes itself in words.

#include <string>
#include <utility>

#include <graft/select/concepts.hpp>

namespace graft {
namespace detail {

template <class S, class V>
concept decides_on = requires(const S& s, const V& v) {
  { s.matches(v) } -> std::same_as<bool>;
};

// Binding strength in descriptions: an operand binding less tightly gets parentheses.
template <class S>
constexpr int precedence_of() {
  if constexpr (requires { S::precedence; }) return S::precedence; else return 9;
}
template <class S>
std::string describe_operand(const S& s, int context) {
  return precedence_of<S>() < context ? "(" + s.describe() + ")" : s.describe();
}

template <class L, class R>
class all_of : public selector_base {
public:
  static constexpr needs requirement = max_needs(L::requirement, R::requirement);
  static constexpr int precedence = 2;
  all_of(L l, R r) : l_(std::move(l)), r_(std::move(r)) {}
  template <class V>
    requires decides_on<L, V> && decides_on<R, V>
  bool matches(const V& v) const { return l_.matches(v) && r_.matches(v); }
  bool could_match_under(std::string_view p) const {
    return graft::could_match_under(l_, p) && graft::could_match_under(r_, p);
  }
  std::string describe() const { return describe_operand(l_, 2) + " and " + describe_operand(r_, 2); }

private:
  L l_;
  R r_;
};

template <class L, class R>
class any_of : public selector_base {
public:
  static constexpr needs requirement = max_needs(L::requirement, R::requirement);
  static constexpr int precedence = 1;
  any_of(L l, R r) : l_(std::move(l)), r_(std::move(r)) {}
  template <class V>
    requires decides_on<L, V> && decides_on<R, V>
  bool matches(const V& v) const { return l_.matches(v) || r_.matches(v); }
  bool could_match_under(std::string_view p) const {
    return graft::could_match_under(l_, p) || graft::could_match_under(r_, p);
  }
  std::string describe() const { return describe_operand(l_, 1) + " or " + describe_operand(r_, 1); }

private:
  L l_;
  R r_;
};

template <class L, class R>
class but_not : public selector_base {
public:
  static constexpr needs requirement = max_needs(L::requirement, R::requirement);
  static constexpr int precedence = 2;
  but_not(L l, R r) : l_(std::move(l)), r_(std::move(r)) {}
  template <class V>
    requires decides_on<L, V> && decides_on<R, V>
  bool matches(const V& v) const { return l_.matches(v) && !r_.matches(v); }
  bool could_match_under(std::string_view p) const { return graft::could_match_under(l_, p); }
  std::string describe() const { return describe_operand(l_, 2) + " except " + describe_operand(r_, 3); }

private:
  L l_;
  R r_;
};

template <class S>
class none_of : public selector_base {
public:
  static constexpr needs requirement = S::requirement;
  static constexpr int precedence = 3;
  explicit none_of(S s) : s_(std::move(s)) {}
  template <class V>
    requires decides_on<S, V>
  bool matches(const V& v) const { return !s_.matches(v); }
  std::string describe() const { return "not " + describe_operand(s_, 3); }

private:
  S s_;
};

} // namespace detail

/// A selector that may match nothing: consumers accept an empty selection instead of throwing.
template <selector S>
class optional_selector : public S {
public:
  static constexpr bool allow_empty = true;
  explicit optional_selector(S s) : S(std::move(s)) {}
  std::string describe() const { return S::describe() + " (optional)"; }
};

/// Marks a selector as allowed to match nothing.
template <selector S>
optional_selector<S> optional(S s) { return optional_selector<S>(std::move(s)); }

} // namespace graft
