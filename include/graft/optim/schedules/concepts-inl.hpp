#pragma once
// The definitions of optim/schedules/concepts.hpp: the messages of settings a schedule refuses.

#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/optim/schedules/concepts.hpp>

namespace graft::detail::sched {

GRAFT_FUNC void bad_setting(std::string_view setting, std::string_view requirement, double value) {
  throw option_error(fmt::format("{} must be {}, got {}", setting, requirement, value));
}

GRAFT_FUNC void bad_setting(std::string_view setting, std::string_view requirement, std::int64_t value) {
  throw option_error(fmt::format("{} must be {}, got {}", setting, requirement, value));
}

GRAFT_FUNC void bad_range(std::string_view setting, double value, double lo, double hi) {
  throw option_error(fmt::format("{} must be in [{}, {}], got {}", setting, lo, hi, value));
}

} // namespace graft::detail::sched
