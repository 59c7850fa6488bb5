#pragma once
// Selectors that need a live model: by the type of the owning module, by an owner predicate,
// and parameters versus buffers. Using one on a checkpoint does not compile.

#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include <c10/util/Type.h>
#include <torch/nn.h>  // the module headers are not self-contained: take them whole

#include <fmt/format.h>

#include <graft/detail/norm_layers.hpp>
#include <graft/detail/script_node.hpp>
#include <graft/select/basic.hpp>
#include <graft/select/concepts.hpp>
#include <graft/select/detail/predicate.hpp>

namespace graft {
namespace detail {
// "torch::nn::BatchNorm2dImpl" -> "BatchNorm2d"; user types keep their last name.
inline std::string short_type_name(const std::type_info& t) {
  std::string n = c10::demangle(t.name());
  auto colon = n.rfind("::");
  if (colon != std::string::npos) n = n.substr(colon + 2);
  if (n.size() > 4 && n.ends_with("Impl")) n.resize(n.size() - 4);
  return n;
}
} // namespace detail

/// Selects tensors registered directly by a module of one of the types Ms (or derived).
template <class... Ms>
struct of_type_t : selector_base {
  static_assert(sizeof...(Ms) > 0, "of_type<...> needs at least one module type");
  static_assert((std::is_base_of_v<torch::nn::Module, Ms> && ...),
                "of_type<M>: M must be a module class such as torch::nn::BatchNorm2dImpl "
                "(the Impl, not the holder torch::nn::BatchNorm2d)");
  static constexpr needs requirement = needs::module;
  bool matches(const tensor_view& v) const {
    const torch::nn::Module* m = &v.owner();
    return ((dynamic_cast<const Ms*>(m) != nullptr) || ...);
  }
  std::string describe() const {
    std::string s = "of_type<";
    ((s += detail::short_type_name(typeid(Ms)), s += ", "), ...);
    s.resize(s.size() - 2);
    return s + ">";
  }
};
/// of_type<torch::nn::BatchNorm2dImpl>: tensors owned by modules of these types.
template <class... Ms>
inline constexpr of_type_t<Ms...> of_type{};

namespace detail {
template <class... Ms>
constexpr of_type_t<Ms...> of_types(module_types<Ms...>) { return {}; }
} // namespace detail

/// Parameters and buffers of normalization layers (batch, instance, layer and group norm),
/// of C++ modules and of TorchScript modules (graft::script_module) alike.
struct norm_layers_t : selector_base {
  static constexpr needs requirement = needs::module;
  bool matches(const tensor_view& v) const {
    if (auto* s = detail::as_script_node(v.owner())) return detail::is_norm_class(detail::python_leaf(s->python_class()), false);
    return detail::of_types(detail::norm_layer_types{}).matches(v);
  }
  std::string describe() const { return "norm_layers"; }
};
inline constexpr norm_layers_t norm_layers{};

/// Tensors registered directly by a module of the named type: a C++ module by its class name
/// ("BatchNorm2d" for torch::nn::BatchNorm2dImpl, "BasicBlock" for a user's BasicBlockImpl), a
/// TorchScript module by its Python class, bare or qualified ("BatchNorm2d",
/// "torchvision.models.resnet.BasicBlock"). Works on both kinds of module tree, where of_type
/// needs C++ types.
class module_type : public selector_base {
public:
  static constexpr needs requirement = needs::module;
  explicit module_type(std::string name) : name_(std::move(name)) {}
  bool matches(const tensor_view& v) const {
    const auto& owner = v.owner();
    if (auto* s = detail::as_script_node(owner)) {
      const auto& c = s->python_class();
      return c == name_ || (c.size() > name_.size() && c.ends_with(name_) && c[c.size() - name_.size() - 1] == '.');
    }
    return detail::short_type_name(typeid(owner)) == name_;
  }
  std::string describe() const { return fmt::format("module_type(\"{}\")", name_); }

private:
  std::string name_;
};

/// The selector owner_is(pred, text) makes.
template <class F>
using owner_is_t = detail::predicate_selector<detail::pass_owner, F>;
/// Tensors whose owning module satisfies `pred(const torch::nn::Module&)`.
template <class F>
  requires std::is_invocable_v<const F&, const torch::nn::Module&>
owner_is_t<F> owner_is(F f, std::string text) { return owner_is_t<F>(std::move(f), std::move(text)); }

/// Registered as a parameter (not a buffer).
struct is_parameter_t : selector_base {
  static constexpr needs requirement = needs::module;
  bool matches(const tensor_view& v) const noexcept { return v.is_parameter(); }
  std::string describe() const { return "is_parameter"; }
};
inline constexpr is_parameter_t is_parameter{};

/// Registered as a buffer (running statistics and the like).
struct is_buffer_t : selector_base {
  static constexpr needs requirement = needs::module;
  bool matches(const tensor_view& v) const noexcept { return v.is_buffer(); }
  std::string describe() const { return "is_buffer"; }
};
inline constexpr is_buffer_t is_buffer{};

} // namespace graft
