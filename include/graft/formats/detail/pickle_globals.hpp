#pragma once
// The allow-list of pickle globals: what real torch.save checkpoints reference, each mapped to
// a fixed rebuild in C++. Nothing outside this table is ever resolved.

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

#include <torch/types.h>

#include <graft/detail/dtypes.hpp>

namespace graft::detail {

/// What an allowed global stands for.
enum class global_id : std::uint8_t {
  ordered_dict,                  ///< collections.OrderedDict
  counter,                       ///< collections.Counter: a dict of counts
  rebuild_tensor,                ///< torch._utils._rebuild_tensor: storage, offset, size, stride (before v2)
  rebuild_tensor_v2,             ///< torch._utils._rebuild_tensor_v2
  rebuild_tensor_v3,             ///< torch._utils._rebuild_tensor_v3: v2 plus a dtype, over an untyped storage
  rebuild_parameter,             ///< torch._utils._rebuild_parameter
  rebuild_parameter_with_state,  ///< torch._utils._rebuild_parameter_with_state
  storage_type,                  ///< torch.FloatStorage, ... (dtype says which)
  untyped_storage,               ///< torch.storage.UntypedStorage: bytes, typed by _rebuild_tensor_v3
  dtype_name,                    ///< torch.float32, ... (read as the string "torch.float32")
  device,                        ///< torch.device (read as a string such as "cuda:0")
  size,                          ///< torch.Size (read as a tuple)
  set,                           ///< builtins.set / frozenset (read as a list)
  codecs_encode,                 ///< _codecs.encode: protocol 2's spelling of bytes
  bytes_type,                    ///< builtins.bytes: protocol 2's spelling of b''
  script_class,                  ///< __torch__.*: a scripted module or class (read as a dict of its attributes; TorchScript archives only)
  // TorchScript's container tags, in TorchScript archives and torch::pickle_save files:
  script_list,                   ///< torch.jit._pickle.build_intlist, ...: a typed list (read as its list)
  restore_type_tag,              ///< torch.jit._pickle.restore_type_tag: a container and its type (read as the container)
};

/// One allowed global.
struct allowed_global {
  std::string_view module, name;
  global_id id;
  torch::Dtype dtype = torch::kFloat;
};

inline constexpr std::array allowed_globals{
    allowed_global{"collections", "OrderedDict", global_id::ordered_dict},
    allowed_global{"collections", "Counter", global_id::counter},
    allowed_global{"torch._utils", "_rebuild_tensor", global_id::rebuild_tensor},
    allowed_global{"torch._utils", "_rebuild_tensor_v2", global_id::rebuild_tensor_v2},
    allowed_global{"torch._utils", "_rebuild_tensor_v3", global_id::rebuild_tensor_v3},
    allowed_global{"torch.storage", "UntypedStorage", global_id::untyped_storage, torch::kByte},
    allowed_global{"torch._utils", "_rebuild_parameter", global_id::rebuild_parameter},
    allowed_global{"torch._utils", "_rebuild_parameter_with_state", global_id::rebuild_parameter_with_state},
    allowed_global{"torch", "FloatStorage", global_id::storage_type, torch::kFloat},
    allowed_global{"torch", "DoubleStorage", global_id::storage_type, torch::kDouble},
    allowed_global{"torch", "HalfStorage", global_id::storage_type, torch::kHalf},
    allowed_global{"torch", "BFloat16Storage", global_id::storage_type, torch::kBFloat16},
    allowed_global{"torch", "LongStorage", global_id::storage_type, torch::kLong},
    allowed_global{"torch", "IntStorage", global_id::storage_type, torch::kInt},
    allowed_global{"torch", "ShortStorage", global_id::storage_type, torch::kShort},
    allowed_global{"torch", "CharStorage", global_id::storage_type, torch::kChar},
    allowed_global{"torch", "ByteStorage", global_id::storage_type, torch::kByte},
    allowed_global{"torch", "BoolStorage", global_id::storage_type, torch::kBool},
    allowed_global{"torch", "ComplexFloatStorage", global_id::storage_type, torch::kComplexFloat},
    allowed_global{"torch", "ComplexDoubleStorage", global_id::storage_type, torch::kComplexDouble},
    allowed_global{"torch", "device", global_id::device},
    allowed_global{"torch", "Size", global_id::size},
    allowed_global{"builtins", "set", global_id::set},
    allowed_global{"builtins", "frozenset", global_id::set},
    allowed_global{"__builtin__", "set", global_id::set},
    allowed_global{"__builtin__", "frozenset", global_id::set},
    allowed_global{"builtins", "bytes", global_id::bytes_type},
    allowed_global{"__builtin__", "bytes", global_id::bytes_type},
    allowed_global{"_codecs", "encode", global_id::codecs_encode},
};

/// TorchScript's container tags, which its archives' data.pkl and libtorch's
/// torch::pickle_save use (each returns its first argument). A TorchScript archive also allows
/// the `__torch__.*` classes of its scripted modules.
inline constexpr std::array allowed_script_globals{
    allowed_global{"torch.jit._pickle", "build_intlist", global_id::script_list},
    allowed_global{"torch.jit._pickle", "build_doublelist", global_id::script_list},
    allowed_global{"torch.jit._pickle", "build_boollist", global_id::script_list},
    allowed_global{"torch.jit._pickle", "build_tensorlist", global_id::script_list},
    allowed_global{"torch.jit._pickle", "restore_type_tag", global_id::restore_type_tag},
};

/// Whether `module` holds TorchScript's compiled classes ("__torch__", "__torch__.foo").
constexpr bool is_script_class_module(std::string_view module) noexcept {
  return module == "__torch__" || module.starts_with("__torch__.");
}

/// The allowed global `module.name`, or nullptr. Every dtype detail/dtypes.hpp names
/// (torch.float32, torch.uint16, ...) is allowed as a dtype_name, whether or not this
/// libtorch can represent it: a tensor of it is refused when rebuilt, naming the dtype.
inline const allowed_global* find_global(std::string_view module, std::string_view name) noexcept {
  static constexpr allowed_global dtype{"torch", "", global_id::dtype_name};
  for (const auto& g : allowed_globals)
    if (g.module == module && g.name == name) return &g;
  if (module == "torch" && find_python_dtype(name)) return &dtype;
  return nullptr;
}

/// The global `module.name` a TorchScript archive may also use, or nullptr (the
/// `__torch__.*` classes are told by is_script_class_module).
inline const allowed_global* find_script_global(std::string_view module, std::string_view name) noexcept {
  for (const auto& g : allowed_script_globals)
    if (g.module == module && g.name == name) return &g;
  return nullptr;
}

/// A global's Python name, for messages.
inline std::string_view global_name(global_id id) noexcept {
  switch (id) {
    case global_id::ordered_dict: return "collections.OrderedDict";
    case global_id::counter: return "collections.Counter";
    case global_id::rebuild_tensor: return "torch._utils._rebuild_tensor";
    case global_id::rebuild_tensor_v2: return "torch._utils._rebuild_tensor_v2";
    case global_id::rebuild_tensor_v3: return "torch._utils._rebuild_tensor_v3";
    case global_id::untyped_storage: return "torch.storage.UntypedStorage";
    case global_id::rebuild_parameter: return "torch._utils._rebuild_parameter";
    case global_id::rebuild_parameter_with_state: return "torch._utils._rebuild_parameter_with_state";
    case global_id::storage_type: return "a torch storage type";
    case global_id::dtype_name: return "a torch dtype";
    case global_id::device: return "torch.device";
    case global_id::size: return "torch.Size";
    case global_id::set: return "set";
    case global_id::codecs_encode: return "_codecs.encode";
    case global_id::bytes_type: return "bytes";
    case global_id::script_class: return "a TorchScript class";
    case global_id::script_list: return "a torch.jit._pickle list builder";
    case global_id::restore_type_tag: return "torch.jit._pickle.restore_type_tag";
  }
  return "?";
}

/// The torch storage class Python writes for `dtype` ("FloatStorage"), or nullopt.
inline std::optional<std::string_view> storage_type_name(torch::Dtype dtype) noexcept {
  for (const auto& g : allowed_globals)
    if (g.id == global_id::storage_type && g.dtype == dtype) return g.name;
  return std::nullopt;
}

} // namespace graft::detail
