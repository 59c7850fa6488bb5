// Compile-cost unit: the same steps with graft — freeze, param groups with a cosine schedule,
// and a Python checkpoint read, renamed, filtered and merged.
#include <graft/graft.hpp>

#include "model.hpp"

using namespace graft::literals;

int main(int argc, char** argv) {
  Net net;
  if (argc > 1)
    graft::read(argv[1]) | graft::strip_prefix("module.") | graft::filter(!"fc.*"_glob) |
        graft::merge(*net, {.missing = graft::allow("fc.*"_glob)});
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
