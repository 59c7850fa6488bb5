#pragma once
// Selector expressions: a & b, a | b, a - b, !a. Each composite owns its operands by value,
// needs what its most demanding operand needs, and describes itself in words.

#include <concepts>
#include <string>
#include <string_view>
#include <utility>

#include <graft/select/protocol.hpp>

namespace graft {
namespace detail {

template <class S, class V>
concept decides_on = requires(const S& s, const V& v) {
  { s.matches(v) } -> std::same_as<bool>;
};

constexpr needs max_needs(needs a, needs b) { return static_cast<int>(a) > static_cast<int>(b) ? a : b; }

template <class S>
std::string describe_operand(const S& s, int context) {
  return precedence_of<S>() < context ? "(" + s.describe() + ")" : s.describe();
}

// The binary operations. Each says how it combines its operands' answers (the right one is
// asked only when it can change the result), which subtrees it may skip, how it reads, and how
// tightly each side binds.
struct and_op {
  static constexpr int precedence = 2, left = 2, right = 2;
  static constexpr std::string_view word = " and ";
  template <class F> static bool match(bool l, F r) { return l && r(); }
  template <class F> static bool prune(bool l, F r) { return l && r(); }
};
struct or_op {
  static constexpr int precedence = 1, left = 1, right = 1;
  static constexpr std::string_view word = " or ";
  template <class F> static bool match(bool l, F r) { return l || r(); }
  template <class F> static bool prune(bool l, F r) { return l || r(); }
};
struct except_op {
  static constexpr int precedence = 2, left = 2, right = 3;
  static constexpr std::string_view word = " except ";
  template <class F> static bool match(bool l, F r) { return l && !r(); }
  template <class F> static bool prune(bool l, F) { return l; }  // what b removes says nothing of a
};

// a & b, a | b, a - b: one selector over both operands, owned by value.
template <class Op, class L, class R>
class binary_selector : public selector_base {
public:
  static constexpr needs requirement = max_needs(L::requirement, R::requirement);
  static constexpr int precedence = Op::precedence;
  binary_selector(L l, R r) : l_(std::move(l)), r_(std::move(r)) {}
  template <class V>
    requires decides_on<L, V> && decides_on<R, V>
  bool matches(const V& v) const {
    return Op::match(l_.matches(v), [&] { return r_.matches(v); });
  }
  bool could_match_under(std::string_view p) const {
    return Op::prune(graft::could_match_under(l_, p), [&] { return graft::could_match_under(r_, p); });
  }
  std::string describe() const {
    return describe_operand(l_, Op::left) + std::string(Op::word) + describe_operand(r_, Op::right);
  }

private:
  L l_;
  R r_;
};

template <class L, class R>
using all_of = binary_selector<and_op, L, R>;
template <class L, class R>
using any_of = binary_selector<or_op, L, R>;
template <class L, class R>
using but_not = binary_selector<except_op, L, R>;

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
