// Compile-time checks of the schedule descriptions and graft::lr_scheduler.
#include <graft/optim/schedules.hpp>

#include <type_traits>

namespace {

using namespace graft;

// Every description is a schedule, and a plain aggregate for designated initializers.
static_assert(lr_schedule<step_lr> && std::is_aggregate_v<step_lr>);
static_assert(lr_schedule<multi_step_lr> && std::is_aggregate_v<multi_step_lr>);
static_assert(lr_schedule<exponential_lr> && std::is_aggregate_v<exponential_lr>);
static_assert(lr_schedule<constant_lr> && std::is_aggregate_v<constant_lr>);
static_assert(lr_schedule<linear_lr> && std::is_aggregate_v<linear_lr>);
static_assert(lr_schedule<linear_warmup> && std::is_aggregate_v<linear_warmup>);
static_assert(lr_schedule<cosine_annealing> && std::is_aggregate_v<cosine_annealing>);
static_assert(lr_schedule<lambda_lr> && std::is_aggregate_v<lambda_lr>);
static_assert(lr_schedule<one_cycle> && std::is_aggregate_v<one_cycle>);
static_assert(lr_schedule<with_warmup<cosine_annealing>>);
static_assert(lr_schedule<with_warmup<with_warmup<step_lr>>>);

// What is not a schedule.
static_assert(!lr_schedule<int>);
static_assert(!lr_schedule<double (*)(std::int64_t)>);
static_assert(!lr_schedule<lr_scheduler>);

// Only one_cycle drives momentum; only per-group settings check the group count.
static_assert(momentum_schedule<one_cycle>);
static_assert(!momentum_schedule<cosine_annealing>);
static_assert(!momentum_schedule<with_warmup<step_lr>>);
static_assert(group_checked_schedule<lambda_lr> && group_checked_schedule<one_cycle>);
static_assert(group_checked_schedule<with_warmup<lambda_lr>>);
static_assert(!group_checked_schedule<step_lr>);

// warmup() composes any lr schedule, but not one_cycle, which has its own warm-up phase.
template <class S>
concept can_warm_up = requires(S s) { warmup(linear_warmup{}, s); };
static_assert(can_warm_up<cosine_annealing> && can_warm_up<lambda_lr> && can_warm_up<with_warmup<step_lr>>);
static_assert(!can_warm_up<one_cycle>);
static_assert(!can_warm_up<int>);
static_assert(std::is_same_v<decltype(warmup(linear_warmup{}, step_lr{})), with_warmup<step_lr>>);
template <class S>
concept warm_up_type = requires { typename with_warmup<S>; };
static_assert(warm_up_type<exponential_lr> && !warm_up_type<one_cycle>);

// One scheduler type for every schedule; it owns its schedule, so it moves but does not copy
// (two copies would fight over the same optimizer).
static_assert(std::is_constructible_v<lr_scheduler, torch::optim::Optimizer&, cosine_annealing>);
static_assert(!std::is_constructible_v<lr_scheduler, torch::optim::Optimizer&, int>);
static_assert(std::is_nothrow_move_constructible_v<lr_scheduler>);
static_assert(!std::is_copy_constructible_v<lr_scheduler>);

} // namespace
