#pragma once
// The definitions of state_dict/value.hpp: dict lookups and the errors of a wrong key or type.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

GRAFT_FUNC void dict::set(value key, value v) {
  for (auto& [k, old] : items_) {
    if (k.raw().index() == key.raw().index() &&
        ((k.is_string() && k.as_string() == key.as_string()) ||
         (k.is_int() && k.as_int() == key.as_int()))) {
      old = std::move(v);
      return;
    }
  }
  items_.emplace_back(std::move(key), std::move(v));
}

GRAFT_FUNC const value* dict::find(std::string_view key) const {
  for (auto& [k, v] : items_)
    if ((k.is_string() && k.as_string() == key) || (k.is_int() && std::to_string(k.as_int()) == key))
      return &v;
  return nullptr;
}

GRAFT_FUNC const value& dict::at(std::string_view key) const {
  if (auto* v = find(key)) return *v;
  std::string keys;
  std::size_t shown = 0;
  for (auto& [k, v] : items_) {
    if (shown++ == 12) { keys += ", ..."; break; }
    keys += (keys.empty() ? "'" : ", '") + k.key_text() + "'";
  }
  throw key_error(fmt::format("no entry '{}' here; the keys are: {}", key,
                              keys.empty() ? std::string("(none: the dict is empty)") : keys));
}

GRAFT_FUNC std::string value::key_text() const {
  if (is_string()) return as_string();
  if (is_int()) return std::to_string(as_int());
  if (is_bool()) return as_bool() ? "True" : "False";
  throw key_error(fmt::format("a dict key of type {} cannot name a checkpoint entry", type_name()));
}

GRAFT_FUNC void value::wrong_type(std::string_view wanted) const {
  throw type_error(fmt::format("expected a {} value, found {}", wanted, type_name()));
}

} // namespace graft
