#pragma once
// glob: select by dotted-path pattern ("layer4.**", "*.bias", "layer{3,4}.*.bn?.weight").
// A literal pattern is checked at compile time; a runtime string is checked when parsed.

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/select/concepts.hpp>
#include <graft/select/detail/glob_issues.hpp>
#include <graft/select/detail/glob_parse.hpp>

namespace graft {

/// A pattern string that is not a literal: checked when used, throwing pattern_error.
struct runtime_pattern {
  std::string_view text;
};
/// Marks a runtime string as a pattern: glob(runtime(s)). (Literals need no mark.)
inline runtime_pattern runtime(std::string_view s) noexcept { return {s}; }

namespace detail {
template <std::size_t N>
struct fixed_string {
  char data[N]{};
  constexpr fixed_string(const char (&s)[N]) { std::copy_n(s, N, data); }
  constexpr std::string_view view() const { return {data, N - 1}; }
};

class glob_program;  // select/detail/glob_match.hpp

} // namespace detail

/// A glob pattern checked at compile time: what glob's constructor takes from a literal.
struct glob_pattern {
  std::string_view text;
  template <class S>
    requires std::convertible_to<const S&, std::string_view>
  consteval glob_pattern(const S& s) : text(s) {
    if (auto p = detail::check_glob(text)) detail::fail_at_compile_time(p->issue);
  }
};

/// Selects tensors whose whole dotted path matches a glob: '*' within a segment, '**' any
/// number of whole segments, '?', '[a-z]', '{a,b}'.
class glob : public selector_base {
public:
  static constexpr needs requirement = needs::name;

  /// From a literal, checked at compile time: glob("layer4.**").
  glob(glob_pattern p) : glob(p.text, nullptr) {}
  /// From a runtime string: glob(runtime(s)); throws pattern_error naming the problem.
  explicit glob(runtime_pattern p) : glob(checked(p.text), nullptr) {}
  /// A std::string cannot be checked at compile time: mark it, glob(graft::runtime(s)).
  template <class S>
    requires std::same_as<S, std::string>
  glob(const S&) = delete;  // a runtime string must be marked: graft::glob(graft::runtime(s))

  /// Whether a whole dotted path matches.
  GRAFT_FUNC bool matches_path(std::string_view path) const;
  template <class View>
    requires requires(const View& v) { { v.path() } -> std::convertible_to<std::string_view>; }
  bool matches(const View& v) const {
    return matches_path(v.path());
  }
  /// Whether anything below the module prefix ("layer4.1.") could match.
  GRAFT_FUNC bool could_match_under(std::string_view prefix) const;
  std::string describe() const { return pattern_; }
  const std::string& pattern() const noexcept { return pattern_; }

private:
  GRAFT_FUNC glob(std::string_view text, std::nullptr_t);
  GRAFT_FUNC static std::string_view checked(std::string_view text);
  std::string pattern_;
  std::shared_ptr<const detail::glob_program> program_;  // immutable, shared by copies
};

namespace literals {
/// "layer4.**"_glob: a glob checked at compile time.
template <detail::fixed_string S>
glob operator""_glob() {
  constexpr auto problem = detail::check_glob(S.view());
  if constexpr (problem.has_value()) {
    (void)detail::invalid_glob_literal<problem->issue, problem->position>{};
  }
  static const glob g(runtime_pattern{S.view()});
  return g;
}
} // namespace literals

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/select/glob-inl.hpp>
#endif
