#pragma once
// A torch::nn::Module's own parameters, buffers and children, in registration order.
//
// libtorch's public API hands them out only as copies (named_parameters(false) builds a fresh
// OrderedDict with a hash index on every call). On the libtorch releases graft is tested with,
// graft reads the module's registries in place instead, which is what makes a walk cheaper than
// one named_parameters() call. Those registries are private members, so that path is taken only
// for a release window whose layout was checked; any other release, or a build that defines
// GRAFT_MODULE_REGISTRY_ACCESS=0, uses the public copies (same results, slower walks). Both
// paths are built and tested.

#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/version.h>

#ifndef GRAFT_MODULE_REGISTRY_ACCESS
// Releases whose torch::nn::Module keeps parameters_ (protected), buffers_ and children_
// (private) as the OrderedDicts below: 1.13 through 2.13.
#if (TORCH_VERSION_MAJOR == 1 && TORCH_VERSION_MINOR >= 13) || \
    (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR <= 13)
#define GRAFT_MODULE_REGISTRY_ACCESS 1
#else
#define GRAFT_MODULE_REGISTRY_ACCESS 0
#endif
#endif

namespace graft::detail {

using tensor_registry = torch::OrderedDict<std::string, at::Tensor>;
using module_registry = torch::OrderedDict<std::string, std::shared_ptr<torch::nn::Module>>;
using tensor_items = std::vector<tensor_registry::Item>;
using module_items = std::vector<module_registry::Item>;

#if GRAFT_MODULE_REGISTRY_ACCESS

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

/// A module's own registries, viewed in place. Undefined tensors (Linear(bias=false)'s bias)
/// may appear: callers skip them.
class module_registries {
public:
  explicit module_registries(const torch::nn::Module& m) noexcept
      : params_(&(m.*parameters_peek::member).items()),
        buffers_(&(m.*steal(buffers_tag{})).items()),
        children_(&(m.*steal(children_tag{})).items()) {}
  const tensor_items& parameters() const noexcept { return *params_; }
  const tensor_items& buffers() const noexcept { return *buffers_; }
  const module_items& children() const noexcept { return *children_; }

private:
  const tensor_items* params_;
  const tensor_items* buffers_;
  const module_items* children_;
};

#else

/// A module's own registries, copied through the public API.
class module_registries {
public:
  explicit module_registries(const torch::nn::Module& m)
      : params_(m.named_parameters(/*recurse=*/false)),
        buffers_(m.named_buffers(/*recurse=*/false)),
        children_(m.named_children()) {}
  const tensor_items& parameters() const noexcept { return params_.items(); }
  const tensor_items& buffers() const noexcept { return buffers_.items(); }
  const module_items& children() const noexcept { return children_.items(); }

private:
  tensor_registry params_;
  tensor_registry buffers_;
  module_registry children_;
};

#endif

/// Whether graft reads module registries in place (1) or through public copies (0).
inline constexpr bool module_registries_in_place = GRAFT_MODULE_REGISTRY_ACCESS != 0;

} // namespace graft::detail
