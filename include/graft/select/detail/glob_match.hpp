#pragma once
// The glob matcher: a pattern, once checked (glob_parse.hpp), compiled into brace-expanded
// alternatives whose segments are matched one path segment at a time.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/error.hpp>
#include <graft/select/detail/glob_parse.hpp>

namespace graft::detail {

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

} // namespace graft::detail
