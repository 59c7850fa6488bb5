#pragma once
// Optimizer param-group builders and LR schedules that drive every group.
#include <graft/optim/param_groups.hpp>
#include <graft/optim/schedules.hpp>
