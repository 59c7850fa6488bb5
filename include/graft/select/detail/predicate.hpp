#pragma once
// One selector over a user's predicate, for where(f, text) and owner_is(f, text): they differ
// only in what the predicate is handed (the dotted path, the whole view, or the owning module),
// and so in what they need.

#include <concepts>
#include <functional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <graft/select/protocol.hpp>
#include <graft/walk/tensor_view.hpp>

namespace graft::detail {

template <class V>
concept has_path = requires(const V& v) {
  { v.path() } -> std::convertible_to<std::string_view>;
  { v.name() } -> std::convertible_to<std::string_view>;
};

// What the predicate is handed. A path works on models and on checkpoint keys; the view and
// the owner need a live model.
struct pass_path {
  static constexpr needs requirement = needs::name;
  template <class V>
  static constexpr bool accepts = has_path<V>;
  template <class V>
  static std::string_view arg(const V& v) { return v.path(); }
};
struct pass_view {
  static constexpr needs requirement = needs::module;
  template <class V>
  static constexpr bool accepts = std::same_as<V, tensor_view>;
  static const tensor_view& arg(const tensor_view& v) { return v; }
};
struct pass_owner {
  static constexpr needs requirement = needs::module;
  template <class V>
  static constexpr bool accepts = std::same_as<V, tensor_view>;
  static const torch::nn::Module& arg(const tensor_view& v) { return std::as_const(v.owner()); }
};

// Selects what `f` accepts of what Pass hands it; describes itself as `text`.
template <class Pass, class F>
class predicate_selector : public selector_base {
public:
  static constexpr needs requirement = Pass::requirement;
  predicate_selector(F f, std::string text) : f_(std::move(f)), text_(std::move(text)) {}
  template <class V>
    requires(Pass::template accepts<V>)
  bool matches(const V& v) const {
    return static_cast<bool>(std::invoke(f_, Pass::arg(v)));
  }
  std::string describe() const { return text_; }

private:
  F f_;
  std::string text_;
};

} // namespace graft::detail
