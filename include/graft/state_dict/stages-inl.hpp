#pragma once
// The definitions of state_dict/stages.hpp: the named rename rules and the stages' messages.

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/select/regex.hpp>
#include <graft/state_dict/stages.hpp>

namespace graft {

GRAFT_FUNC void detail::throw_filter_kept_none(const std::string& selector, std::size_t in) {
  throw selection_error(fmt::format("filter('{}') kept none of the {} entries (wrap the selector in graft::optional(...) if "
                                    "that is fine)",
                                    selector, in));
}

GRAFT_FUNC void at_stage::finish(std::size_t hits, std::size_t in) const {
  if (hits == 0)
    throw key_error(fmt::format("at(\"{}\"): no entry is under '{}' among {} tensors; the top-level keys are: {}", key_, key_, in,
                                tops_.empty() ? std::string("(none)") : fmt::format("'{}'", graft::detail::join(tops_, "', '"))));
  tops_.clear();
}

GRAFT_FUNC rename_stage<detail::replace_prefix_rule> strip_prefix(std::string p) {
  auto text = fmt::format("strip_prefix(\"{}\")", p);
  return {detail::replace_prefix_rule{std::move(p), ""}, std::move(text)};
}

GRAFT_FUNC rename_stage<detail::replace_prefix_rule> add_prefix(std::string p) {
  auto text = fmt::format("add_prefix(\"{}\")", p);
  return {detail::replace_prefix_rule{"", std::move(p)}, std::move(text)};
}

GRAFT_FUNC rename_stage<detail::replace_prefix_rule> replace_prefix(std::string from, std::string to) {
  auto text = fmt::format("replace_prefix(\"{}\", \"{}\")", from, to);
  return {detail::replace_prefix_rule{std::move(from), std::move(to)}, std::move(text)};
}

GRAFT_FUNC rename_stage<detail::regex_rule> regex_replace(std::string_view pattern, std::string rewrite) {
  graft::regex re(pattern);  // throws pattern_error naming the pattern
  detail::check_rewrite(re, rewrite);
  auto text = fmt::format("regex_replace(\"{}\", \"{}\")", pattern, rewrite);
  return {detail::regex_rule{std::move(re), std::move(rewrite)}, std::move(text)};
}

GRAFT_FUNC rename_stage<detail::table_rule> rename_keys(std::map<std::string, std::string, std::less<>> table) {
  auto text = fmt::format("rename_keys({} keys)", table.size());
  return {detail::table_rule{std::make_shared<const std::map<std::string, std::string, std::less<>>>(std::move(table))},
          std::move(text)};
}

} // namespace graft
