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
