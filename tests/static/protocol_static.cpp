// The selector protocol (graft/select/protocol.hpp) and the concepts that guard its consumers:
// what a selector of one's own needs, what its optional members must look like, which
// consumers refuse which selectors, and the glob issue table. Compiling this file is the test.

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>

#include <graft/select.hpp>
#include <graft/state_dict.hpp>

namespace {

using namespace graft::literals;
using bn2d = graft::of_type_t<torch::nn::BatchNorm2dImpl>;

// ---- the smallest selector: the four required members, nothing optional.
struct short_names : graft::selector_base {
  static constexpr graft::needs requirement = graft::needs::name;
  template <class View>
  bool matches(const View& v) const { return v.path().size() < 8; }
  std::string describe() const { return "short names"; }
};
static_assert(graft::selector<short_names> && graft::name_selector<short_names> && graft::entry_selector<short_names>);
static_assert(!graft::allows_empty<short_names> && !graft::detail::can_prune<short_names>);
static_assert(graft::detail::precedence_of<short_names>() == 9);
static_assert(graft::name_selector<decltype(short_names{} & "fc.*"_glob)>);

// ---- an optional member of the wrong type is an error, not a member silently ignored.
struct prunes_with_int : short_names {
  int could_match_under(std::string_view) const { return 1; }
};
struct precedence_as_text : short_names {
  static constexpr const char* precedence = "2";
};
static_assert(!graft::selector<prunes_with_int> && !graft::selector<precedence_as_text>);
struct with_every_member : short_names {
  static constexpr bool allow_empty = true;
  static constexpr int precedence = 3;
  bool could_match_under(std::string_view) const { return true; }
  std::string pattern() const { return "*"; }
};
static_assert(graft::selector<with_every_member> && graft::allows_empty<with_every_member>);
static_assert(graft::detail::can_prune<with_every_member> && graft::detail::precedence_of<with_every_member>() == 3);

// ---- missing a required member: not a selector.
struct no_requirement : graft::selector_base {
  bool matches(const graft::tensor_view&) const { return true; }
  std::string describe() const { return "x"; }
};
struct not_derived {
  static constexpr graft::needs requirement = graft::needs::name;
  bool matches(const graft::tensor_view&) const { return true; }
  std::string describe() const { return "x"; }
};
static_assert(!graft::selector<no_requirement> && !graft::selector<not_derived>);

// ---- where() and owner_is(): one implementation, what the predicate takes decides the needs.
auto by_path = [](std::string_view) { return true; };
auto by_owner = [](const torch::nn::Module&) { return true; };
template <class F>
concept where_accepts = requires(F f) { graft::where(f, "text"); };
template <class F>
concept owner_is_accepts = requires(F f) { graft::owner_is(f, "text"); };
static_assert(where_accepts<decltype(by_path)> && !where_accepts<int> && !where_accepts<void (*)(int)>);
static_assert(owner_is_accepts<decltype(by_owner)> && !owner_is_accepts<decltype(by_path)>);
static_assert(graft::module_selector<decltype(graft::owner_is(by_owner, "x"))>);

// ---- a & b, a | b and a - b are one template over the operation.
using g = graft::glob;
static_assert(std::is_same_v<graft::detail::all_of<g, g>, graft::detail::binary_selector<graft::detail::and_op, g, g>>);
static_assert(std::is_same_v<graft::detail::but_not<g, bn2d>, graft::detail::binary_selector<graft::detail::except_op, g, bn2d>>);

// ---- consumers of checkpoint entries and keys refuse selectors that need more.
template <class S>
concept filterable = requires(S s) { graft::filter(s); };
template <class S>
concept allowable = requires(S s) { graft::allow(s); };
static_assert(filterable<g> && filterable<graft::ndim_is> && filterable<decltype("a"_glob & (graft::ndim <= 1))>);
static_assert(!filterable<bn2d> && !filterable<graft::is_buffer_t> && !filterable<decltype("a"_glob - bn2d{})>);
static_assert(!filterable<int> && !filterable<std::string>);
static_assert(allowable<g> && allowable<graft::names> && allowable<short_names>);
static_assert(!allowable<graft::ndim_is> && !allowable<bn2d> && !allowable<decltype("a"_glob | (graft::ndim <= 1))>);

// ---- the glob issue table covers every issue, in order, and each example has its issue.
constexpr bool table_agrees() {
  std::size_t k = 0;
  for (const auto& row : graft::detail::glob_issue_table) {
    if (row.issue != static_cast<graft::detail::glob_issue>(k++)) return false;
    auto problem = graft::detail::check_glob(row.example);
    if (!problem || problem->issue != row.issue) return false;
    if (std::string_view(graft::detail::glob_issue_text(row.issue)) != row.text) return false;
    if (!row.function.starts_with("glob_pattern_")) return false;
  }
  return k == 8;
}
static_assert(table_agrees());

} // namespace
