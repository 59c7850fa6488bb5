// Tutorial 2: keep a pretrained backbone, train only a new classifier head — the official
// transfer-learning recipe ("ConvNet as fixed feature extractor").
//
// Two things must stay put while the head trains: the backbone's weights (requires_grad off)
// and its BatchNorm running statistics, which a training-mode forward would otherwise keep
// updating even though no weight moves.
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "resnet.hpp"

using namespace graft::literals;

namespace {
// Four classes of 32x32 images, each class a different mean colour plus noise.
std::pair<torch::Tensor, torch::Tensor> synthetic_batch(std::int64_t n) {
  auto y = torch::randint(0, 4, {n}, torch::kLong);
  auto means = torch::tensor({{0.5, -0.5, 0.0}, {-0.5, 0.5, 0.0}, {0.0, 0.0, 0.5}, {0.0, 0.0, -0.5}});
  auto x = means.index_select(0, y).view({n, 3, 1, 1}) + torch::randn({n, 3, 32, 32});
  return {x, y};
}

std::vector<torch::Tensor> snapshot(const torch::OrderedDict<std::string, torch::Tensor>& tensors) {
  std::vector<torch::Tensor> out;
  for (auto& t : tensors) out.push_back(t.value().detach().clone());
  return out;
}
} // namespace

int main() {
  torch::manual_seed(0);
  auto net = models::resnet(18, /*num_classes=*/4);  // imagine pretrained weights loaded here

  // 1. Freeze everything but the head. An empty selection would throw: no silent no-op.
  auto frozen = graft::freeze(*net, !"fc.**"_glob);
  fmt::print("{}\n", frozen);

  // 2. Freeze the BatchNorm statistics too, and switch to training mode with graft::train():
  //    a plain net->train() would put the frozen layers back to updating their statistics.
  auto stats = graft::freeze_norm_stats(*net, graft::of_type<torch::nn::BatchNorm2dImpl>);
  fmt::print("{}\n", stats);
  graft::train(*net);
  fmt::print("{}\n", graft::count_parameters(*net));

  // 3. Hand only the trainable parameters to the optimizer.
  auto params = graft::trainable_parameters(*net);
  fmt::print("optimizer gets {} tensors\n", params.size());
  torch::optim::SGD opt(params, torch::optim::SGDOptions(0.05).momentum(0.9));

  auto weights_before = snapshot(net->named_parameters());
  auto buffers_before = snapshot(net->named_buffers());

  for (int step = 1; step <= 5; ++step) {
    auto [x, y] = synthetic_batch(16);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x), y);
    loss.backward();
    opt.step();
    fmt::print("step {} loss {:.4f}\n", step, loss.item<double>());
  }

  // 4. Check: the backbone is bit-for-bit what it was; only the head moved.
  std::size_t backbone_same = 0, backbone = 0, head_moved = 0;
  auto weights = net->named_parameters();
  for (std::size_t i = 0; i < weights.size(); ++i) {
    bool same = torch::equal(weights[i].value(), weights_before[i]);
    if (weights[i].key().starts_with("fc.")) head_moved += !same;
    else ++backbone, backbone_same += same;
  }
  std::size_t stats_same = 0;
  auto buffers = net->named_buffers();
  for (std::size_t i = 0; i < buffers.size(); ++i) stats_same += torch::equal(buffers[i].value(), buffers_before[i]);
  fmt::print("backbone weights unchanged: {} of {}\n", backbone_same, backbone);
  fmt::print("batch-norm buffers unchanged: {} of {}\n", stats_same, buffers.size());
  fmt::print("head tensors changed: {} of 2\n", head_moved);
}
