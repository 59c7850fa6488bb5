// Compile-cost unit: with_graft.cpp without the checkpoint line (selectors, freezing, param
// groups and schedules only), through the headers of those areas.
#include <graft/optim.hpp>
#include <graft/select.hpp>
#include <graft/transforms.hpp>

#include "model.hpp"

using namespace graft::literals;

int main() {
  Net net;
  graft::freeze(*net, "body.0.*"_glob);
  auto groups = graft::param_groups(*net)
                    .group("head", "fc.*"_glob, {.lr_scale = 10})
                    .rest("body")
                    .build(torch::optim::SGDOptions(0.01).momentum(0.9));
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  graft::lr_scheduler sched(opt, graft::cosine_annealing{.t_max = 10});
  train_steps(net, opt, sched, 2);
  return 0;
}
