#pragma once
// The base of graft's fmt formatters for its result and report types (freeze_result,
// load_report, named_param_groups, ...): they print one way and take no format spec.

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

} // namespace graft::detail
