// Tutorial 6: gradual unfreezing (ULMFiT-style), with one schedule driving every group.
//
// Start with only the head trainable. At epoch 2 unfreeze layer4 at a tenth of the base lr,
// at epoch 4 layer3 at a hundredth. Each stage adds its own param group to the live
// optimizer, and the cosine schedule takes every new group along from its own base lr.

#include <graft/graft.hpp>

#include <fmt/format.h>
#include <torch/torch.h>

#include "resnet.hpp"

using namespace graft::literals;

int main() {
  torch::manual_seed(0);
  auto net = models::resnet(18, 4);

  // Only the head trains at first; the typo-proof way: a glob that matched nothing would throw.
  graft::freeze(*net, !"fc.**"_glob);
  fmt::print("{}\n", graft::count_parameters(*net));

  torch::optim::SGD opt(graft::trainable_parameters(*net), torch::optim::SGDOptions(0.1).momentum(0.9));
  graft::lr_scheduler sched(opt, graft::cosine_annealing{.t_max = 6});

  // The stages are checked now: a misspelt "layr4.**" would fail here, not at epoch 2.
  graft::gradual_unfreezing stages(*net);
  stages.at(2, "layer4", "layer4.**"_glob, 0.1).at(4, "layer3", "layer3.**"_glob, 0.01);

  auto x = torch::randn({8, 3, 32, 32});
  auto y = torch::randint(0, 4, {8});
  for (std::int64_t epoch = 0; epoch < 6; ++epoch) {
    for (const auto& done : stages.step(opt, epoch)) fmt::print("{}\n", done);
    sched.sync();  // new groups start at the schedule's value for this epoch, not their base lr
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
    fmt::print("epoch {}: {} groups, lrs", epoch, opt.param_groups().size());
    for (auto& g : opt.param_groups()) fmt::print(" {:.6f}", g.options().get_lr());
    fmt::print("\n");
    sched.step();
  }
  fmt::print("{}\n", graft::count_parameters(*net));
  return 0;
}
