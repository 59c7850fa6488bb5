#pragma once
// regex: select by a regular expression that must match the whole dotted path (as PEFT's
// target_modules does). RE2 runs it: linear time, and far faster than std::regex. Walks prune
// the subtrees whose prefix lies outside the range of strings the expression can match.

#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <re2/re2.h>

#include <graft/error.hpp>
#include <graft/select/concepts.hpp>

namespace graft {

/// Selects tensors whose whole dotted path matches an RE2 regular expression.
class regex : public selector_base {
public:
  static constexpr needs requirement = needs::name;

  /// Compiles `pattern`; a pattern_error with RE2's diagnosis if it is invalid.
  explicit regex(std::string_view pattern) : pattern_(pattern) {
    RE2::Options opts;
    opts.set_log_errors(false);
    auto re = std::make_shared<const RE2>(re2::StringPiece(pattern_.data(), pattern_.size()), opts);
    if (!re->ok())
      throw pattern_error(fmt::format("invalid regex '{}': {}", pattern_, re->error()));
    // Every full match lies in [min, max] (an empty max: no upper bound). RE2 finds no range
    // for a leading ".*", and then nothing is pruned.
    std::string min, max;
    if (re->PossibleMatchRange(&min, &max, max_range_length)) {
      min_ = std::move(min);
      max_ = std::move(max);
      bounded_ = true;
    }
    re_ = std::move(re);
  }

  /// Whether a whole dotted path matches.
  bool matches_path(std::string_view path) const {
    if (bounded_ && !in_range(path)) return false;  // two compares instead of a DFA run
    re2::StringPiece text(path.data(), path.size());
    return re_->Match(text, 0, text.size(), RE2::ANCHOR_BOTH, nullptr, 0);
  }
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
  /// The compiled expression (for capture groups: layer-wise decay, regex renames).
  const RE2& compiled() const noexcept { return *re_; }

private:
  static constexpr int max_range_length = 64;  // longer bounds are truncated, still bounds
  bool in_range(std::string_view path) const {
    return std::string_view(min_) <= path && (max_.empty() || path <= std::string_view(max_));
  }
  std::string pattern_;
  std::shared_ptr<const RE2> re_;  // immutable and thread-safe, shared by copies
  std::string min_, max_;          // RE2::PossibleMatchRange, valid when bounded_
  bool bounded_ = false;
};

} // namespace graft
