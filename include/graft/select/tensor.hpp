#pragma once
// Tensor predicates: by number of dimensions, dtype and requires_grad. They work on models and
// on checkpoint entries that carry their tensor.

#include <cstdint>
#include <string>

#include <c10/core/ScalarType.h>
#include <fmt/format.h>

#include <graft/select/concepts.hpp>

namespace graft {
namespace detail {
template <class V>
concept has_tensor = requires(const V& v) {
  { v.tensor() } -> std::convertible_to<const torch::Tensor&>;
};
template <class V>
const torch::Tensor* tensor_of(const V& v) {
  if constexpr (requires { v.has_tensor(); })
    if (!v.has_tensor()) return nullptr;
  return &v.tensor();
}

enum class compare_op { eq, ne, lt, le, gt, ge };
constexpr const char* op_text(compare_op o) {
  constexpr const char* t[] = {"==", "!=", "<", "<=", ">", ">="};
  return t[static_cast<int>(o)];
}
constexpr bool compare(std::int64_t a, compare_op o, std::int64_t b) {
  switch (o) {
    case compare_op::eq: return a == b;
    case compare_op::ne: return a != b;
    case compare_op::lt: return a < b;
    case compare_op::le: return a <= b;
    case compare_op::gt: return a > b;
    case compare_op::ge: return a >= b;
  }
  return false;
}
} // namespace detail

/// Tensors whose number of dimensions compares to n: made by `ndim <= 1` and friends.
struct ndim_is : selector_base {
  static constexpr needs requirement = needs::tensor;
  detail::compare_op op;
  std::int64_t n;
  constexpr ndim_is(detail::compare_op o, std::int64_t v) : op(o), n(v) {}
  template <detail::has_tensor V>
  bool matches(const V& v) const {
    auto* t = detail::tensor_of(v);
    return t && detail::compare(t->dim(), op, n);
  }
  std::string describe() const { return fmt::format("ndim {} {}", detail::op_text(op), n); }
};

/// The number of dimensions, to compare: `graft::ndim <= 1` selects biases and norm weights.
struct ndim_t {
  friend constexpr ndim_is operator==(ndim_t, std::int64_t n) { return {detail::compare_op::eq, n}; }
  friend constexpr ndim_is operator!=(ndim_t, std::int64_t n) { return {detail::compare_op::ne, n}; }
  friend constexpr ndim_is operator<(ndim_t, std::int64_t n) { return {detail::compare_op::lt, n}; }
  friend constexpr ndim_is operator<=(ndim_t, std::int64_t n) { return {detail::compare_op::le, n}; }
  friend constexpr ndim_is operator>(ndim_t, std::int64_t n) { return {detail::compare_op::gt, n}; }
  friend constexpr ndim_is operator>=(ndim_t, std::int64_t n) { return {detail::compare_op::ge, n}; }
};
inline constexpr ndim_t ndim{};

/// Tensors of one dtype: made by `graft::dtype == torch::kHalf`.
struct dtype_is : selector_base {
  static constexpr needs requirement = needs::tensor;
  c10::ScalarType type;
  bool equal = true;
  template <detail::has_tensor V>
  bool matches(const V& v) const {
    auto* t = detail::tensor_of(v);
    return t && ((t->scalar_type() == type) == equal);
  }
  std::string describe() const {
    return fmt::format("dtype {} {}", equal ? "==" : "!=", c10::toString(type));
  }
};
/// The dtype, to compare: `graft::dtype == torch::kFloat16`.
struct dtype_t {
  friend constexpr dtype_is operator==(dtype_t, c10::ScalarType t) { return {{}, t, true}; }
  friend constexpr dtype_is operator!=(dtype_t, c10::ScalarType t) { return {{}, t, false}; }
};
inline constexpr dtype_t dtype{};

/// Tensors that require grad (the trainable ones, on a model).
struct requires_grad_t : selector_base {
  static constexpr needs requirement = needs::tensor;
  template <detail::has_tensor V>
  bool matches(const V& v) const {
    auto* t = detail::tensor_of(v);
    return t && t->requires_grad();
  }
  std::string describe() const { return "requires_grad"; }
};
inline constexpr requires_grad_t requires_grad{};
/// Another name for requires_grad, as users say it of parameters.
inline constexpr requires_grad_t trainable{};

} // namespace graft
