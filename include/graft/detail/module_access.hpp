#pragma once
// Direct, read-only access to a torch::nn::Module's own registries. libtorch exposes them only
// as copies (named_parameters() builds a fresh OrderedDict with every full path); the walk
// needs the registries themselves to visit a tree without allocating.

#include <memory>
#include <string>

#include <torch/nn/module.h>

namespace graft::detail {

using tensor_registry = torch::OrderedDict<std::string, at::Tensor>;
using module_registry = torch::OrderedDict<std::string, std::shared_ptr<torch::nn::Module>>;

struct buffers_tag {};
struct children_tag {};

// An explicit instantiation may name private members (access checking does not apply to
// its template arguments); the friend functions it defines hand the member pointers out.
template <class Tag, auto Member>
struct member_thief {
  friend constexpr auto steal(Tag) noexcept { return Member; }
};
constexpr auto steal(buffers_tag) noexcept;
constexpr auto steal(children_tag) noexcept;
template struct member_thief<buffers_tag, &torch::nn::Module::buffers_>;
template struct member_thief<children_tag, &torch::nn::Module::children_>;

// parameters_ is protected: a derived class may form a pointer to it.
struct parameters_peek : torch::nn::Module {
  static constexpr auto member = &parameters_peek::parameters_;
};

inline const tensor_registry& own_parameters(const torch::nn::Module& m) noexcept {
  return m.*parameters_peek::member;
}
inline const tensor_registry& own_buffers(const torch::nn::Module& m) noexcept {
  return m.*steal(buffers_tag{});
}
inline const module_registry& own_children(const torch::nn::Module& m) noexcept {
  return m.*steal(children_tag{});
}

} // namespace graft::detail
