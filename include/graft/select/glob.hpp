#pragma once
// glob: select by dotted-path pattern ("layer4.**", "*.bias", "layer{3,4}.*.bn?.weight").
// A literal pattern is checked at compile time; a runtime string is checked when parsed.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <graft/error.hpp>
#include <graft/select/concepts.hpp>
#include <graft/select/detail/glob_parse.hpp>

namespace graft {

/// A pattern string that is not a literal: checked when used, throwing pattern_error.
struct runtime_pattern {
  std::string_view text;
};
/// Marks a runtime string as a pattern: glob(runtime(s)). (Literals need no mark.)
inline runtime_pattern runtime(std::string_view s) noexcept { return {s}; }

namespace detail {
// Reached only when a pattern checked in a constant expression is invalid: the compiler names
// the function in its error, and so the reason.
void glob_pattern_is_empty();
void glob_pattern_has_an_unclosed_brace();
void glob_pattern_has_a_closing_brace_that_closes_nothing();
void glob_pattern_has_an_unclosed_bracket();
void glob_pattern_ends_in_a_backslash();
void glob_pattern_has_a_double_star_that_is_not_a_whole_segment();
void glob_pattern_has_an_empty_segment();
void glob_pattern_expands_to_too_many_alternatives();

constexpr void fail_at_compile_time(glob_issue i) {
  switch (i) {
    case glob_issue::empty_pattern: glob_pattern_is_empty(); break;
    case glob_issue::unbalanced_brace: glob_pattern_has_an_unclosed_brace(); break;
    case glob_issue::stray_closing_brace: glob_pattern_has_a_closing_brace_that_closes_nothing(); break;
    case glob_issue::unbalanced_bracket: glob_pattern_has_an_unclosed_bracket(); break;
    case glob_issue::trailing_backslash: glob_pattern_ends_in_a_backslash(); break;
    case glob_issue::misplaced_double_star: glob_pattern_has_a_double_star_that_is_not_a_whole_segment(); break;
    case glob_issue::empty_segment: glob_pattern_has_an_empty_segment(); break;
    case glob_issue::too_many_alternatives: glob_pattern_expands_to_too_many_alternatives(); break;
  }
}

// One segment of one alternative.
struct glob_segment {
  enum kind_t : std::uint8_t { literal, wildcard, any_segments } kind;
  std::string text;  // unescaped for literal; the raw pattern for wildcard
};

// Matches one path segment (no dots) against a wildcard segment pattern.
inline bool match_class(std::string_view p, std::size_t& i, char c) {
  // p[i] == '['; leaves i one past the closing ']'.
  std::size_t e = class_end(p, i);
  std::size_t j = i + 1;
  bool negate = false;
  if (p[j] == '!' || p[j] == '^') { negate = true; ++j; }
  bool hit = false;
  bool first = true;
  while (j < e - 1 && (first || p[j] != ']')) {
    first = false;
    char lo = p[j];
    if (lo == '\\') lo = p[++j];
    char hi = lo;
    if (j + 2 < e - 1 && p[j + 1] == '-') {
      hi = p[j + 2];
      if (hi == '\\') hi = p[j + 3], ++j;
      j += 2;
    }
    if (lo <= c && c <= hi) hit = true;
    ++j;
  }
  i = e;
  return hit != negate;
}

inline bool match_wildcard(std::string_view p, std::string_view s) {
  std::size_t pi = 0, si = 0, star_p = std::string_view::npos, star_s = 0;
  while (si < s.size()) {
    if (pi < p.size()) {
      char c = p[pi];
      if (c == '*') { star_p = ++pi; star_s = si; continue; }
      if (c == '?') { ++pi; ++si; continue; }
      if (c == '[') {
        std::size_t j = pi;
        if (match_class(p, j, s[si])) { pi = j; ++si; continue; }
      } else {
        char lit = c;
        std::size_t next = pi + 1;
        if (c == '\\') lit = p[pi + 1], next = pi + 2;
        if (lit == s[si]) { pi = next; ++si; continue; }
      }
    }
    if (star_p == std::string_view::npos) return false;
    pi = star_p;
    si = ++star_s;
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

inline bool segment_matches(const glob_segment& seg, std::string_view s) {
  return seg.kind == glob_segment::literal ? seg.text == s : match_wildcard(seg.text, s);
}

// Brace-expanded alternatives. Each one's leading literal segments ("layer4.") are compared as
// one string, so the common "prefix.**" patterns never reach the automaton; the rest is matched
// by an NFA over segment positions kept in a bitmask (patterns have far fewer than 64 segments).
class glob_program {
public:
  explicit glob_program(std::string_view pattern) {
    std::vector<std::string> alts;
    expand_braces(pattern, alts, max_glob_alternatives);
    for (const auto& a : alts) {
      alternative alt;
      bool leading = true;
      for (auto raw : split_segments(a)) {
        glob_segment seg = parse_segment(raw);
        // (an escaped '.' inside a literal can never match a segment: leave it to the NFA)
        if (leading && seg.kind == glob_segment::literal && seg.text.find('.') == std::string::npos) {
          alt.lead += seg.text;
          alt.lead += '.';
          continue;
        }
        leading = false;
        if (seg.kind == glob_segment::any_segments) alt.any_mask |= std::uint64_t{1} << alt.rest.size();
        alt.rest.push_back(std::move(seg));
      }
      if (alt.rest.size() >= 63)
        throw pattern_error(fmt::format("glob '{}' has more than 62 segments", pattern));
      alt.only_any = alt.rest.size() == 1 && alt.any_mask == 1;
      alts_.push_back(std::move(alt));
    }
  }

  bool matches(std::string_view path) const {
    for (const auto& alt : alts_)
      if (alt.matches(path)) return true;
    return false;
  }
  bool could_match_under(std::string_view prefix) const {
    if (prefix.empty()) return true;
    for (const auto& alt : alts_)
      if (alt.could_match_under(prefix)) return true;
    return false;
  }

private:
  static glob_segment parse_segment(std::string_view raw) {
    if (raw == "**") return {glob_segment::any_segments, {}};
    if (raw.find_first_of("*?[\\") == std::string_view::npos) return {glob_segment::literal, std::string(raw)};
    if (raw.find_first_of("*?[") == std::string_view::npos) {
      std::string lit;  // only escapes: unescape into a literal
      for (std::size_t i = 0; i < raw.size(); ++i) lit += raw[i] == '\\' ? raw[++i] : raw[i];
      return {glob_segment::literal, std::move(lit)};
    }
    return {glob_segment::wildcard, std::string(raw)};
  }

  struct alternative {
    std::string lead;                // the leading literal segments, each followed by '.'
    std::vector<glob_segment> rest;  // the segments after them
    std::uint64_t any_mask = 0;      // positions of '**' in rest
    bool only_any = false;           // rest is exactly "**"

    bool matches(std::string_view path) const {
      if (rest.empty()) return path.size() + 1 == lead.size() && lead.starts_with(path);
      if (path.size() + 1 == lead.size() && lead.starts_with(path))  // rest matches no segment
        return accepts(closure(1));
      if (!path.starts_with(lead)) return false;
      return only_any || run(path.substr(lead.size()), false);
    }
    // prefix ends with '.'; true if a path under it could match.
    bool could_match_under(std::string_view prefix) const {
      if (std::string_view(lead).starts_with(prefix))  // still inside the literal part
        return !rest.empty() || lead.size() > prefix.size();
      if (!prefix.starts_with(lead)) return false;
      if (only_any) return true;
      prefix.remove_prefix(lead.size());
      prefix.remove_suffix(1);  // "a.b." -> "a.b"
      return run(prefix, true);
    }

    std::uint64_t closure(std::uint64_t s) const {
      for (std::uint64_t t; (t = s | (s & any_mask) << 1) != s;) s = t;
      return s;
    }
    bool accepts(std::uint64_t state) const { return (state >> rest.size() & 1) != 0; }
    // Full match of `path` against rest, or (as_prefix) whether a continuation could match.
    bool run(std::string_view path, bool as_prefix) const {
      std::size_t n = rest.size();
      std::uint64_t state = closure(1);
      std::size_t from = 0;
      while (state) {
        std::size_t dot = path.find('.', from);
        std::string_view seg = path.substr(from, dot == std::string_view::npos ? std::string_view::npos : dot - from);
        std::uint64_t next = state & any_mask;  // '**' stays put and eats the segment
        for (std::uint64_t live = state & ~any_mask & ((std::uint64_t{1} << n) - 1); live; live &= live - 1) {
          std::size_t i = static_cast<std::size_t>(std::countr_zero(live));
          if (segment_matches(rest[i], seg)) next |= std::uint64_t{1} << (i + 1);
        }
        state = closure(next);
        if (dot == std::string_view::npos) break;
        from = dot + 1;
      }
      if (as_prefix) return (state & ((std::uint64_t{1} << n) - 1)) != 0;
      return accepts(state);
    }
  };
  std::vector<alternative> alts_;
};

template <std::size_t N>
struct fixed_string {
  char data[N]{};
  constexpr fixed_string(const char (&s)[N]) { std::copy_n(s, N, data); }
  constexpr std::string_view view() const { return {data, N - 1}; }
};

// Instantiated only for an invalid _glob literal: exactly one assertion fails, saying what is
// wrong; the template arguments name the issue and its 0-based position in the pattern.
template <glob_issue Issue, std::size_t Position>
struct invalid_glob_literal {
  static_assert(Issue != glob_issue::empty_pattern, "invalid _glob literal: the pattern is empty");
  static_assert(Issue != glob_issue::unbalanced_brace,
                "invalid _glob literal: '{' is never closed (its position is this template's second argument)");
  static_assert(Issue != glob_issue::stray_closing_brace,
                "invalid _glob literal: '}' closes nothing (its position is this template's second argument)");
  static_assert(Issue != glob_issue::unbalanced_bracket,
                "invalid _glob literal: '[' is never closed (its position is this template's second argument)");
  static_assert(Issue != glob_issue::trailing_backslash, "invalid _glob literal: '\\' at the end escapes nothing");
  static_assert(Issue != glob_issue::misplaced_double_star,
                "invalid _glob literal: '**' must be a whole segment: write 'a.**.b', or '*' within a segment");
  static_assert(Issue != glob_issue::empty_segment,
                "invalid _glob literal: empty segment (a leading, trailing or doubled '.', or an empty {} alternative)");
  static_assert(Issue != glob_issue::too_many_alternatives,
                "invalid _glob literal: its {..} groups expand to more than 4096 alternatives");
};
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
  bool matches_path(std::string_view path) const { return program_->matches(path); }
  template <class View>
    requires requires(const View& v) { { v.path() } -> std::convertible_to<std::string_view>; }
  bool matches(const View& v) const {
    return program_->matches(v.path());
  }
  /// Whether anything below the module prefix ("layer4.1.") could match.
  bool could_match_under(std::string_view prefix) const { return program_->could_match_under(prefix); }
  std::string describe() const { return pattern_; }
  const std::string& pattern() const noexcept { return pattern_; }

private:
  glob(std::string_view text, std::nullptr_t)
      : pattern_(text), program_(std::make_shared<const detail::glob_program>(text)) {}
  static std::string_view checked(std::string_view text) {
    if (auto p = detail::check_glob(text))
      throw pattern_error(fmt::format("invalid glob '{}' at position {}: {}\n  {}\n  {:>{}}", text,
                                      p->position, detail::glob_issue_text(p->issue), text, "^",
                                      p->position + 1));
    return text;
  }
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
