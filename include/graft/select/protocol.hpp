#pragma once
// The selector protocol: what a type must have to be a selector, what it may have, and the
// functions through which graft reads what it may have. A selector of a user's own needs this
// header and nothing else (docs/selectors.md, "Your own selector").
//
//   required                                  meaning
//   derives from graft::selector_base          the operators &, |, -, ! apply to it
//   static constexpr needs requirement         what it must see to decide: name, tensor or module
//   bool matches(const tensor_view&) const     decides on a model's tensor; and, unless it needs a
//   bool matches(const entry_view&) const      module, on a checkpoint entry (or one template)
//   std::string describe() const               how messages and reports name it
//
//   optional                                  read through                  when absent
//   bool could_match_under(string_view) const  graft::could_match_under(s, p) true: never prunes a walk
//   static constexpr bool allow_empty          graft::allows_empty<S>        an empty match is an error
//   static constexpr int precedence            detail::precedence_of<S>()    9: never parenthesized
//   pattern() const (a string)                 detail::pattern_text(s)       describe(): what "did you
//                                                                           mean" compares names with

#include <concepts>
#include <string>
#include <string_view>
#include <utility>

#include <torch/types.h>

#include <graft/walk/tensor_view.hpp>

namespace graft {

/// What a selector must see to decide, from least to most.
enum class needs : int { name = 0, tensor = 1, module = 2 };

/// A checkpoint entry as a selector sees it: its key and, when there is one, its tensor.
class entry_view {
public:
  entry_view(std::string_view key, const torch::Tensor* tensor = nullptr) noexcept
      : key_(key), tensor_(tensor) {}
  std::string_view path() const noexcept { return key_; }
  /// The last dotted segment: "weight" of "fc.weight".
  std::string_view name() const noexcept {
    auto dot = key_.rfind('.');
    return dot == std::string_view::npos ? key_ : key_.substr(dot + 1);
  }
  bool has_tensor() const noexcept { return tensor_ != nullptr; }
  const torch::Tensor& tensor() const noexcept { return *tensor_; }

private:
  std::string_view key_;
  const torch::Tensor* tensor_;
};

namespace detail {
template <class Op, class L, class R> class binary_selector;
struct and_op;
struct or_op;
struct except_op;
template <class S> class none_of;
} // namespace detail

/// Base of every selector: the home of the composition operators, found by argument-dependent
/// lookup only (hidden friends), so they never apply to unrelated types.
struct selector_base {
  /// Both match: "a and b".
  template <class L, class R>
    requires std::derived_from<L, selector_base> && std::derived_from<R, selector_base>
  friend auto operator&(L l, R r) {
    return detail::binary_selector<detail::and_op, L, R>(std::move(l), std::move(r));
  }
  /// Either matches: "a or b".
  template <class L, class R>
    requires std::derived_from<L, selector_base> && std::derived_from<R, selector_base>
  friend auto operator|(L l, R r) {
    return detail::binary_selector<detail::or_op, L, R>(std::move(l), std::move(r));
  }
  /// The first matches and the second does not: "a except b".
  template <class L, class R>
    requires std::derived_from<L, selector_base> && std::derived_from<R, selector_base>
  friend auto operator-(L l, R r) {
    return detail::binary_selector<detail::except_op, L, R>(std::move(l), std::move(r));
  }
  /// Does not match: "not a".
  template <class S>
    requires std::derived_from<S, selector_base>
  friend auto operator!(S s) {
    return detail::none_of<S>(std::move(s));
  }
};

namespace detail {
// The optional members, each well-formed when present (a misspelt type is an error, not a
// silently ignored member).
template <class S>
concept optional_members_are_well_formed =
    (!requires { S::allow_empty; } || std::convertible_to<decltype(S::allow_empty), bool>) &&
    (!requires { S::precedence; } || std::convertible_to<decltype(S::precedence), int>) &&
    (!requires(const S& s) { s.could_match_under(std::string_view()); } ||
     requires(const S& s, std::string_view p) {
       { s.could_match_under(p) } -> std::same_as<bool>;
     });
} // namespace detail

/// Satisfied by a type that selects tensors: it can describe itself in words, states what it
/// needs, and decides on a model's tensor_view (the table at the top of this header).
template <class S>
concept selector = std::derived_from<S, selector_base> && std::copy_constructible<S> &&
                   requires(const S& s, const tensor_view& t) {
                     { S::requirement } -> std::convertible_to<needs>;
                     { s.describe() } -> std::convertible_to<std::string>;
                     { s.matches(t) } -> std::same_as<bool>;
                   } && detail::optional_members_are_well_formed<S>;

namespace detail {
template <class S>
concept can_prune = requires(const S& s, std::string_view prefix) {
  { s.could_match_under(prefix) } -> std::same_as<bool>;
};
} // namespace detail

/// Whether any tensor under the module prefix ("layer4.1.", trailing dot) could match `s`;
/// false lets a walk skip the subtree. Selectors that cannot tell say true.
template <selector S>
bool could_match_under(const S& s, std::string_view prefix) {
  if constexpr (detail::can_prune<S>)
    return s.could_match_under(prefix);
  else
    return true;
}

/// Whether an empty match of `S` is acceptable (see optional()).
template <class S>
inline constexpr bool allows_empty = requires { requires S::allow_empty; };

namespace detail {
// Binding strength in descriptions: an operand binding less tightly than its context gets
// parentheses. A selector without operators is an atom.
template <class S>
constexpr int precedence_of() {
  if constexpr (requires { S::precedence; }) return S::precedence; else return 9;
}

// The text an empty selection's "did you mean" compares the model's names with: the pattern
// of a glob or a regex, the description of anything else.
template <class S>
std::string pattern_text(const S& s) {
  if constexpr (requires { { s.pattern() } -> std::convertible_to<std::string_view>; })
    return std::string(s.pattern());
  else
    return s.describe();
}
} // namespace detail

} // namespace graft

// The types the operators return: a selector needs only this header to compose.
#include <graft/select/compose.hpp>
