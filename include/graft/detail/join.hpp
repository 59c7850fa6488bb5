#pragma once
// Values joined into text for messages and reports. fmt::join would do, but it compiles fmt's
// formatting engine into every unit that uses it; this appends each value's own text (numbers
// through fmt::format, which libfmt compiles once).

#include <iterator>
#include <string>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include <graft/detail/join.hpp>

namespace graft::detail {

template <class T>
void append_text(std::string& out, const T& v) {
  if constexpr (std::is_convertible_v<const T&, std::string_view>) out += std::string_view(v);
  else out += fmt::format("{}", v);
}

/// The values of [first, last) as text, `sep` between them.
template <class It>
std::string join(It first, It last, std::string_view sep) {
  std::string out;
  for (auto it = first; it != last; ++it) {
    if (it != first) out += sep;
    append_text(out, *it);
  }
  return out;
}

/// The values of `r` as text, `sep` between them.
template <class Range>
std::string join(const Range& r, std::string_view sep) {
  return join(std::begin(r), std::end(r), sep);
}

/// The values of `r` as "[a, b, c]", as Python prints a shape's list.
template <class Range>
std::string bracketed(const Range& r) {
  return "[" + join(r, ", ") + "]";
}

} // namespace graft::detail
