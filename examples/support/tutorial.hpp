#pragma once
// What the Fashion-MNIST tutorials (5, 9, 10) share: tutorial 5's CNN and the small helpers
// that print and evaluate it.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace tutorial {

// The model. Parameter names are what graft's selectors see:
//   backbone.0.conv.weight, backbone.0.bn.weight, backbone.0.bn.running_mean, ..., fc.weight, fc.bias

// conv 3x3 -> BatchNorm -> ReLU -> 2x2 max-pool: halves the image, widens the channels.
struct ConvBlockImpl : torch::nn::Module {
  ConvBlockImpl(std::int64_t in, std::int64_t out)
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1).bias(false)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(out))) {}
  torch::Tensor forward(torch::Tensor x) { return torch::max_pool2d(torch::relu(bn(conv(x))), 2); }
  torch::nn::Conv2d conv;
  torch::nn::BatchNorm2d bn;
};
TORCH_MODULE(ConvBlock);

// 28x28 -> 14x14x16 -> 7x7x32 -> 3x3x64 = 576 features -> `classes` scores.
struct NetImpl : torch::nn::Module {
  explicit NetImpl(std::int64_t classes)
      : backbone(register_module("backbone", torch::nn::Sequential(ConvBlock(1, 16), ConvBlock(16, 32), ConvBlock(32, 64)))),
        fc(register_module("fc", torch::nn::Linear(64 * 3 * 3, classes))) {}
  torch::Tensor forward(torch::Tensor x) { return fc(backbone->forward(x).flatten(1)); }
  torch::nn::Sequential backbone;
  torch::nn::Linear fc;
};
TORCH_MODULE(Net);

/// Predicted classes, in eval mode (BatchNorm uses its running statistics), without autograd,
/// 1000 images at a time. `net` is anything with eval() and forward(Tensor) -> Tensor.
template <class M>
torch::Tensor predict(M& net, const torch::Tensor& x) {
  net.eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> out;
  for (std::int64_t i = 0; i < x.size(0); i += 1000) out.push_back(net.forward(x.slice(0, i, i + 1000)).argmax(1));
  return torch::cat(out);
}

/// Indents every line of a multi-line printout (load reports, param-group tables) under its step.
inline std::string indented(std::string text) {
  while (text.ends_with('\n')) text.pop_back();
  std::string out = "   ";
  for (char c : text) out += c == '\n' ? std::string("\n   ") : std::string(1, c);
  return out;
}

/// The share of true entries, in percent.
inline double percent(const torch::Tensor& hits) { return 100.0 * hits.to(torch::kDouble).mean().item<double>(); }

/// 2 intra-op threads, or OMP_NUM_THREADS if it is set (ctest sets 1, as it runs tests side by side).
inline int default_threads() {
  const char* env = std::getenv("OMP_NUM_THREADS");
  int n = env ? std::atoi(env) : 0;
  return n > 0 ? n : 2;
}

} // namespace tutorial
