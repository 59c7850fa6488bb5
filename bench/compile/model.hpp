// The model of the compile-cost units: a small CNN with a body and a head, as a user writes it.
#pragma once
#include <torch/torch.h>

struct NetImpl : torch::nn::Module {
  torch::nn::Sequential body{register_module(
      "body", torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1)),
                                    torch::nn::BatchNorm2d(16), torch::nn::ReLU(),
                                    torch::nn::AdaptiveAvgPool2d(1), torch::nn::Flatten()))};
  torch::nn::Linear fc{register_module("fc", torch::nn::Linear(16, 10))};
  torch::Tensor forward(torch::Tensor x) { return fc(body->forward(x)); }
};
TORCH_MODULE(Net);

// A few training steps on random data, stepping `sched` after each.
template <class Optimizer, class Scheduler>
void train_steps(Net& net, Optimizer& opt, Scheduler& sched, int steps) {
  for (int step = 0; step < steps; ++step) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(torch::randn({4, 1, 28, 28})), torch::tensor({0, 1, 2, 3})).backward();
    opt.step();
    sched.step();
  }
}
