#pragma once
// state_dict: an ordered list of (dotted key → tensor) entries, plus the non-tensor values a
// checkpoint carries (epoch, config, ...). Made from a module with Python's keys and order,
// or flattened from a checkpoint's object tree.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/nn/module.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/state_dict/value.hpp>
#include <graft/walk/walk.hpp>

namespace graft {

/// One tensor of a state dict. `source_key` is the key it had where it was read, before renames.
struct state_entry {
  std::string key;
  torch::Tensor tensor;
  std::string source_key;
  /// The version PyTorch saved for the module that owns this tensor (the file's `_metadata`),
  /// or -1 if the file has none; merge() reads it as load_state_dict does.
  std::int64_t module_version = -1;

  std::string_view path() const noexcept { return key; }
  std::string_view name() const noexcept {
    auto dot = std::string_view(key).rfind('.');
    return dot == std::string_view::npos ? std::string_view(key) : std::string_view(key).substr(dot + 1);
  }
};

/// Ordered dotted-key → tensor entries with unique keys, and the non-tensor values beside them.
class state_dict {
public:
  state_dict() = default;
  // Compiled once in graft::compiled rather than in every unit that lets a state_dict go.
  GRAFT_FUNC state_dict(const state_dict&);
  GRAFT_FUNC state_dict(state_dict&&) noexcept;
  GRAFT_FUNC state_dict& operator=(const state_dict&);
  GRAFT_FUNC state_dict& operator=(state_dict&&) noexcept;
  GRAFT_FUNC ~state_dict();

  /// The module's parameters and buffers under Python's state_dict() keys and order (tied
  /// tensors under every name). The tensors are the module's own (no copy): detach().clone()
  /// them, or save them, to keep a snapshot.
  GRAFT_FUNC explicit state_dict(const torch::nn::Module& module);

  /// Flattens an object tree: nested dicts and lists join their keys with '.', tensors become
  /// entries, everything else becomes an extra under its dotted key.
  GRAFT_FUNC static state_dict from_value(const value& root);

  /// Appends an entry; a key_error if the key is already there.
  void insert(std::string key, torch::Tensor tensor, std::string source_key = {}) {
    insert(state_entry{std::move(key), std::move(tensor), std::move(source_key)});
  }
  /// Appends an entry as it is (a stage's rewritten entry keeps its source key and version).
  GRAFT_FUNC void insert(state_entry e);
  /// The entry under `key`, or nullptr.
  const state_entry* find(std::string_view key) const {
    auto it = index_.find(std::string(key));
    return it == index_.end() ? nullptr : &entries_[it->second];
  }
  bool contains(std::string_view key) const { return find(key) != nullptr; }
  /// The tensor under `key`; a key_error naming the key if it is absent.
  GRAFT_FUNC const torch::Tensor& at(std::string_view key) const;

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  auto begin() const noexcept { return entries_.begin(); }
  auto end() const noexcept { return entries_.end(); }
  const std::vector<state_entry>& entries() const noexcept { return entries_; }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    k.reserve(entries_.size());
    for (auto& e : entries_) k.push_back(e.key);
    return k;
  }
  /// Total bytes of tensor data.
  std::int64_t nbytes() const {
    std::int64_t n = 0;
    for (auto& e : entries_) n += e.tensor.numel() * static_cast<std::int64_t>(e.tensor.element_size());
    return n;
  }

  /// Non-tensor values (epoch, hyper-parameters, ...) by dotted key, in file order.
  std::vector<std::pair<std::string, value>>& extras() noexcept { return extras_; }
  const std::vector<std::pair<std::string, value>>& extras() const noexcept { return extras_; }
  /// Appends a non-tensor value under `key` (no check for an existing one: extras() is a list).
  GRAFT_FUNC void add_extra(std::string key, value v);
  /// The extra under `key`, or nullptr.
  const value* extra(std::string_view key) const {
    for (auto& [k, v] : extras_)
      if (k == key) return &v;
    return nullptr;
  }

  /// The entries as a flat dict of key → tensor (extras as values under their keys).
  GRAFT_FUNC value to_value() const;

  /// Moves the entries out (for stages that rebuild the dict); the dict keeps its extras.
  std::vector<state_entry> release_entries() {
    index_.clear();
    return std::move(entries_);
  }
  GRAFT_FUNC void reserve(std::size_t n);

private:
  GRAFT_FUNC void flatten(const value& v, std::string& key);
  // Gives the entries flattened from `d` (under `key`) their module's saved version.
  GRAFT_FUNC void set_versions(const dict& d, const std::string& key, std::size_t first);
  GRAFT_FUNC static bool has_tensor(const value& v);

  std::vector<state_entry> entries_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::pair<std::string, value>> extras_;
};

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/state_dict/state_dict-inl.hpp>
#endif
