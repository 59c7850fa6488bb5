#pragma once
// Orderings of graft's lists as index permutations. Every caller shares one std::stable_sort
// instantiation (indices compared through a function pointer): a sort per element type and
// comparison compiled several kilobytes of sorting code each into every unit that reads or
// merges a checkpoint.

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <vector>

namespace graft::detail {

using index_less = bool (*)(const void* context, std::size_t a, std::size_t b);

/// The permutation of [0, n) that stably sorts it by less(context, a, b).
inline std::vector<std::size_t> stable_order(std::size_t n, const void* context, index_less less) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return less(context, a, b); });
  return order;
}

/// The permutation of [0, n) that stably sorts it by less(a, b), a comparison of indices.
template <class Less>
std::vector<std::size_t> stable_order(std::size_t n, const Less& less) {
  return stable_order(n, &less, [](const void* c, std::size_t a, std::size_t b) { return (*static_cast<const Less*>(c))(a, b); });
}

} // namespace graft::detail
