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
