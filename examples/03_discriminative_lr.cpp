// Tutorial 3: discriminative learning rates — fine-tune the backbone gently, train the new head
// at 10x, keep weight decay off biases and normalization parameters, and let one warm-up +
// cosine schedule drive every group from its own base lr.
#include <algorithm>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "resnet.hpp"

using namespace graft::literals;

int main() {
  torch::manual_seed(0);
  auto net = models::resnet(18, /*num_classes=*/10);

  // Named groups: the first matching group takes a parameter; rest() takes what is left;
  // no_decay() splits every group, moving ndim <= 1 tensors and biases to weight decay 0.
  auto base = torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-4);
  auto groups = graft::param_groups(*net)
                    .group("head", "fc.**"_glob, {.lr_scale = 10})
                    .rest("backbone")
                    .no_decay()
                    .build(base);
  fmt::print("{}\n", groups);

  // make_optimizer installs the groups as built (libtorch 2.x's SGD(groups, base) would give
  // the no-decay groups base's weight decay back).
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  graft::lr_scheduler sched(opt, graft::warmup({.start_factor = 0.1, .steps = 2}, graft::cosine_annealing{.t_max = 6}));
  fmt::print("schedule: {}\n", sched.schedule_name());
  std::string header = fmt::format("{:>5}", "epoch");
  for (auto& name : groups.names()) header += fmt::format("  {:>{}}", name, std::max<std::size_t>(name.size(), 8));
  fmt::print("{}\n", header);

  for (int epoch = 0; epoch < 8; ++epoch) {
    std::string row = fmt::format("{:>5}", epoch);
    for (std::size_t g = 0; g < groups.size(); ++g)
      row += fmt::format("  {:>{}.6f}", opt.param_groups()[g].options().get_lr(),
                        std::max<std::size_t>(groups.names()[g].size(), 8));
    fmt::print("{}\n", row);
    // One small step per epoch stands in for an epoch of training.
    auto x = torch::randn({4, 3, 32, 32});
    auto y = torch::randint(0, 10, {4}, torch::kLong);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
    sched.step();
  }
}
