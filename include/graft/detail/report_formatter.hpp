#pragma once
// The base of graft's fmt formatters for its result and report types (freeze_result,
// load_report, named_param_groups, ...): they print one way and take no format spec.

#include <algorithm>
#include <string_view>

#include <fmt/format.h>

namespace graft::detail {

struct report_formatter {
  /// Accepts "{}" only; a spec ("{:>10}") is a format error (at compile time where fmt checks
  /// format strings).
  constexpr auto parse(fmt::format_parse_context& ctx) {
    auto it = ctx.begin();
    if (it != ctx.end() && *it != '}') throw fmt::format_error("graft's reports take no format spec");
    return it;
  }
};

/// Writes a report's text to a formatter's output. graft's formatters compose that text with
/// fmt::format, which libfmt compiles; fmt::format_to(ctx.out(), ...) would compile fmt's
/// whole formatting engine into every translation unit that prints a report.
template <class Ctx>
auto write_text(Ctx& ctx, std::string_view text) {
  return std::copy(text.begin(), text.end(), ctx.out());
}

} // namespace graft::detail
