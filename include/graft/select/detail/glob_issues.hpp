#pragma once
// What can be wrong with a glob pattern, as one table. Each row gives the issue, the function
// a failed compile-time check calls (declared, never defined, so the compiler's error names
// it), the text every message uses (pattern_error at run time, the _glob literal's
// static_assert at compile time), and a pattern that has the issue (for the tests).

#include <cstddef>
#include <string_view>

// X(issue, function, text, example)
#define GRAFT_GLOB_ISSUES(X)                                                                                     \
  X(empty_pattern, glob_pattern_is_empty, "the pattern is empty", "")                                           \
  X(unbalanced_brace, glob_pattern_has_an_unclosed_brace, "'{' is never closed", "layer{4.**")                  \
  X(stray_closing_brace, glob_pattern_has_a_closing_brace_that_closes_nothing, "'}' closes nothing", "layer4}.**") \
  X(unbalanced_bracket, glob_pattern_has_an_unclosed_bracket, "'[' is never closed", "layer[4.**")              \
  X(trailing_backslash, glob_pattern_ends_in_a_backslash, "'\\' at the end escapes nothing", "layer4\\")        \
  X(misplaced_double_star, glob_pattern_has_a_double_star_that_is_not_a_whole_segment,                          \
    "'**' must be a whole segment (write 'a.**.b', or '*' within a segment)", "a**b")                           \
  X(empty_segment, glob_pattern_has_an_empty_segment,                                                           \
    "empty segment (a leading, trailing or doubled '.', or an empty {} alternative)", "a..b")                   \
  X(too_many_alternatives, glob_pattern_expands_to_too_many_alternatives,                                       \
    "'{..}' expands to more than 4096 alternatives",                                                            \
    "{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}{s,t}{u,v}{w,x}{y,z}")

namespace graft::detail {

/// What is wrong with a glob pattern.
enum class glob_issue {
#define GRAFT_GLOB_ISSUE_ENUM(issue, function, text, example) issue,
  GRAFT_GLOB_ISSUES(GRAFT_GLOB_ISSUE_ENUM)
#undef GRAFT_GLOB_ISSUE_ENUM
};

/// One row of the table.
struct glob_issue_row {
  glob_issue issue;
  std::string_view function;
  std::string_view text;
  std::string_view example;
};

inline constexpr glob_issue_row glob_issue_table[] = {
#define GRAFT_GLOB_ISSUE_ROW(issue, function, text, example) {glob_issue::issue, #function, text, example},
    GRAFT_GLOB_ISSUES(GRAFT_GLOB_ISSUE_ROW)
#undef GRAFT_GLOB_ISSUE_ROW
};

/// The words every message uses for issue `i`.
constexpr const char* glob_issue_text(glob_issue i) {
  switch (i) {
#define GRAFT_GLOB_ISSUE_TEXT(issue, function, text, example) \
  case glob_issue::issue: return text;
    GRAFT_GLOB_ISSUES(GRAFT_GLOB_ISSUE_TEXT)
#undef GRAFT_GLOB_ISSUE_TEXT
  }
  return "invalid pattern";
}

// Reached only when a pattern checked in a constant expression is invalid: the compiler names
// the function in its error, and so the reason.
#define GRAFT_GLOB_ISSUE_FUNCTION(issue, function, text, example) void function();
GRAFT_GLOB_ISSUES(GRAFT_GLOB_ISSUE_FUNCTION)
#undef GRAFT_GLOB_ISSUE_FUNCTION

constexpr void fail_at_compile_time(glob_issue i) {
  switch (i) {
#define GRAFT_GLOB_ISSUE_CALL(issue, function, text, example) \
  case glob_issue::issue: function(); break;
    GRAFT_GLOB_ISSUES(GRAFT_GLOB_ISSUE_CALL)
#undef GRAFT_GLOB_ISSUE_CALL
  }
}

// Instantiated only for an invalid _glob literal: exactly one assertion fails, saying what is
// wrong; the template arguments name the issue and its 0-based position in the pattern.
template <glob_issue Issue, std::size_t Position>
struct invalid_glob_literal {
#define GRAFT_GLOB_ISSUE_ASSERT(issue, function, text, example) \
  static_assert(Issue != glob_issue::issue, "invalid _glob literal: " text " (at the position this template's second argument gives)");
  GRAFT_GLOB_ISSUES(GRAFT_GLOB_ISSUE_ASSERT)
#undef GRAFT_GLOB_ISSUE_ASSERT
};

} // namespace graft::detail
