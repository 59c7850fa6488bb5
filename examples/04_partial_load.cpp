// Tutorial 4: load part of a checkpoint, and fix mismatched names.
//
// A model was trained with a `features` block and a 5-class `classifier`. The new model
// calls the same block `backbone`, and its head `fc` has 10 classes. We want the trained
// backbone, and the 5 trained rows of the old head, in the new model.

#include <graft/graft.hpp>

#include <filesystem>
#include <fmt/format.h>
#include <torch/torch.h>

using namespace graft::literals;
namespace nn = torch::nn;

// The same convolutional block in both models.
nn::Sequential block() {
  return nn::Sequential(nn::Conv2d(nn::Conv2dOptions(1, 8, 3).padding(1)), nn::BatchNorm2d(8), nn::ReLU(),
                        nn::Conv2d(nn::Conv2dOptions(8, 16, 3).padding(1)), nn::BatchNorm2d(16), nn::ReLU(),
                        nn::AdaptiveAvgPool2d(1), nn::Flatten());
}

struct PretrainedImpl : nn::Module {
  nn::Sequential features{register_module("features", block())};
  nn::Linear classifier{register_module("classifier", nn::Linear(16, 5))};
  torch::Tensor forward(torch::Tensor x) { return classifier(features->forward(x)); }
};
TORCH_MODULE(Pretrained);

struct NetImpl : nn::Module {
  nn::Sequential backbone{register_module("backbone", block())};
  nn::Linear fc{register_module("fc", nn::Linear(16, 10))};
  torch::Tensor forward(torch::Tensor x) { return fc(backbone->forward(x)); }
};
TORCH_MODULE(Net);

int main() {
  torch::manual_seed(0);
  auto ckpt = (std::filesystem::temp_directory_path() / "graft_tutorial_pretrained.pt").string();

  // 1. "Pretrain" for a few steps on synthetic data, and save. graft::save writes a file
  //    that Python's torch.load reads too (the .pt name asks for the torch.save format).
  Pretrained old;
  torch::optim::SGD sgd(old->parameters(), torch::optim::SGDOptions(0.1));
  for (int step = 0; step < 20; ++step) {
    auto x = torch::randn({16, 1, 8, 8});
    auto y = torch::randint(0, 5, {16});
    sgd.zero_grad();
    torch::nn::functional::cross_entropy(old->forward(x), y).backward();
    sgd.step();
  }
  graft::from(*old) | graft::save(ckpt);
  fmt::print("saved {} tensors of the pretrained model\n", graft::state_dict(*old).size());

  // 2. The naive load fails: no key matches. Nothing in the new model changes, and the
  //    report says what is wrong and which renames would fix it.
  Net net;
  try {
    graft::read(ckpt) | graft::merge(*net);
  } catch (const graft::load_error& e) {
    const auto& r = e.report();
    fmt::print("naive load refused: {} missing, {} unexpected\n", r.missing.size(), r.unexpected.size());
    for (const auto& hint : r.hints) fmt::print("  hint: {}\n", hint);
  }

  // 3. The pipeline that works: rename the block, drop the old head, and allow the new
  //    head to keep its fresh initialization.
  auto report = graft::read(ckpt)
              | graft::replace_prefix("features.", "backbone.")
              | graft::filter(!"classifier.*"_glob)
              | graft::merge(*net, {.missing = graft::allow("fc.*"_glob)});
  fmt::print("{}\n", report);

  // 4. Or keep the old head's knowledge too: rename it to fc and let the merge adapt it,
  //    copying the 5 trained rows into the 10-row head (new rows keep their initialization).
  auto fresh_rows = net->fc->weight.slice(0, 5).clone();
  auto grown = graft::read(ckpt)
             | graft::replace_prefix("features.", "backbone.")
             | graft::replace_prefix("classifier.", "fc.")
             | graft::merge(*net, {.adapt = graft::allow("fc.*"_glob)});
  fmt::print("grown head: {} tensors adapted\n", grown.adapted_count());

  // 5. Check: the backbone and the first 5 rows are the pretrained ones.
  bool backbone_equal = true;
  auto old_sd = graft::state_dict(*old);
  for (const auto& e : graft::state_dict(*net->backbone))
    backbone_equal = backbone_equal && torch::equal(e.tensor, old_sd.at("features." + e.key));
  fmt::print("backbone equals the pretrained features: {}\n", backbone_equal);
  fmt::print("fc rows 0-4 equal the old classifier: {}\n",
             torch::equal(net->fc->weight.slice(0, 0, 5), old->classifier->weight));
  fmt::print("fc rows 5-9 kept their initialization: {}\n", torch::equal(net->fc->weight.slice(0, 5), fresh_rows));
  std::filesystem::remove(ckpt);
  return 0;
}
