#pragma once
// Shared by the torch.save tests: one text summary of an object tree, computed the same way by
// Python (from torch.load) and by C++ (from read_torch_save), so equal text means equal trees.

#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>
#include <zlib.h>

#include <graft/detail/dtypes.hpp>
#include <graft/state_dict/value.hpp>

namespace graft::test {

/// Python's `summary(obj)`: a line per node; tensors by dtype, shape, CRC-32 of their bytes and requires_grad.
inline const std::string py_summary = R"PY(
import torch, zlib, collections, sys, warnings
warnings.filterwarnings("ignore")
def _summ(o, p, out):
    if isinstance(o, torch.Tensor):
        b = o.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        out.append(f"T {p} {str(o.dtype)[6:]} {list(o.shape)} {zlib.crc32(b)} {int(o.requires_grad)}")
    elif isinstance(o, dict):
        out.append(f"D {p} {len(o)}")
        for k, v in o.items(): _summ(v, f"{p}.{k}" if p else str(k), out)
    elif isinstance(o, (list, tuple, set, frozenset)):
        out.append(f"S {p} {'tuple' if isinstance(o, tuple) else 'list'} {len(o)}")
        for i, v in enumerate(o): _summ(v, f"{p}.{i}" if p else str(i), out)
    else:
        out.append(f"V {p} {type(o).__name__} {o!r}")
def summary(o):
    out = []
    _summ(o, "", out)
    return "\n".join(out) + "\n"
)PY";

inline std::string py_dtype(torch::Dtype d) {
  auto name = graft::detail::find_dtype(d);
  return name ? std::string(name->python) : "?";
}

inline std::uint32_t tensor_crc(const torch::Tensor& t) {
  auto c = t.detach().contiguous();
  return static_cast<std::uint32_t>(
      ::crc32(::crc32(0L, Z_NULL, 0), static_cast<const Bytef*>(c.data_ptr()), static_cast<uInt>(c.nbytes())));
}

inline void summarize(const value& v, const std::string& p, std::string& out) {
  auto child = [&](const std::string& k) { return p.empty() ? k : p + "." + k; };
  if (v.is_tensor()) {
    auto& t = v.as_tensor();
    out += fmt::format("T {} {} [{}] {} {}\n", p, py_dtype(t.scalar_type()), fmt::join(t.sizes(), ", "), tensor_crc(t),
                       int(t.requires_grad()));
  } else if (v.is_dict()) {
    out += fmt::format("D {} {}\n", p, v.as_dict().size());
    for (auto& [k, x] : v.as_dict()) summarize(x, child(k.key_text()), out);
  } else if (v.is_sequence()) {
    auto& s = v.as_sequence();
    out += fmt::format("S {} {} {}\n", p, s.is_tuple ? "tuple" : "list", s.items.size());
    for (std::size_t i = 0; i < s.items.size(); ++i) summarize(s.items[i], child(std::to_string(i)), out);
  } else if (v.is_none()) {
    out += fmt::format("V {} NoneType None\n", p);
  } else if (v.is_bool()) {
    out += fmt::format("V {} bool {}\n", p, v.as_bool() ? "True" : "False");
  } else if (v.is_int()) {
    out += fmt::format("V {} int {}\n", p, v.as_int());
  } else if (v.is_float()) {
    auto s = fmt::format("{}", v.as_number());
    if (s.find_first_of(".en") == std::string::npos) s += ".0";
    out += fmt::format("V {} float {}\n", p, s);
  } else if (v.is_string()) {
    out += fmt::format("V {} str '{}'\n", p, v.as_string());
  } else if (v.is_bytes()) {
    out += fmt::format("V {} bytes b'{}'\n", p, std::get<value::bytes>(v.raw()).data);
  }
}

/// The C++ twin of Python's summary().
inline std::string summary(const value& v) {
  std::string out;
  summarize(v, "", out);
  return out;
}

} // namespace graft::test
