#pragma once
// LR schedules equal to torch.optim.lr_scheduler's, driving every param group of any libtorch
// optimizer from the group's own base lr:
//   graft::lr_scheduler sched(opt, graft::cosine_annealing{.t_max = 10});
//   for (...) { opt.step(); sched.step(); }
#include <graft/optim/schedules/concepts.hpp>
#include <graft/optim/schedules/cosine.hpp>
#include <graft/optim/schedules/decay.hpp>
#include <graft/optim/schedules/lambda.hpp>
#include <graft/optim/schedules/linear.hpp>
#include <graft/optim/schedules/one_cycle.hpp>
#include <graft/optim/schedules/scheduler.hpp>
