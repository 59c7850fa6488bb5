#pragma once
// What a selector is, and what it needs to decide: a name only (works on models and on
// checkpoint keys), the tensor too (dtype, ndim...), or a live module (module type, kind).

#include <concepts>
#include <string>
#include <string_view>
#include <type_traits>
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
template <class L, class R> class all_of;
template <class L, class R> class any_of;
template <class L, class R> class but_not;
template <class S> class none_of;
} // namespace detail

/// Base of every selector: the home of the composition operators, found by argument-dependent
/// lookup only (hidden friends), so they never apply to unrelated types.
struct selector_base {
  /// Both match: "a and b".
  template <class L, class R>
    requires std::derived_from<L, selector_base> && std::derived_from<R, selector_base>
  friend auto operator&(L l, R r) {
    return detail::all_of<L, R>(std::move(l), std::move(r));
  }
  /// Either matches: "a or b".
  template <class L, class R>
    requires std::derived_from<L, selector_base> && std::derived_from<R, selector_base>
  friend auto operator|(L l, R r) {
    return detail::any_of<L, R>(std::move(l), std::move(r));
  }
  /// The first matches and the second does not: "a except b".
  template <class L, class R>
    requires std::derived_from<L, selector_base> && std::derived_from<R, selector_base>
  friend auto operator-(L l, R r) {
    return detail::but_not<L, R>(std::move(l), std::move(r));
  }
  /// Does not match: "not a".
  template <class S>
    requires std::derived_from<S, selector_base>
  friend auto operator!(S s) {
    return detail::none_of<S>(std::move(s));
  }
};

/// Satisfied by a type that selects tensors: it can describe itself in words, states what it
/// needs, and decides on a model's tensor_view.
template <class S>
concept selector = std::derived_from<S, selector_base> && std::copy_constructible<S> &&
                   requires(const S& s, const tensor_view& t) {
                     { S::requirement } -> std::convertible_to<needs>;
                     { s.describe() } -> std::convertible_to<std::string>;
                     { s.matches(t) } -> std::same_as<bool>;
                   };

/// Satisfied by a selector that decides from a dotted name alone.
template <class S>
concept name_selector = selector<S> && (S::requirement == needs::name);

namespace detail {
// A failed entry_selector check ends here, so the compiler shows this line and its comment.
template <class S>
concept decides_without_a_live_module =
    (S::requirement != needs::module);  // of_type<...>, is_parameter, is_buffer and owner_is need a model: checkpoint entries have no modules
} // namespace detail

/// Satisfied by a selector that works on checkpoint entries (no live module needed).
template <class S>
concept entry_selector = selector<S> && detail::decides_without_a_live_module<S> &&
                         requires(const S& s, const entry_view& e) {
                           { s.matches(e) } -> std::same_as<bool>;
                         };

/// Satisfied by a selector that can only decide on a live model (module type, buffer or not).
template <class S>
concept module_selector = selector<S> && (S::requirement == needs::module);

namespace detail {
constexpr needs max_needs(needs a, needs b) { return static_cast<int>(a) > static_cast<int>(b) ? a : b; }

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

} // namespace graft

#include <graft/select/compose.hpp>
