#pragma once
// The dtypes checkpoint formats name, and which of them the libtorch graft is built against
// can represent. PyTorch 2.x added unsigned 16/32/64-bit integers and float8 formats; a file
// holding one is read where libtorch has the dtype and refused by name where it does not.
// This is the one place that knows which libtorch release added which dtype.

#include <cstddef>
#include <optional>
#include <string_view>

#include <torch/types.h>
#include <torch/version.h>

/// Whether the libtorch graft is compiled against is release MAJOR.MINOR or newer.
#define GRAFT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace graft::detail {

/// One dtype as the formats name it: Python's torch.<python> and safetensors' code (empty if
/// the format has none); `dtype` is empty where this libtorch cannot represent it.
struct dtype_name {
  std::string_view python;
  std::string_view safetensors;
  std::optional<torch::Dtype> dtype;
  std::size_t itemsize;
};

inline constexpr dtype_name dtype_names[] = {
    {"bool", "BOOL", torch::kBool, 1},
    {"uint8", "U8", torch::kUInt8, 1},
    {"int8", "I8", torch::kInt8, 1},
    {"int16", "I16", torch::kInt16, 2},
    {"int32", "I32", torch::kInt32, 4},
    {"int64", "I64", torch::kInt64, 8},
    {"float16", "F16", torch::kFloat16, 2},
    {"bfloat16", "BF16", torch::kBFloat16, 2},
    {"float32", "F32", torch::kFloat32, 4},
    {"float64", "F64", torch::kFloat64, 8},
    {"complex64", "C64", torch::kComplexFloat, 8},
    {"complex128", "", torch::kComplexDouble, 16},
#if GRAFT_TORCH_AT_LEAST(2, 3)
    {"uint16", "U16", torch::kUInt16, 2},
    {"uint32", "U32", torch::kUInt32, 4},
    {"uint64", "U64", torch::kUInt64, 8},
#else
    {"uint16", "U16", std::nullopt, 2},
    {"uint32", "U32", std::nullopt, 4},
    {"uint64", "U64", std::nullopt, 8},
#endif
#if GRAFT_TORCH_AT_LEAST(2, 1)
    {"float8_e4m3fn", "F8_E4M3", torch::kFloat8_e4m3fn, 1},
    {"float8_e5m2", "F8_E5M2", torch::kFloat8_e5m2, 1},
#else
    {"float8_e4m3fn", "F8_E4M3", std::nullopt, 1},
    {"float8_e5m2", "F8_E5M2", std::nullopt, 1},
#endif
#if GRAFT_TORCH_AT_LEAST(2, 2)
    {"float8_e4m3fnuz", "F8_E4M3FNUZ", torch::kFloat8_e4m3fnuz, 1},
    {"float8_e5m2fnuz", "F8_E5M2FNUZ", torch::kFloat8_e5m2fnuz, 1},
#else
    {"float8_e4m3fnuz", "F8_E4M3FNUZ", std::nullopt, 1},
    {"float8_e5m2fnuz", "F8_E5M2FNUZ", std::nullopt, 1},
#endif
#if GRAFT_TORCH_AT_LEAST(2, 7)
    {"float8_e8m0fnu", "F8_E8M0", torch::kFloat8_e8m0fnu, 1},
#else
    {"float8_e8m0fnu", "F8_E8M0", std::nullopt, 1},
#endif
};

/// The dtype Python calls torch.<name> ("float32"), or nullptr if no format names it.
constexpr const dtype_name* find_python_dtype(std::string_view name) noexcept {
  for (const auto& d : dtype_names)
    if (d.python == name) return &d;
  return nullptr;
}

/// The entry for a libtorch dtype, or nullptr.
inline const dtype_name* find_dtype(torch::Dtype dtype) noexcept {
  for (const auto& d : dtype_names)
    if (d.dtype == dtype) return &d;
  return nullptr;
}

/// The libtorch release graft is built against, for messages ("libtorch 1.13").
inline constexpr std::string_view torch_release = TORCH_VERSION;

} // namespace graft::detail
