#pragma once
// The safetensors header: an 8-byte little-endian length N, N bytes of JSON naming each
// tensor's dtype, shape and byte range in the data section that follows. Parsing checks
// everything a tensor view relies on, so the data can be viewed without further checks.

#include <algorithm>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/detail/dtypes.hpp>
#include <graft/detail/join.hpp>
#include <graft/detail/order.hpp>
#include <graft/error.hpp>
#include <graft/formats/detail/json.hpp>
#include <graft/io/mapped_file.hpp>

namespace graft::detail {

/// The entry of safetensors dtype `code` ("F32"), or nullptr if the format has no such code.
inline const dtype_name* find_safetensors_dtype(std::string_view code) noexcept {
  for (const auto& d : dtype_names)
    if (!d.safetensors.empty() && d.safetensors == code) return &d;
  return nullptr;
}

/// The safetensors code of a libtorch dtype, or an empty view if the format has none.
inline std::string_view safetensors_code(torch::Dtype dtype) noexcept {
  auto d = find_dtype(dtype);
  return d ? d->safetensors : std::string_view();
}

/// safetensors' own bound on the header (the reference reader refuses more), so a hostile
/// length cannot make the JSON parser allocate without limit.
inline constexpr std::uint64_t safetensors_max_header = 100'000'000;

/// One tensor as the header describes it; offsets are relative to the data section.
struct safetensors_entry {
  std::string name;
  torch::Dtype dtype;
  std::vector<std::int64_t> shape;
  std::uint64_t begin, end;
};

/// A checked header: every entry's range lies in the data section and the ranges tile it.
struct safetensors_header {
  std::vector<safetensors_entry> tensors;  ///< in the header's written order
  std::map<std::string, std::string> metadata;
  std::uint64_t data_start = 0;  ///< file offset of the data section
};

inline std::uint64_t read_le64(const std::byte* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = v << 8 | std::to_integer<std::uint64_t>(p[i]);
  return v;
}

/// Parses and checks the header of the safetensors file `f`; format_error naming the file.
inline safetensors_header parse_safetensors_header(const mapped_file& f) {
  const auto& path = f.path();
  auto fail = [&](std::string_view what) { throw format_error(what, {.file = path}); };
  const std::uint64_t size = f.size();
  if (size < 8)
    fail(fmt::format("{} bytes is too short for a safetensors file (its header length alone takes 8)", size));
  const std::uint64_t n = read_le64(f.data());
  if (n > size - 8)
    fail(fmt::format("the header length at byte 0 says {} bytes, but only {} follow (truncated, or not a safetensors file?)",
                     n, size - 8));
  if (n > safetensors_max_header)
    fail(fmt::format("the header length at byte 0 says {} bytes, more than safetensors' limit of {}", n,
                     safetensors_max_header));

  safetensors_header h;
  h.data_start = 8 + n;
  const std::uint64_t data_size = size - h.data_start;
  auto root = json::parse(f.bytes(8, n), path, 8);
  if (!root.is_object())
    fail(fmt::format("the header is a JSON {}, not an object mapping tensor names to their entries", root.type_name()));

  h.tensors.reserve(root.size());
  for (const auto& member : root.members()) {
    const std::string& name = member.key;  // not a structured binding: lambdas below capture it
    const auto& e = member.value;
    if (name == "__metadata__") {
      if (!e.is_object()) fail(fmt::format("'__metadata__' is a JSON {}, not an object of strings", e.type_name()));
      for (const auto& [k, v] : e.members()) {
        if (!v.is_string()) fail(fmt::format("'__metadata__' entry '{}' is a JSON {}, not a string", k, v.type_name()));
        h.metadata.emplace(k, v.as_string());
      }
      continue;
    }
    auto bad = [&](std::string_view what) { fail(fmt::format("tensor '{}': {}", name, what)); };
    if (!e.is_object()) bad(fmt::format("its entry is a JSON {}, not an object with dtype, shape and data_offsets", e.type_name()));
    const json* fields[3];
    for (int i = 0; const char* field : {"dtype", "shape", "data_offsets"})
      if (!(fields[i++] = e.find(field))) bad(fmt::format("its entry has no \"{}\"", field));

    const auto& jd = *fields[0];
    if (!jd.is_string()) bad(fmt::format("\"dtype\" is a JSON {}, not a string", jd.type_name()));
    const auto& code = jd.as_string();
    auto known = find_safetensors_dtype(code);
    if (!known) {
      std::vector<std::string_view> codes;
      for (const auto& d : dtype_names)
        if (!d.safetensors.empty()) codes.push_back(d.safetensors);
      bad(fmt::format("unknown dtype '{}' (safetensors dtypes: {})", code, graft::detail::join(codes, ", ")));
    }
    if (!known->dtype)
      bad(fmt::format("dtype {} (torch.{}) has no equivalent in libtorch {}; convert it before saving", code,
                      known->python, torch_release));

    const auto& js = *fields[1];
    if (!js.is_array()) bad(fmt::format("\"shape\" is a JSON {}, not an array", js.type_name()));
    safetensors_entry t{name, *known->dtype, {}, 0, 0};
    std::uint64_t numel = 1;
    bool overflow = false, empty = false;
    for (const auto& d : js.elements()) {
      auto dim = d.as_index();
      if (!dim) bad(fmt::format("\"shape\" {} holds {}, not a non-negative integer", js.dump(), d.dump()));
      if (*dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        bad(fmt::format("\"shape\" {} has a dimension too large for libtorch", js.dump()));
      t.shape.push_back(static_cast<std::int64_t>(*dim));
      overflow |= __builtin_mul_overflow(numel, *dim, &numel);
      empty |= *dim == 0;
    }
    std::uint64_t nbytes = 0;
    // A zero dimension makes an overflowing product harmless: the tensor is empty.
    if (!empty && (overflow || __builtin_mul_overflow(numel, known->itemsize, &nbytes)))
      bad(fmt::format("\"shape\" {} of {} needs more bytes than 64 bits can count", js.dump(), code));

    const auto& jo = *fields[2];
    if (!jo.is_array() || jo.size() != 2 || !jo.elements()[0].as_index() || !jo.elements()[1].as_index())
      bad(fmt::format("\"data_offsets\" {} is not a pair [begin, end] of non-negative integers", jo.dump()));
    t.begin = *jo.elements()[0].as_index();
    t.end = *jo.elements()[1].as_index();
    if (t.begin > t.end) bad(fmt::format("\"data_offsets\" [{}, {}] end before they begin", t.begin, t.end));
    if (t.end > data_size)
      bad(fmt::format("\"data_offsets\" [{}, {}] run past the end of the data section ({} bytes from file offset {})",
                      t.begin, t.end, data_size, h.data_start));
    if (t.end - t.begin != nbytes)
      bad(fmt::format("shape {} of {} takes {} bytes, but \"data_offsets\" [{}, {}] hold {}", js.dump(), code, nbytes,
                      t.begin, t.end, t.end - t.begin));
    h.tensors.push_back(std::move(t));
  }

  // The ranges must tile the data section exactly, as the reference reader requires: a gap or
  // an overlap means a damaged file or one whose writer disagrees with ours about the layout.
  const auto& ts = h.tensors;
  std::uint64_t covered = 0;
  const safetensors_entry* prev = nullptr;
  for (auto i : stable_order(ts.size(), [&](std::size_t a, std::size_t b) {
         return ts[a].begin != ts[b].begin ? ts[a].begin < ts[b].begin : ts[a].end < ts[b].end;
       })) {
    const auto* t = &ts[i];
    if (t->begin < covered)
      fail(fmt::format("tensor '{}' (data_offsets [{}, {}]) overlaps tensor '{}' ([{}, {}])", t->name, t->begin, t->end,
                       prev->name, prev->begin, prev->end));
    if (t->begin > covered)
      fail(fmt::format("bytes [{}, {}) of the data section (file offset {}) belong to no tensor{}", covered, t->begin,
                       h.data_start + covered, prev ? fmt::format(" (between '{}' and '{}')", prev->name, t->name) : ""));
    covered = t->end;
    prev = t;
  }
  if (covered != data_size)
    fail(fmt::format("bytes [{}, {}) of the data section (file offset {}) belong to no tensor ({})", covered, data_size,
                     h.data_start + covered,
                     prev ? fmt::format("after the last one, '{}'", prev->name) : std::string("the header names none")));
  return h;
}

} // namespace graft::detail
