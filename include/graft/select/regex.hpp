#pragma once
// regex: select by a regular expression that must match the whole dotted path (as PEFT's
// target_modules does). RE2 runs it: linear time, and far faster than std::regex.

#include <memory>
#include <string>
#include <string_view>

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
    re_ = std::move(re);
  }

  bool matches_path(std::string_view path) const {
    return RE2::FullMatch(re2::StringPiece(path.data(), path.size()), *re_);
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
  std::string pattern_;
  std::shared_ptr<const RE2> re_;  // immutable and thread-safe, shared by copies
};

} // namespace graft
