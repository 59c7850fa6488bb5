#pragma once
// The unpickler's storages and tensors: a persistent id resolves to a storage through the
// reader's storage_loader, and a tensor is rebuilt over it only if every element it can reach
// lies inside the storage.

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/detail/join.hpp>
#include <graft/formats/detail/pickle_arena.hpp>
#include <graft/formats/detail/pickle_globals.hpp>

namespace graft::detail {

/// The arena plus storages from persistent ids and tensors over them.
class pickle_tensors : protected pickle_arena {
protected:
  using pickle_arena::pickle_arena;

  void set_requires_grad(torch::Tensor& t, bool on) {
    if (!on) return;
    if (!c10::isFloatingType(t.scalar_type()) && !c10::isComplexType(t.scalar_type()))
      fail(fmt::format("only floating-point and complex tensors can require grad, not {}", c10::toString(t.scalar_type())));
    t.requires_grad_(true);
  }

  // The element count of storage `st` (of bytes, or of one dtype) seen as `dtype`.
  std::int64_t retype(const node& st, torch::Dtype dtype) {
    const auto from = static_cast<std::int64_t>(c10::elementSize(st.dtype));
    const auto to = static_cast<std::int64_t>(c10::elementSize(dtype));
    const std::int64_t bytes = st.i * from;
    if (bytes % to != 0 || st.off * from % to != 0)
      fail(fmt::format("storage '{}' of {} bytes does not hold whole {} elements", st.owned, bytes, c10::toString(dtype)));
    return bytes / to;
  }

  // A tensor over a storage; every index it can reach must lie inside the storage.
  torch::Tensor rebuild(const node& st, std::int64_t offset, c10::ArrayRef<std::int64_t> sizes,
                        c10::ArrayRef<std::int64_t> strides) {
    if (sizes.size() != strides.size())
      fail(fmt::format("tensor size {} and stride {} differ in length", graft::detail::join(sizes, ","), graft::detail::join(strides, ",")));
    if (offset < 0) fail(fmt::format("negative storage offset {}", offset));
    bool empty = false;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      if (sizes[k] < 0 || strides[k] < 0)
        fail(fmt::format("negative tensor size or stride (size [{}], stride [{}])", graft::detail::join(sizes, ", "), graft::detail::join(strides, ", ")));
      empty |= sizes[k] == 0;
    }
    std::int64_t last = offset;  // the largest element index the tensor reaches
    bool overflow = false;
    if (!empty)
      for (std::size_t k = 0; k < sizes.size(); ++k) {
        std::int64_t span = 0;
        overflow |= __builtin_mul_overflow(sizes[k] - 1, strides[k], &span);
        overflow |= __builtin_add_overflow(last, span, &last);
      }
    std::int64_t numel = 1;
    for (auto s : sizes) overflow |= __builtin_mul_overflow(numel, s, &numel);
    if (overflow || (empty ? offset > st.i : last >= st.i))
      fail(fmt::format("tensor of size [{}], stride [{}] at offset {} reaches past its storage '{}' of {} elements",
                       graft::detail::join(sizes, ", "), graft::detail::join(strides, ", "), offset, st.owned, st.i));
    try {
      return torch::empty({0}, torch::TensorOptions().dtype(st.dtype)).set_(st.storage, st.off + offset, sizes, strides);
    } catch (const c10::Error& e) {
      fail(fmt::format("cannot rebuild a tensor: {}", e.what_without_backtrace()));
    }
  }

  void persistent_id() {
    auto pid = pop();
    auto& t = nodes_[pid];
    // torch.save's zip format: ('storage', type, key, location, numel); its legacy format adds
    // view metadata, None or (view_key, offset, numel) of a part of the storage.
    if (t.k != kind::tuple || (t.items.size() != 5 && t.items.size() != 6) || arg(pid, 0).k != kind::str ||
        arg(pid, 0).sv() != "storage")
      fail("persistent id is not a ('storage', type, key, location, numel[, view]) tuple");
    auto& type = arg(pid, 1);
    if (type.k != kind::global || (type.g != global_id::storage_type && type.g != global_id::untyped_storage))
      fail("persistent id does not name a torch storage type");
    if (arg(pid, 2).k != kind::str || arg(pid, 3).k != kind::str)
      fail("persistent id's storage key and location must be strings");
    std::int64_t numel = int_arg(pid, 4, "a storage's element count");
    if (numel < 0) fail(fmt::format("negative storage size {}", numel));
    auto dtype = type.dtype;
    std::string key(arg(pid, 2).sv());
    auto storage = load_(key, dtype, numel, at_);
    std::int64_t off = 0;
    if (t.items.size() == 6 && arg(pid, 5).k != kind::none) {
      const auto view = nodes_[pid].items[5];
      if (nodes_[view].k != kind::tuple || nodes_[view].items.size() != 3 || arg(view, 0).k != kind::str)
        fail("a storage's view metadata is not a (view_key, offset, numel) tuple");
      off = int_arg(view, 1, "a storage view's offset");
      const auto size = int_arg(view, 2, "a storage view's size");
      if (off < 0 || size < 0 || off > numel || size > numel - off)
        fail(fmt::format("view '{}' of elements [{}, {}) lies outside its storage '{}' of {} elements", arg(view, 0).sv(), off,
                         off + size, key, numel));
      numel = size;
    }
    auto i = push(kind::storage);
    nodes_[i].storage = std::move(storage);
    nodes_[i].dtype = dtype;
    nodes_[i].i = numel;
    nodes_[i].off = off;
    nodes_[i].owned = std::move(key);
  }
};

} // namespace graft::detail
