#pragma once
// The definitions of state_dict/report.hpp.

#include <graft/config.hpp>
#include <graft/state_dict/report.hpp>

namespace graft {

GRAFT_FUNC load_report::load_report(const load_report&) = default;
GRAFT_FUNC load_report::load_report(load_report&&) noexcept = default;
GRAFT_FUNC load_report& load_report::operator=(const load_report&) = default;
GRAFT_FUNC load_report& load_report::operator=(load_report&&) noexcept = default;
GRAFT_FUNC load_report::~load_report() = default;

} // namespace graft
