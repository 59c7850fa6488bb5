#pragma once
// A ResNet written with torchvision's module names and registration order, so its parameter
// paths ("layer4.1.bn2.weight") and state-dict order are exactly torchvision's. Shared by the
// tutorials, the tests and the benchmarks.

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace models {

namespace nn = torch::nn;

inline nn::Conv2d conv(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}

/// torchvision.models.resnet.BasicBlock
struct BasicBlockImpl : nn::Module {
  static constexpr std::int64_t expansion = 1;
  BasicBlockImpl(std::int64_t in, std::int64_t planes, std::int64_t stride) {
    conv1 = register_module("conv1", conv(in, planes, 3, stride));
    bn1 = register_module("bn1", nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", conv(planes, planes, 3));
    bn2 = register_module("bn2", nn::BatchNorm2d(planes));
    if (stride != 1 || in != planes)
      downsample = register_module("downsample", nn::Sequential(conv(in, planes, 1, stride), nn::BatchNorm2d(planes)));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto identity = downsample ? downsample->forward(x) : x;
    auto y = torch::relu(bn1(conv1(x)));
    y = bn2(conv2(y));
    return torch::relu(y + identity);
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

/// torchvision.models.resnet.Bottleneck
struct BottleneckImpl : nn::Module {
  static constexpr std::int64_t expansion = 4;
  BottleneckImpl(std::int64_t in, std::int64_t planes, std::int64_t stride) {
    conv1 = register_module("conv1", conv(in, planes, 1));
    bn1 = register_module("bn1", nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", conv(planes, planes, 3, stride));
    bn2 = register_module("bn2", nn::BatchNorm2d(planes));
    conv3 = register_module("conv3", conv(planes, planes * 4, 1));
    bn3 = register_module("bn3", nn::BatchNorm2d(planes * 4));
    if (stride != 1 || in != planes * 4)
      downsample = register_module("downsample", nn::Sequential(conv(in, planes * 4, 1, stride), nn::BatchNorm2d(planes * 4)));
  }
  torch::Tensor forward(torch::Tensor x) {
    auto identity = downsample ? downsample->forward(x) : x;
    auto y = torch::relu(bn1(conv1(x)));
    y = torch::relu(bn2(conv2(y)));
    y = bn3(conv3(y));
    return torch::relu(y + identity);
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

/// torchvision.models.resnet.ResNet: resnet(18), resnet(50), resnet(152), ...
struct ResNetImpl : nn::Module {
  ResNetImpl(bool bottleneck, std::vector<std::int64_t> blocks, std::int64_t num_classes = 1000,
             std::int64_t width = 64, std::int64_t in_channels = 3) {
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(in_channels, width, 7).stride(2).padding(3).bias(false)));
    bn1 = register_module("bn1", nn::BatchNorm2d(width));
    std::int64_t in = width;
    for (std::size_t i = 0; i < 4; ++i) {
      nn::Sequential layer;
      std::int64_t planes = width << i;
      for (std::int64_t b = 0; b < blocks[i]; ++b) {
        std::int64_t stride = (b == 0 && i > 0) ? 2 : 1;
        if (bottleneck) {
          layer->push_back(Bottleneck(in, planes, stride));
          in = planes * 4;
        } else {
          layer->push_back(BasicBlock(in, planes, stride));
          in = planes;
        }
      }
      layers.push_back(register_module("layer" + std::to_string(i + 1), layer));
    }
    fc = register_module("fc", nn::Linear(in, num_classes));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn1(conv1(x)));
    x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& l : layers) x = l->forward(x);
    x = torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
    return fc(x);
  }
  nn::Conv2d conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  std::vector<nn::Sequential> layers;
  nn::Linear fc{nullptr};
};
TORCH_MODULE(ResNet);

/// torchvision's resnet18/34/50/101/152 layouts, for images of `in_channels` channels.
inline ResNet resnet(int depth, std::int64_t num_classes = 1000, std::int64_t in_channels = 3) {
  switch (depth) {
    case 18: return ResNet(false, std::vector<std::int64_t>{2, 2, 2, 2}, num_classes, 64, in_channels);
    case 34: return ResNet(false, std::vector<std::int64_t>{3, 4, 6, 3}, num_classes, 64, in_channels);
    case 50: return ResNet(true, std::vector<std::int64_t>{3, 4, 6, 3}, num_classes, 64, in_channels);
    case 101: return ResNet(true, std::vector<std::int64_t>{3, 4, 23, 3}, num_classes, 64, in_channels);
    case 152: return ResNet(true, std::vector<std::int64_t>{3, 8, 36, 3}, num_classes, 64, in_channels);
  }
  throw std::invalid_argument("resnet depth must be 18, 34, 50, 101 or 152");
}

} // namespace models
