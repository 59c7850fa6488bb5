// What counts as optimizer options and group settings, and which optimizers have weight decay.
#include <torch/torch.h>

#include <graft/optim/param_groups.hpp>

namespace o = torch::optim;

static_assert(graft::optimizer_options<o::SGDOptions> && graft::optimizer_options<o::AdamOptions> &&
              graft::optimizer_options<o::AdamWOptions> && graft::optimizer_options<o::RMSpropOptions> &&
              graft::optimizer_options<o::AdagradOptions> && graft::optimizer_options<o::LBFGSOptions>);
static_assert(!graft::optimizer_options<o::OptimizerOptions>);  // no lr() to scale
static_assert(!graft::optimizer_options<double>);

static_assert(graft::has_weight_decay<o::SGDOptions> && graft::has_weight_decay<o::AdamWOptions>);
static_assert(!graft::has_weight_decay<o::LBFGSOptions>);

static_assert(graft::group_setting<graft::opt::momentum> && graft::group_setting<graft::opt::betas>);
static_assert(graft::group_setting<graft::opt::custom<void (*)(o::SGDOptions&)>>);
static_assert(!graft::group_setting<double> && !graft::group_setting<graft::group_options>);

// group options are designated-initializer aggregates.
static_assert(std::is_aggregate_v<graft::group_options>);

// A setting applies only to an optimizer that has its option (a constraint on apply, so a
// mismatch is a plain `false` here and, in build(), an error naming the option).
static_assert(graft::group_setting_for<graft::opt::momentum, o::SGDOptions> &&
              graft::group_setting_for<graft::opt::momentum, o::RMSpropOptions>);
static_assert(!graft::group_setting_for<graft::opt::momentum, o::AdamOptions>);
static_assert(!graft::group_setting_for<graft::opt::weight_decay, o::LBFGSOptions> &&
              graft::group_setting_for<graft::opt::weight_decay, o::AdamWOptions>);
static_assert(graft::group_setting_for<graft::opt::betas, o::AdamOptions> && !graft::group_setting_for<graft::opt::betas, o::SGDOptions>);
static_assert(!graft::group_setting_for<graft::opt::nesterov, o::AdamOptions> && !graft::group_setting_for<graft::opt::amsgrad, o::SGDOptions>);
static_assert(graft::group_setting_for<graft::opt::custom<void (*)(o::SGDOptions&)>, o::SGDOptions>);
static_assert(!graft::group_setting_for<graft::opt::custom<void (*)(o::SGDOptions&)>, o::AdamOptions>);
static_assert(!graft::group_setting_for<double, o::SGDOptions>);
