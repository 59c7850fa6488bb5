#pragma once
// The glob grammar, checked and expanded by constexpr code so that the same checks run at
// compile time (for literals) and at run time (for strings from users).
//
//   pattern  := segment ('.' segment)*        a dotted path, matched whole
//   segment  := '**'                          zero or more whole segments
//             | ( char | '*' | '?' | class | '{' alt (',' alt)* '}' )+
//   class    := '[' ['!' | '^'] ']'? (c | c '-' c)* ']'
//   '\' escapes the next character; '*' and '?' never match a '.'.

#include <algorithm>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <graft/select/detail/glob_issues.hpp>

namespace graft::detail {

struct glob_problem {
  glob_issue issue;
  std::size_t position;
};

// Index one past the ']' closing the class that starts at s[open] == '[', or npos.
constexpr std::size_t class_end(std::string_view s, std::size_t open) {
  std::size_t i = open + 1;
  if (i < s.size() && (s[i] == '!' || s[i] == '^')) ++i;
  if (i < s.size() && s[i] == ']') ++i;  // a ']' first is a literal member
  for (; i < s.size(); ++i) {
    if (s[i] == '\\') { ++i; continue; }
    if (s[i] == ']') return i + 1;
  }
  return std::string_view::npos;
}

// Checks braces, brackets and escapes; expansion comes after.
constexpr std::optional<glob_problem> check_structure(std::string_view s) {
  if (s.empty()) return glob_problem{glob_issue::empty_pattern, 0};
  std::vector<std::size_t> open_braces;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') {
      if (i + 1 == s.size()) return glob_problem{glob_issue::trailing_backslash, i};
      ++i;
    } else if (c == '[') {
      auto e = class_end(s, i);
      if (e == std::string_view::npos) return glob_problem{glob_issue::unbalanced_bracket, i};
      i = e - 1;
    } else if (c == '{') {
      open_braces.push_back(i);
    } else if (c == '}') {
      if (open_braces.empty()) return glob_problem{glob_issue::stray_closing_brace, i};
      open_braces.pop_back();
    } else if (c == '*' && i + 1 < s.size() && s[i + 1] == '*') {
      bool starts = i == 0 || s[i - 1] == '.' || s[i - 1] == '{' || s[i - 1] == ',';
      bool ends = i + 2 == s.size() || s[i + 2] == '.' || s[i + 2] == '}' || s[i + 2] == ',';
      if (!starts || !ends) return glob_problem{glob_issue::misplaced_double_star, i};
      ++i;
    }
  }
  if (!open_braces.empty()) return glob_problem{glob_issue::unbalanced_brace, open_braces.back()};
  return std::nullopt;
}

// The first top-level {a,b} group of a pattern: where it opens, and the ',' or '}' that ends
// each choice (the last is the closing brace). No ends when the pattern has no whole group.
struct brace_group {
  std::size_t open = std::string_view::npos;
  std::vector<std::size_t> ends;
};

constexpr brace_group first_brace_group(std::string_view s) {
  brace_group g;
  int depth = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') { ++i; continue; }
    if (c == '[') { i = class_end(s, i) - 1; continue; }
    if (c == '{') {
      if (depth++ == 0) g.open = i;
    } else if (c == '}') {
      if (--depth == 0) {
        g.ends.push_back(i);
        return g;
      }
    } else if (c == ',' && depth == 1) {
      g.ends.push_back(i);
    }
  }
  g.ends.clear();
  return g;
}

// Expands the first top-level {a,b} group of every pattern until none is left.
constexpr bool expand_braces(std::string_view s, std::vector<std::string>& out, std::size_t limit) {
  auto g = first_brace_group(s);
  if (g.ends.empty()) {
    if (out.size() >= limit) return false;
    out.emplace_back(s);
    return true;
  }
  std::string_view head = s.substr(0, g.open), tail = s.substr(g.ends.back() + 1);
  std::size_t from = g.open + 1;
  for (std::size_t end : g.ends) {
    std::string alt(head);
    alt += s.substr(from, end - from);
    alt += tail;
    if (!expand_braces(alt, out, limit)) return false;
    from = end + 1;
  }
  return true;
}

// Splits on unescaped dots outside classes.
constexpr std::vector<std::string_view> split_segments(std::string_view s) {
  std::vector<std::string_view> segs;
  std::size_t from = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\') { ++i; continue; }
    if (s[i] == '[') { i = class_end(s, i) - 1; continue; }
    if (s[i] == '.') {
      segs.push_back(s.substr(from, i - from));
      from = i + 1;
    }
  }
  segs.push_back(s.substr(from));
  return segs;
}

inline constexpr std::size_t max_glob_alternatives = 4096;

// How many alternatives the braces of a checked pattern expand to, counted without expanding
// (sums over ',' and products along a sequence), saturating just above `cap`.
constexpr std::size_t count_alternatives(std::string_view s, std::size_t cap) {
  struct level { std::size_t sum = 0, product = 1; };
  std::vector<level> stack(1);
  auto saturating_mul = [cap](std::size_t a, std::size_t b) { return a > cap / (b ? b : 1) ? cap + 1 : a * b; };
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c == '\\') { ++i; continue; }
    if (c == '[') { i = class_end(s, i) - 1; continue; }
    if (c == '{') {
      stack.emplace_back();
    } else if (c == ',' && stack.size() > 1) {
      stack.back().sum = std::min(cap + 1, stack.back().sum + stack.back().product);
      stack.back().product = 1;
    } else if (c == '}') {
      std::size_t n = std::min(cap + 1, stack.back().sum + stack.back().product);
      stack.pop_back();
      stack.back().product = saturating_mul(stack.back().product, n);
    }
  }
  return stack.back().product;
}

// Whether the text made of `pieces` has an empty dot-separated segment (it is empty, starts or
// ends with '.', or holds ".."). A class or an escape never spans two pieces: braces inside
// them do not split a pattern.
constexpr bool has_empty_segment(const std::vector<std::string_view>& pieces) {
  std::size_t length = 0;  // of the segment so far
  for (auto piece : pieces)
    for (std::size_t i = 0; i < piece.size(); ++i) {
      if (piece[i] == '\\') ++i;
      else if (piece[i] == '[') i = class_end(piece, i) - 1;
      else if (piece[i] == '.') {
        if (length == 0) return true;
        length = 0;
        continue;
      }
      ++length;
    }
  return length == 0;
}

// Whether some alternative of the braces has an empty segment: `done` holds the pieces of the
// alternative so far, `todo` the texts still to expand (last first). The alternatives are
// walked as views of the pattern, never built as strings: clang cannot evaluate libstdc++ 12's
// std::string in a constant expression, and the check runs in one for every literal.
constexpr bool some_alternative_has_empty_segment(std::vector<std::string_view>& done, std::vector<std::string_view>& todo) {
  if (todo.empty()) return has_empty_segment(done);
  auto s = todo.back();
  todo.pop_back();
  bool found = false;
  auto g = first_brace_group(s);
  if (g.ends.empty()) {
    done.push_back(s);
    found = some_alternative_has_empty_segment(done, todo);
    done.pop_back();
  } else {
    done.push_back(s.substr(0, g.open));
    const auto tail = s.substr(g.ends.back() + 1);
    std::size_t from = g.open + 1;
    for (std::size_t end : g.ends) {
      todo.push_back(tail);
      todo.push_back(s.substr(from, end - from));
      found = some_alternative_has_empty_segment(done, todo);
      todo.pop_back();
      todo.pop_back();
      if (found) break;
      from = end + 1;
    }
    done.pop_back();
  }
  todo.push_back(s);
  return found;
}

/// Everything wrong with `s` as a glob, or nothing. Usable in constant expressions.
constexpr std::optional<glob_problem> check_glob(std::string_view s) {
  if (auto p = check_structure(s)) return p;
  if (count_alternatives(s, max_glob_alternatives) > max_glob_alternatives)
    return glob_problem{glob_issue::too_many_alternatives, s.find('{')};
  std::vector<std::string_view> done, todo{s};
  if (some_alternative_has_empty_segment(done, todo)) {
    auto brace = s.find('{');
    if (brace != std::string_view::npos) return glob_problem{glob_issue::empty_segment, brace};
    auto dd = s.find("..");
    std::size_t pos = s.front() == '.' ? 0 : (dd != std::string_view::npos ? dd + 1 : s.size() - 1);
    return glob_problem{glob_issue::empty_segment, pos};
  }
  return std::nullopt;
}

} // namespace graft::detail
