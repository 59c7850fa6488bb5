#pragma once
// A small open-addressing set of pointers: the walk's "seen" set for tied tensors, cheaper
// than std::unordered_set (no node per element, no rehash of strings).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace graft::detail {

class pointer_set {
public:
  /// Inserts p; returns false if it was already there.
  bool insert(const void* p) {
    if ((size_ + 1) * 2 > slots_.size()) grow();
    auto key = reinterpret_cast<std::uintptr_t>(p);
    std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash(key) & mask;; i = (i + 1) & mask) {
      if (slots_[i] == key) return false;
      if (slots_[i] == 0) {
        slots_[i] = key;
        ++size_;
        return true;
      }
    }
  }
  void clear() noexcept {
    if (size_ == 0) return;
    std::fill(slots_.begin(), slots_.end(), 0);
    size_ = 0;
  }
  std::size_t size() const noexcept { return size_; }

private:
  static std::size_t hash(std::uintptr_t k) noexcept {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<std::size_t>(k);
  }
  void grow() {
    std::vector<std::uintptr_t> old(slots_.empty() ? 0 : slots_.size());
    old.swap(slots_);
    slots_.assign(old.empty() ? 64 : old.size() * 2, 0);
    size_ = 0;
    for (auto k : old)
      if (k) insert(reinterpret_cast<const void*>(k));
  }
  std::vector<std::uintptr_t> slots_;
  std::size_t size_ = 0;
};

} // namespace graft::detail
