#pragma once
// graft::amp::autocast: libtorch's automatic mixed precision for one scope, as Python's
// `with torch.autocast(device_type, dtype=...):`. libtorch 2.4 replaced its per-device autocast
// calls (is_cpu_enabled, set_autocast_gpu_dtype, ...) by calls that take the device type; the
// functions in graft::detail below are the one place that knows both.

#include <string>

#include <ATen/autocast_mode.h>
#include <fmt/format.h>
#include <torch/types.h>

#include <graft/detail/dtypes.hpp>
#include <graft/error.hpp>

namespace graft {
namespace detail {

/// Whether autocast runs ops in `dtype` on `device`: CUDA takes float16 and bfloat16, the CPU
/// bfloat16 (and float16 from libtorch 2.4), as Python's torch.autocast accepts them.
inline bool autocast_supports(c10::DeviceType device, c10::ScalarType dtype) noexcept {
  if (device == c10::DeviceType::CUDA) return dtype == c10::ScalarType::Half || dtype == c10::ScalarType::BFloat16;
  if (device == c10::DeviceType::CPU) {
#if GRAFT_TORCH_AT_LEAST(2, 4)
    return dtype == c10::ScalarType::BFloat16 || dtype == c10::ScalarType::Half;
#else
    return dtype == c10::ScalarType::BFloat16;
#endif
  }
  return false;
}

/// `device` if graft's autocast takes it (cpu, cuda); an option_error naming it otherwise.
inline c10::DeviceType autocast_device(c10::DeviceType device, const char* caller) {
  if (device != c10::DeviceType::CPU && device != c10::DeviceType::CUDA)
    throw option_error(fmt::format("{}: autocast on device type '{}' is not supported; graft's autocast "
                                   "takes cpu or cuda",
                                   caller, c10::DeviceTypeName(device, /*lower_case=*/true)));
  return device;
}

// The calls below take a device that autocast_device() accepted: cpu or cuda.

/// Whether autocast is on for `device` in this thread.
inline bool autocast_enabled(c10::DeviceType device) {
#if GRAFT_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

/// Turns autocast on or off for `device` in this thread.
inline void set_autocast_enabled(c10::DeviceType device, bool enabled) {
#if GRAFT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CUDA) at::autocast::set_enabled(enabled);
  else at::autocast::set_cpu_enabled(enabled);
#endif
}

/// The dtype autocast runs ops in on `device` in this thread.
inline c10::ScalarType autocast_dtype(c10::DeviceType device) {
#if GRAFT_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                         : at::autocast::get_autocast_cpu_dtype();
#endif
}

/// Sets the dtype autocast runs ops in on `device` in this thread.
inline void set_autocast_dtype(c10::DeviceType device, c10::ScalarType dtype) {
#if GRAFT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CUDA) at::autocast::set_autocast_gpu_dtype(dtype);
  else at::autocast::set_autocast_cpu_dtype(dtype);
#endif
}

} // namespace detail

namespace amp {

/// Whether autocast is on for `device` (torch::kCPU or torch::kCUDA) in this thread: Python's
/// torch.is_autocast_enabled(device_type). option_error for another device type.
inline bool is_autocast_enabled(torch::DeviceType device) {
  return detail::autocast_enabled(detail::autocast_device(device, "is_autocast_enabled"));
}

/// The dtype autocast runs ops in on `device` (torch::kCPU or torch::kCUDA) in this thread:
/// Python's torch.get_autocast_dtype(device_type). option_error for another device type.
inline torch::Dtype autocast_dtype(torch::DeviceType device) {
  return detail::autocast_dtype(detail::autocast_device(device, "autocast_dtype"));
}

/// Mixed precision for a scope: while it lives, libtorch runs the ops autocast knows (matmul,
/// linear, convolutions, ...) on tensors of `device` in `dtype`, and the rest in float32, as
/// Python's `with torch.autocast(device_type, dtype):`. Leaving the scope (also by an
/// exception) restores the enabled flag and dtype it found, and leaving the outermost scope
/// drops autocast's cache of cast weights, as torch.autocast.__exit__ does. Scopes nest;
/// `enabled = false` turns autocast off inside an enabled scope. Autocast's state belongs to a
/// thread: make and destroy a scope on the same thread, innermost first.
class autocast {
public:
  /// Turns autocast on (or, with `enabled = false`, off) for `device` with `dtype`. option_error
  /// for a device other than cpu and cuda, or a dtype autocast does not take there (cuda:
  /// float16, bfloat16; cpu: bfloat16, and float16 from libtorch 2.4), whether or not enabled.
  autocast(torch::DeviceType device, torch::Dtype dtype, bool enabled = true)
      : device_(detail::autocast_device(device, "autocast")), dtype_(dtype), enabled_(enabled) {
    if (!detail::autocast_supports(device_, dtype_)) {
#if GRAFT_TORCH_AT_LEAST(2, 4)
      const char* cpu_takes = "BFloat16 and Half (float16)";
#else
      const char* cpu_takes = "BFloat16 only";
#endif
      const char* takes = device_ == c10::DeviceType::CUDA ? "Half (float16) and BFloat16" : cpu_takes;
      throw option_error(fmt::format("autocast: {} autocast does not run ops in {}; it takes {} (libtorch {})",
                                     c10::DeviceTypeName(device_, /*lower_case=*/true), c10::toString(dtype_),
                                     takes, graft::detail::torch_release));
    }
    prev_enabled_ = detail::autocast_enabled(device_);
    prev_dtype_ = detail::autocast_dtype(device_);
    // The dtype first: it is the one call that may check its argument; nothing has changed yet
    // if it throws.
    detail::set_autocast_dtype(device_, dtype_);
    detail::set_autocast_enabled(device_, enabled_);
    at::autocast::increment_nesting();
  }

  /// The same with the dtype autocast has on `device` now (by default float16 on cuda,
  /// bfloat16 on cpu), as torch.autocast(device_type) without a dtype.
  explicit autocast(torch::DeviceType device, bool enabled = true)
      : autocast(device, detail::autocast_dtype(detail::autocast_device(device, "autocast")), enabled) {}

  /// Restores the enabled flag and dtype found on entry; the outermost scope also clears
  /// autocast's cache.
  ~autocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    detail::set_autocast_enabled(device_, prev_enabled_);
    detail::set_autocast_dtype(device_, prev_dtype_);
  }

  autocast(const autocast&) = delete;
  autocast& operator=(const autocast&) = delete;

  /// The device type this scope sets.
  torch::DeviceType device_type() const noexcept { return device_; }
  /// The dtype this scope sets.
  torch::Dtype dtype() const noexcept { return dtype_; }
  /// Whether this scope turns autocast on (true) or off (false).
  bool enabled() const noexcept { return enabled_; }

private:
  torch::DeviceType device_;
  torch::Dtype dtype_;
  bool enabled_;
  bool prev_enabled_ = false;
  torch::Dtype prev_dtype_ = c10::ScalarType::Float;
};

} // namespace amp
} // namespace graft
