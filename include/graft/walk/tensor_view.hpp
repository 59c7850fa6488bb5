#pragma once
// tensor_view: one tensor of a module tree as a walk sees it.

#include <cstdint>
#include <string_view>

#include <torch/nn/module.h>

namespace graft {

/// Whether a tensor is registered as a parameter or as a buffer.
enum class tensor_kind : std::uint8_t { parameter, buffer };

/// One visited tensor: its dotted path, local name, owning module and kind. The path and names
/// view the walk's buffer: they are valid until the walk advances (copy them to keep them).
class tensor_view {
public:
  tensor_view(std::string_view path, std::size_t name_offset, const torch::Tensor& tensor,
              const torch::nn::Module& owner, tensor_kind kind) noexcept
      : path_(path), name_offset_(name_offset), tensor_(&tensor), owner_(&owner), kind_(kind) {}

  /// Full dotted path from the walked root: "layer4.1.bn2.weight".
  std::string_view path() const noexcept { return path_; }
  /// The name under which the owning module registered it: "weight".
  std::string_view name() const noexcept { return path_.substr(name_offset_); }
  /// The owning module's path: "layer4.1.bn2" (empty for the root).
  std::string_view module_path() const noexcept {
    return path_.substr(0, name_offset_ == 0 ? 0 : name_offset_ - 1);
  }
  /// The tensor itself (a handle: changing requires_grad or copying into it changes the model).
  const torch::Tensor& tensor() const noexcept { return *tensor_; }
  /// The module that registered the tensor.
  torch::nn::Module& owner() const noexcept { return const_cast<torch::nn::Module&>(*owner_); }
  tensor_kind kind() const noexcept { return kind_; }
  bool is_parameter() const noexcept { return kind_ == tensor_kind::parameter; }
  bool is_buffer() const noexcept { return kind_ == tensor_kind::buffer; }

private:
  std::string_view path_;
  std::size_t name_offset_;
  const torch::Tensor* tensor_;
  const torch::nn::Module* owner_;
  tensor_kind kind_;
};

} // namespace graft
