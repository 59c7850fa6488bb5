#pragma once
// The transfer recipe the distributed tests train: ResNet-18 from a "pretrained" checkpoint,
// stem and layer1 frozen, every BatchNorm's statistics frozen, the head at 10x the lr.

#include <cstdint>
#include <string>
#include <utility>

#include <torch/torch.h>

#include <graft/graft.hpp>

#include "resnet.hpp"

namespace graft::test {

using namespace graft::literals;

inline constexpr int recipe_steps = 3;
inline constexpr std::int64_t recipe_global_batch = 8;

/// The frozen part of the recipe.
inline auto recipe_frozen() { return "conv1.*"_glob | "bn1.*"_glob | "layer1.**"_glob; }

/// Freezes and groups `net` as the recipe says; returns its optimizer.
inline torch::optim::SGD recipe_optimizer(models::ResNet& net) {
  graft::freeze(*net, recipe_frozen());
  graft::freeze_norm_stats(*net, graft::of_type<torch::nn::BatchNorm2dImpl>);
  graft::train(*net);
  auto base = torch::optim::SGDOptions(0.01).momentum(0.9);
  auto groups = graft::param_groups(*net).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").build(base);
  return groups.make_optimizer<torch::optim::SGD>();
}

/// Step `step`'s global batch, the same on every rank.
inline std::pair<torch::Tensor, torch::Tensor> recipe_batch(int step) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(1000 + step);
  auto x = torch::randn({recipe_global_batch, 3, 32, 32}, g);
  auto y = torch::randint(0, 4, {recipe_global_batch}, g, torch::kLong);
  return {x, y};
}

/// Writes `tensors` as a torch.save-compatible dict of key -> tensor.
inline void write_tensors(const std::string& path, const graft::state_dict& sd, const std::string& prefix = "") {
  graft::dict d;
  for (auto& e : sd) d.append(prefix + e.key, e.tensor.detach().clone());
  graft::write_torch_save(path, graft::value(std::move(d)));
}

} // namespace graft::test
