#pragma once
// What a selector needs to decide: a name only (works on models and on checkpoint keys), the
// tensor too (dtype, ndim...), or a live module (module type, kind). What a selector is, and
// what it may have, is the protocol in protocol.hpp.

#include <concepts>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <torch/types.h>

#include <graft/select/protocol.hpp>
#include <graft/walk/tensor_view.hpp>

namespace graft {

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

} // namespace graft
