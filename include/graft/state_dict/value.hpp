#pragma once
// graft::value: what a checkpoint file holds before it becomes a state dict. A Python
// checkpoint is an object tree ({"model": OrderedDict, "epoch": 3, ...}); readers produce
// this tree, and the pipeline's at("model") walks into it.

#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/error.hpp>

namespace graft {

class value;

/// An insertion-ordered mapping, as Python's dict and OrderedDict are. Keys are values
/// (usually strings; optimizer state uses integers).
class dict {
public:
  using item = std::pair<value, value>;
  dict() = default;

  /// Appends key → v, or replaces the value of an existing key in place (Python's d[k] = v).
  GRAFT_FUNC void set(value key, value v);
  /// Appends key → v without looking for an existing key: for readers whose source cannot
  /// hold duplicates (a pickled dict), where set()'s lookup would cost O(n) per item.
  void append(value key, value v);
  /// The value under a string key, or nullptr.
  GRAFT_FUNC const value* find(std::string_view key) const;
  value* find(std::string_view key);
  /// The value under a string key; a key_error listing the keys there are if it is absent.
  GRAFT_FUNC const value& at(std::string_view key) const;

  // Defined after value: std::vector<item> needs value complete for these.
  std::size_t size() const noexcept;
  bool empty() const noexcept;
  std::vector<item>::const_iterator begin() const noexcept;
  std::vector<item>::const_iterator end() const noexcept;
  std::vector<item>::iterator begin() noexcept;
  std::vector<item>::iterator end() noexcept;
  void reserve(std::size_t n);

  /// The module versions of a PyTorch state dict read from a file (its `_metadata`: module
  /// prefix → version, "" for the root), which decide how PyTorch's load_state_dict treats an
  /// old module's missing keys. Empty when the file has none (safetensors, a rebuilt dict).
  const std::vector<std::pair<std::string, std::int64_t>>& module_versions() const noexcept { return versions_; }
  void set_module_versions(std::vector<std::pair<std::string, std::int64_t>> v) { versions_ = std::move(v); }

private:
  std::vector<item> items_;
  std::vector<std::pair<std::string, std::int64_t>> versions_;
};

/// A list or a tuple.
struct sequence {
  std::vector<value> items;
  bool is_tuple = false;
};

/// One node of a checkpoint's object tree: None, bool, int, float, str, bytes, tensor,
/// list/tuple or dict.
class value {
public:
  struct bytes { std::string data; };
  using storage = std::variant<std::monostate, bool, std::int64_t, double, std::string, bytes,
                               torch::Tensor, sequence, dict>;

  value() = default;
  value(std::nullptr_t) {}
  value(bool b) : v_(b) {}
  template <class I>
    requires(std::is_integral_v<I> && !std::is_same_v<I, bool>)
  value(I i) : v_(static_cast<std::int64_t>(i)) {}
  value(double d) : v_(d) {}
  value(std::string s) : v_(std::move(s)) {}
  value(const char* s) : v_(std::string(s)) {}
  value(std::string_view s) : v_(std::string(s)) {}
  value(bytes b) : v_(std::move(b)) {}
  value(torch::Tensor t) : v_(std::move(t)) {}
  value(sequence s) : v_(std::move(s)) {}
  value(dict d) : v_(std::move(d)) {}

  bool is_none() const noexcept { return std::holds_alternative<std::monostate>(v_); }
  bool is_bool() const noexcept { return std::holds_alternative<bool>(v_); }
  bool is_int() const noexcept { return std::holds_alternative<std::int64_t>(v_); }
  bool is_float() const noexcept { return std::holds_alternative<double>(v_); }
  bool is_string() const noexcept { return std::holds_alternative<std::string>(v_); }
  bool is_bytes() const noexcept { return std::holds_alternative<bytes>(v_); }
  bool is_tensor() const noexcept { return std::holds_alternative<torch::Tensor>(v_); }
  bool is_sequence() const noexcept { return std::holds_alternative<sequence>(v_); }
  bool is_dict() const noexcept { return std::holds_alternative<dict>(v_); }

  /// Python's name for the held type: "NoneType", "int", "dict", "Tensor", ...
  std::string_view type_name() const noexcept {
    static constexpr std::string_view names[] = {"NoneType", "bool", "int",  "float", "str",
                                                 "bytes",    "Tensor", "list", "dict"};
    if (is_sequence() && std::get<sequence>(v_).is_tuple) return "tuple";
    return names[v_.index()];
  }

  bool as_bool() const { return get<bool>("bool"); }
  std::int64_t as_int() const { return get<std::int64_t>("int"); }
  /// int or float, as a double.
  double as_number() const {
    if (is_int()) return static_cast<double>(std::get<std::int64_t>(v_));
    return get<double>("float");
  }
  const std::string& as_string() const { return get<std::string>("str"); }
  const torch::Tensor& as_tensor() const { return get<torch::Tensor>("Tensor"); }
  torch::Tensor& as_tensor() { return const_cast<torch::Tensor&>(std::as_const(*this).as_tensor()); }
  const sequence& as_sequence() const { return get<sequence>("list or tuple"); }
  sequence& as_sequence() { return const_cast<sequence&>(std::as_const(*this).as_sequence()); }
  const dict& as_dict() const { return get<dict>("dict"); }
  dict& as_dict() { return const_cast<dict&>(std::as_const(*this).as_dict()); }

  /// The key text of a dict key: a string as is, an integer in decimal.
  GRAFT_FUNC std::string key_text() const;

  const storage& raw() const noexcept { return v_; }
  storage& raw() noexcept { return v_; }

private:
  template <class T>
  const T& get(std::string_view wanted) const {
    if (auto* p = std::get_if<T>(&v_)) return *p;
    wrong_type(wanted);
  }
  [[noreturn]] GRAFT_FUNC void wrong_type(std::string_view wanted) const;
  storage v_;
};

inline std::size_t dict::size() const noexcept { return items_.size(); }
inline bool dict::empty() const noexcept { return items_.empty(); }
inline std::vector<dict::item>::const_iterator dict::begin() const noexcept { return items_.begin(); }
inline std::vector<dict::item>::const_iterator dict::end() const noexcept { return items_.end(); }
inline std::vector<dict::item>::iterator dict::begin() noexcept { return items_.begin(); }
inline std::vector<dict::item>::iterator dict::end() noexcept { return items_.end(); }
inline void dict::reserve(std::size_t n) { items_.reserve(n); }

inline void dict::append(value key, value v) { items_.emplace_back(std::move(key), std::move(v)); }

inline value* dict::find(std::string_view key) {
  return const_cast<value*>(std::as_const(*this).find(key));
}

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/state_dict/value-inl.hpp>
#endif
