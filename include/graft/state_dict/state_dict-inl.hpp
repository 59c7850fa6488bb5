#pragma once
// The definitions of state_dict/state_dict.hpp: building a state dict from a module or an
// object tree, and its checked insert.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/state_dict/value.hpp>
#include <graft/walk/walk.hpp>

namespace graft {

GRAFT_FUNC state_dict::state_dict(const state_dict&) = default;
GRAFT_FUNC state_dict::state_dict(state_dict&&) noexcept = default;
GRAFT_FUNC state_dict& state_dict::operator=(const state_dict&) = default;
GRAFT_FUNC state_dict& state_dict::operator=(state_dict&&) noexcept = default;
GRAFT_FUNC state_dict::~state_dict() = default;

GRAFT_FUNC void state_dict::reserve(std::size_t n) {
  entries_.reserve(n);
  index_.reserve(n);
}

GRAFT_FUNC state_dict::state_dict(const torch::nn::Module& module) {
  for (auto t : walk(module, walk_options::state())) insert(std::string(t.path()), t.tensor());
}

GRAFT_FUNC state_dict state_dict::from_value(const value& root) {
  state_dict sd;
  std::string key;
  sd.flatten(root, key);
  return sd;
}

GRAFT_FUNC void state_dict::insert(state_entry e) {
  if (e.source_key.empty()) e.source_key = e.key;
  auto [it, fresh] = index_.try_emplace(e.key, entries_.size());
  if (!fresh)
    throw key_error(fmt::format("two entries are named '{}' (from '{}' and '{}')", e.key,
                                entries_[it->second].source_key, e.source_key));
  entries_.push_back(std::move(e));
}

GRAFT_FUNC const torch::Tensor& state_dict::at(std::string_view key) const {
  if (auto* e = find(key)) return e->tensor;
  throw key_error(fmt::format("no tensor '{}' in this state dict of {} entries", key, entries_.size()));
}

GRAFT_FUNC void state_dict::add_extra(std::string key, value v) { extras_.emplace_back(std::move(key), std::move(v)); }

GRAFT_FUNC value state_dict::to_value() const {
  dict d;
  d.reserve(entries_.size() + extras_.size());
  for (auto& e : entries_) d.append(e.key, e.tensor);
  for (auto& [k, v] : extras_) d.append(k, v);
  return d;
}

GRAFT_FUNC void state_dict::flatten(const value& v, std::string& key) {
  auto child = [&](const std::string& k, const value& c) {
    auto len = key.size();
    if (!key.empty()) key += '.';
    key += k;
    flatten(c, key);
    key.resize(len);
  };
  if (v.is_tensor()) {
    insert(key, v.as_tensor());
  } else if (v.is_dict()) {
    const auto first = entries_.size();
    for (auto& [k, c] : v.as_dict()) child(k.key_text(), c);
    if (!v.as_dict().module_versions().empty()) set_versions(v.as_dict(), key, first);
  } else if (v.is_sequence() && has_tensor(v)) {
    auto& items = v.as_sequence().items;
    for (std::size_t i = 0; i < items.size(); ++i) child(std::to_string(i), items[i]);
  } else {
    extras_.emplace_back(key, v);
  }
}
GRAFT_FUNC void state_dict::set_versions(const dict& d, const std::string& key, std::size_t first) {
  std::unordered_map<std::string_view, std::int64_t> version(d.module_versions().begin(), d.module_versions().end());
  const std::size_t skip = key.empty() ? 0 : key.size() + 1;
  for (auto i = first; i < entries_.size(); ++i) {
    std::string_view rel = std::string_view(entries_[i].key).substr(skip);
    auto dot = rel.rfind('.');
    auto it = version.find(dot == std::string_view::npos ? std::string_view() : rel.substr(0, dot));
    if (it != version.end()) entries_[i].module_version = it->second;
  }
}
GRAFT_FUNC bool state_dict::has_tensor(const value& v) {
  if (v.is_tensor()) return true;
  if (v.is_dict()) {
    for (auto& [k, c] : v.as_dict())
      if (has_tensor(c)) return true;
  } else if (v.is_sequence()) {
    for (auto& c : v.as_sequence().items)
      if (has_tensor(c)) return true;
  }
  return false;
}

} // namespace graft
