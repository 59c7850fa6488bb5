// What the selector concepts accept and refuse, what composites need and own, and which globs
// are rejected at compile time. Compiling this file is the test.

#include <string>
#include <string_view>
#include <type_traits>

#include <graft/select.hpp>

namespace {

using namespace graft::literals;
using graft::needs;
using bn2d = graft::of_type_t<torch::nn::BatchNorm2dImpl>;
using glob = graft::glob;

template <class S>
constexpr needs need = S::requirement;
template <class A, class B>
concept can_and = requires(A a, B b) { a & b; };
template <class A, class B>
concept can_or = requires(A a, B b) { a | b; };
template <class A>
concept can_not = requires(A a) { !a; };

auto by_path = [](std::string_view) { return true; };
auto by_view = [](const graft::tensor_view&) { return true; };
using path_pred = graft::where_t<decltype(by_path)>;
using view_pred = graft::where_t<decltype(by_view)>;

// ---- name selectors: decide from the dotted name; usable on models and on checkpoints.
static_assert(graft::name_selector<glob>);
static_assert(graft::name_selector<graft::regex>);
static_assert(graft::name_selector<graft::names>);
static_assert(graft::name_selector<graft::prefix>);
static_assert(graft::name_selector<graft::local_name>);
static_assert(graft::name_selector<graft::everything_t>);
static_assert(graft::name_selector<path_pred>);
static_assert(graft::entry_selector<glob> && graft::entry_selector<graft::regex> && graft::entry_selector<graft::names>);
static_assert(!graft::module_selector<glob> && !graft::module_selector<graft::regex>);
static_assert(std::is_same_v<decltype("layer4.**"_glob), glob>);
static_assert(std::is_same_v<std::remove_cvref_t<decltype(graft::bias)>, graft::local_name>);

// ---- tensor predicates: need the tensor, not a module; checkpoint entries carry one.
static_assert(need<graft::ndim_is> == needs::tensor);
static_assert(std::is_same_v<decltype(graft::ndim <= 1), graft::ndim_is>);
static_assert(std::is_same_v<decltype(graft::dtype == torch::kHalf), graft::dtype_is>);
static_assert(graft::entry_selector<graft::ndim_is> && !graft::name_selector<graft::ndim_is>);
static_assert(graft::entry_selector<graft::dtype_is> && !graft::name_selector<graft::dtype_is>);
static_assert(graft::entry_selector<graft::requires_grad_t> && !graft::module_selector<graft::requires_grad_t>);

// ---- module selectors: need a live module; NOT usable on checkpoint entries.
static_assert(graft::module_selector<bn2d>);
static_assert(!graft::entry_selector<decltype(graft::of_type<torch::nn::BatchNorm2dImpl>)>);
static_assert(!graft::entry_selector<std::remove_cvref_t<decltype(graft::of_type<torch::nn::BatchNorm2dImpl>)>>);
static_assert(!graft::name_selector<bn2d>);
static_assert(graft::module_selector<graft::is_parameter_t> && !graft::entry_selector<graft::is_parameter_t>);
static_assert(graft::module_selector<graft::is_buffer_t> && !graft::entry_selector<graft::is_buffer_t>);
static_assert(graft::module_selector<view_pred> && !graft::entry_selector<view_pred>);
static_assert(graft::module_selector<std::remove_cvref_t<decltype(graft::norm_layers)>>);
static_assert(!graft::entry_selector<std::remove_cvref_t<decltype(graft::norm_layers)>>);

// ---- not selectors at all.
static_assert(!graft::selector<int>);
static_assert(!graft::selector<std::string>);
static_assert(!graft::selector<const char*>);
static_assert(!graft::selector<graft::selector_base>);  // no requirement, no matches()
static_assert(!graft::selector<graft::ndim_t>);          // `ndim` alone selects nothing: compare it

// ---- composites need what their most demanding operand needs.
using g_and_g = decltype("a"_glob & "b"_glob);
using g_and_ndim = decltype("a"_glob & (graft::ndim == 4));
using g_or_ndim = decltype("a"_glob | (graft::ndim == 4));
using g_and_bn = decltype("a"_glob & graft::of_type<torch::nn::BatchNorm2dImpl>);
using g_minus_bn = decltype("a"_glob - graft::of_type<torch::nn::BatchNorm2dImpl>);
using not_bn = decltype(!graft::of_type<torch::nn::BatchNorm2dImpl>);
using not_g = decltype(!"a"_glob);
using deep = decltype(("a"_glob | "b"_glob) & (!(graft::ndim <= 1) - graft::bias));
using deep_bn = decltype(("a"_glob | "b"_glob) & !((graft::ndim <= 1) | graft::is_buffer));
static_assert(need<g_and_g> == needs::name && graft::name_selector<g_and_g>);
static_assert(need<not_g> == needs::name && graft::name_selector<not_g>);
static_assert(need<g_and_ndim> == needs::tensor && graft::entry_selector<g_and_ndim> && !graft::name_selector<g_and_ndim>);
static_assert(need<g_or_ndim> == needs::tensor && graft::entry_selector<g_or_ndim>);
static_assert(need<deep> == needs::tensor && graft::entry_selector<deep>);
static_assert(need<g_and_bn> == needs::module && graft::module_selector<g_and_bn> && !graft::entry_selector<g_and_bn>);
static_assert(need<g_minus_bn> == needs::module && !graft::entry_selector<g_minus_bn>);
static_assert(need<not_bn> == needs::module && !graft::entry_selector<not_bn>);
static_assert(need<deep_bn> == needs::module && !graft::entry_selector<deep_bn>);

// ---- composites own their operands by value: no references, copyable and assignable, and at
// least as large as both operands together (a reference-holding composite would be 16 bytes).
glob lvalue_glob("a");
static_assert(std::is_same_v<decltype(lvalue_glob & lvalue_glob), graft::detail::all_of<glob, glob>>);
static_assert(std::is_same_v<decltype(!lvalue_glob), graft::detail::none_of<glob>>);
static_assert(std::is_same_v<decltype(lvalue_glob | graft::bias), graft::detail::any_of<glob, graft::local_name>>);
static_assert(sizeof(g_and_g) >= 2 * sizeof(glob));
static_assert(sizeof(decltype("a"_glob & graft::regex("b"))) >= sizeof(glob) + sizeof(graft::regex));
static_assert(sizeof(not_g) >= sizeof(glob));
static_assert(std::is_copy_constructible_v<deep> && std::is_copy_assignable_v<deep>);  // reference members would delete assignment
static_assert(std::is_move_assignable_v<g_and_bn> && std::is_copy_assignable_v<not_bn>);

// ---- the operators are hidden friends constrained on selectors: nothing else composes.
static_assert(can_and<glob, glob> && can_or<glob, bn2d> && can_not<glob>);
static_assert(!can_and<glob, std::string> && !can_and<std::string, glob>);
static_assert(!can_or<glob, const char*> && !can_and<int, glob> && !can_or<double, bn2d>);
static_assert(!can_not<graft::ndim_t>);

// ---- optional() and labeled() keep the operand's needs; only optional allows an empty match.
using opt_glob = decltype(graft::optional("a"_glob));
using opt_bn = decltype(graft::optional(graft::of_type<torch::nn::BatchNorm2dImpl>));
static_assert(graft::allows_empty<opt_glob> && graft::name_selector<opt_glob>);
static_assert(graft::allows_empty<opt_bn> && graft::module_selector<opt_bn> && !graft::entry_selector<opt_bn>);
static_assert(!graft::allows_empty<glob> && !graft::allows_empty<g_and_g>);
static_assert(graft::module_selector<decltype(graft::labeled(graft::of_type<torch::nn::LinearImpl>, "heads"))>);
static_assert(graft::name_selector<decltype(graft::labeled("fc.**"_glob, "head"))>);

// ---- which selectors can prune a walk.
static_assert(graft::detail::can_prune<glob> && graft::detail::can_prune<graft::regex>);
static_assert(graft::detail::can_prune<graft::prefix> && graft::detail::can_prune<graft::names>);
static_assert(graft::detail::can_prune<g_and_bn> && !graft::detail::can_prune<bn2d>);

// ---- globs checked at compile time: what passes, and what fails where.
using graft::detail::check_glob;
using issue = graft::detail::glob_issue;
constexpr bool fails_with(std::string_view p, issue i, std::size_t at) {
  auto problem = check_glob(p);
  return problem && problem->issue == i && problem->position == at;
}
static_assert(!check_glob("layer4.**"));
static_assert(!check_glob("**"));
static_assert(!check_glob("**.bias"));
static_assert(!check_glob("layer{3,4}.*.bn?.weight"));
static_assert(!check_glob("layer[!0-3].[0-9].{conv,bn}[12].*"));
static_assert(!check_glob("{a,b.**}.c"));
static_assert(!check_glob(R"(a\*b.c)"));
static_assert(fails_with("", issue::empty_pattern, 0));
static_assert(fails_with("layer{4.**", issue::unbalanced_brace, 5));
static_assert(fails_with("layer4}.**", issue::stray_closing_brace, 6));
static_assert(fails_with("layer[4.**", issue::unbalanced_bracket, 5));
static_assert(fails_with(R"(layer4\)", issue::trailing_backslash, 6));
static_assert(fails_with("a**b", issue::misplaced_double_star, 1));
static_assert(fails_with("layer4.**x", issue::misplaced_double_star, 7));
static_assert(fails_with("a..b", issue::empty_segment, 2));
static_assert(fails_with(".a", issue::empty_segment, 0));
static_assert(fails_with("a.", issue::empty_segment, 1));
static_assert(fails_with("{a,}.b", issue::empty_segment, 0));
static_assert(fails_with("{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}{s,t}{u,v}{w,x}{y,z}", issue::too_many_alternatives, 0));
static_assert(graft::detail::count_alternatives("{a,b}{c,{d,e}}.x", 4096) == 6);
static_assert(graft::detail::count_alternatives("{a,b{c,d}}", 4096) == 3);
static_assert(graft::detail::count_alternatives(R"(\{a,b\}[{,}])", 4096) == 1);  // escaped or in a class
// A std::string is refused outright (deleted constructor): it must be marked graft::runtime(s).
static_assert(!std::is_constructible_v<glob, std::string> && std::is_constructible_v<glob, graft::runtime_pattern>);
// The same checks run in glob's consteval constructor: a valid literal is a constant expression.
static_assert(graft::glob_pattern("layer4.**").text == "layer4.**");

} // namespace
