#pragma once
// Transforms of a live model: freeze / unfreeze, frozen normalization statistics, and gradual
// unfreezing schedules.
#include <graft/transforms/freeze.hpp>
#include <graft/transforms/norm_stats.hpp>
#include <graft/transforms/gradual.hpp>
