#pragma once
// What every C++ block of README.md and docs/ may use without declaring it: graft, libtorch,
// fmt, graft's literals, and the names below, which the pages use as a reader's own (their
// model, a batch, an epoch of training). Everything else a block uses, its page declares.
// See docs/testing.md, "Docs that compile".

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "resnet.hpp"  // examples/support: a ResNet in libtorch, with torchvision's names

using namespace graft::literals;

namespace docs {
/// The reader's model: a ResNet-18 with torchvision's parameter names and a 10-class head.
inline models::ResNet net = models::resnet(18, 10);
/// A batch of images and its labels.
inline torch::Tensor x = torch::randn({8, 3, 64, 64}), y = torch::randint(10, {8});
/// An epoch's batches.
inline std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
/// One epoch of training, left to the reader.
void train_one_epoch(models::ResNet& net, torch::optim::Optimizer& opt);
} // namespace docs
using namespace docs;
