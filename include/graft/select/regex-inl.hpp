#pragma once
// The definitions of select/regex.hpp: everything that runs RE2.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>
#include <re2/re2.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/select/regex.hpp>

namespace graft {

GRAFT_FUNC regex::regex(std::string_view pattern) : pattern_(pattern) {
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

GRAFT_FUNC bool regex::matches_path(std::string_view path) const {
  if (bounded_ && !in_range(path)) return false;  // two compares instead of a DFA run
  re2::StringPiece text(path.data(), path.size());
  return re_->Match(text, 0, text.size(), RE2::ANCHOR_BOTH, nullptr, 0);
}

namespace detail {

GRAFT_FUNC bool full_match(std::string_view pattern, std::string_view text, std::string_view what) {
  RE2::Options o;
  o.set_log_errors(false);
  RE2 re(re2::StringPiece(pattern.data(), pattern.size()), o);
  if (!re.ok()) throw pattern_error(fmt::format("invalid regex '{}' in {}: {}", pattern, what, re.error()));
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re);
}

GRAFT_FUNC bool full_match_capture(const regex& re, std::string_view text, int& capture) {
  return RE2::FullMatch(re2::StringPiece(text.data(), text.size()), re.compiled(), &capture);
}

GRAFT_FUNC std::optional<std::string> replace_all(const regex& re, std::string_view text, const std::string& rewrite) {
  std::string s(text);
  if (RE2::GlobalReplace(&s, re.compiled(), rewrite) == 0) return std::nullopt;
  return s;
}

GRAFT_FUNC void check_rewrite(const regex& re, const std::string& rewrite) {
  std::string why;
  if (!re.compiled().CheckRewriteString(rewrite, &why))
    throw pattern_error(fmt::format("invalid rewrite '{}' for regex '{}': {}", rewrite, re.pattern(), why));
}

} // namespace detail
} // namespace graft
