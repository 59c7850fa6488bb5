// Compile-cost baseline: the fine-tuning steps written by hand with libtorch alone.
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model.hpp"

int main(int argc, char** argv) {
  Net net;
  if (argc > 1) torch::load(net, argv[1]);  // a libtorch archive: what libtorch alone can read
  std::vector<torch::Tensor> head, body;
  for (auto& p : net->named_parameters()) {
    if (p.key().rfind("fc.", 0) == 0) head.push_back(p.value());
    else if (p.key().find(".0.") != std::string::npos) p.value().set_requires_grad(false);
    else body.push_back(p.value());
  }
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(head, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(0.1).momentum(0.9)));
  groups.emplace_back(body, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(0.01).momentum(0.9)));
  torch::optim::SGD opt(groups, torch::optim::SGDOptions(0.01));
  torch::optim::StepLR sched(opt, 10, 0.1);
  train_steps(net, opt, sched, 2);
  return 0;
}
