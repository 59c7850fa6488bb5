#pragma once
// regex: select by a regular expression that must match the whole dotted path (as PEFT's
// target_modules does). RE2 runs it: linear time, and far faster than std::regex. Walks prune
// the subtrees whose prefix lies outside the range of strings the expression can match.

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <graft/config.hpp>
#include <graft/select/concepts.hpp>

namespace re2 {
class RE2;
}

namespace graft {

/// Selects tensors whose whole dotted path matches an RE2 regular expression.
class regex : public selector_base {
public:
  static constexpr needs requirement = needs::name;

  /// Compiles `pattern`; a pattern_error with RE2's diagnosis if it is invalid.
  GRAFT_FUNC explicit regex(std::string_view pattern);

  /// Whether a whole dotted path matches.
  GRAFT_FUNC bool matches_path(std::string_view path) const;
  /// Whether a path starting with the module prefix ("layer4.1.") could match.
  bool could_match_under(std::string_view prefix) const {
    if (!bounded_) return true;
    // The smallest string with this prefix is the prefix itself; the prefixed strings reach
    // min unless min's first bytes already sort after the prefix.
    return (max_.empty() || prefix <= std::string_view(max_)) &&
           std::string_view(min_).substr(0, prefix.size()) <= prefix;
  }
  template <class View>
    requires requires(const View& v) { { v.path() } -> std::convertible_to<std::string_view>; }
  bool matches(const View& v) const {
    return matches_path(v.path());
  }
  std::string describe() const { return "regex '" + pattern_ + "'"; }
  const std::string& pattern() const noexcept { return pattern_; }
  /// The compiled expression (for capture groups: layer-wise decay, regex renames), for code
  /// that includes <re2/re2.h>.
  const re2::RE2& compiled() const noexcept { return *re_; }

private:
  static constexpr int max_range_length = 64;  // longer bounds are truncated, still bounds
  bool in_range(std::string_view path) const {
    return std::string_view(min_) <= path && (max_.empty() || path <= std::string_view(max_));
  }
  std::string pattern_;
  std::shared_ptr<const re2::RE2> re_;  // immutable and thread-safe, shared by copies
  std::string min_, max_;          // RE2::PossibleMatchRange, valid when bounded_
  bool bounded_ = false;
};

namespace detail {
/// Whether `text` matches `pattern` whole; a pattern_error naming `what` if the pattern is invalid.
GRAFT_FUNC bool full_match(std::string_view pattern, std::string_view text, std::string_view what);
/// Whether `re` matches `text` whole, its first capture group read into `capture` as an int.
GRAFT_FUNC bool full_match_capture(const regex& re, std::string_view text, int& capture);
/// `text` with every match of `re` replaced by `rewrite` (\1..\9: captures), or nothing if none matched.
GRAFT_FUNC std::optional<std::string> replace_all(const regex& re, std::string_view text, const std::string& rewrite);
/// A pattern_error if `rewrite` names a capture group `re` does not have.
GRAFT_FUNC void check_rewrite(const regex& re, const std::string& rewrite);
} // namespace detail

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/select/regex-inl.hpp>
#endif
