#pragma once
// The definitions of select/glob.hpp: parsing a pattern into its matcher, and matching.

#include <cstddef>
#include <memory>
#include <string_view>

#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/select/detail/glob_issues.hpp>
#include <graft/select/detail/glob_match.hpp>
#include <graft/select/detail/glob_parse.hpp>
#include <graft/select/glob.hpp>

namespace graft {

GRAFT_FUNC glob::glob(std::string_view text, std::nullptr_t)
    : pattern_(text), program_(std::make_shared<const detail::glob_program>(text)) {}

GRAFT_FUNC std::string_view glob::checked(std::string_view text) {
  if (auto p = detail::check_glob(text))
    throw pattern_error(fmt::format("invalid glob '{}' at position {}: {}\n  {}\n  {:>{}}", text,
                                    p->position, detail::glob_issue_text(p->issue), text, "^",
                                    p->position + 1));
  return text;
}

GRAFT_FUNC bool glob::matches_path(std::string_view path) const { return program_->matches(path); }

GRAFT_FUNC bool glob::could_match_under(std::string_view prefix) const {
  return program_->could_match_under(prefix);
}

} // namespace graft
