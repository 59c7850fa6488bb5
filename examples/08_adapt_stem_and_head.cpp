// Tutorial 8: an ImageNet ResNet-18 checkpoint into a 1-channel, 10-class ResNet-18.
//
// Fashion-MNIST images are grayscale and have 10 classes; torchvision's ResNet-18 was trained on
// RGB images of 1000 classes. Two pipeline stages reshape the checkpoint so that a strict merge
// loads it: adapt_input_channels sums the stem's RGB weights into one channel, and keep_rows
// keeps the 10 ImageNet classes closest to Fashion-MNIST's as the new head.
//
//   python3 examples/08_export_resnet18.py resnet18.pth     # torchvision writes the checkpoint
//   ./08_adapt_stem_and_head resnet18.pth [fashion-mnist folder]

#include <graft/graft.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "fashion_mnist.hpp"
#include "resnet.hpp"

using namespace graft::literals;

int main(int argc, char** argv) {
  const std::string ckpt = argc > 1 ? argv[1] : "resnet18.pth";
  const std::string data_dir = argc > 2 ? argv[2] : std::string(fashion_mnist::default_dir);
  torch::manual_seed(0);

  // The ImageNet class standing in for each Fashion-MNIST class, in Fashion-MNIST's order:
  // jersey, jean, sweatshirt, gown, trench coat, sandal, cardigan, running shoe, backpack,
  // cowboy boot.
  const std::vector<std::int64_t> imagenet_rows{610, 608, 841, 578, 869, 774, 474, 770, 414, 514};

  // 1. The model we want: torchvision's ResNet-18 layout for 1-channel images and 10 classes.
  auto net = models::resnet(18, 10, /*in_channels=*/1);

  // 2. A plain load cannot work: two tensors have other shapes. preview() tells, changing nothing.
  auto naive = graft::read(ckpt) | graft::preview(*net);
  fmt::print("1. plain load of {}: {} mismatched\n", ckpt, naive.mismatched.size());
  for (const auto& m : naive.mismatched)
    fmt::print("   {}: model [{}], checkpoint [{}]\n", m.key, fmt::join(m.model_shape, ", "), fmt::join(m.checkpoint_shape, ", "));

  // 3. Reshape the checkpoint on its way in, and load strictly: every tensor is used.
  auto report = graft::read(ckpt)
              | graft::adapt_input_channels("conv1.weight", 1)   // [64, 3, 7, 7] -> [64, 1, 7, 7]
              | graft::keep_rows("fc.*"_glob, imagenet_rows)      // [1000, 512] -> [10, 512]
              | graft::merge(*net);
  fmt::print("2. adapted load: {}\n", report);

  // 4. Check it on real images: a grayscale image copied into R, G and B gives the original
  //    RGB model the same input; its logits for the kept classes must equal the new model's.
  auto rgb = models::resnet(18);
  graft::read(ckpt) | graft::merge(*rgb);
  auto data = fashion_mnist::load(data_dir);
  auto images = fashion_mnist::normalize(data.test.images.slice(0, 0, 64));
  net->eval();
  rgb->eval();
  torch::NoGradGuard no_grad;
  auto ours = net->forward(images);
  auto theirs = rgb->forward(images.expand({-1, 3, -1, -1})).index_select(1, torch::tensor(imagenet_rows));
  const double diff = (ours - theirs).abs().max().item<double>();
  fmt::print("3. on 64 test images, the 1-channel model's logits equal the RGB model's for the kept classes: {} "
             "(largest difference below 1e-4)\n",
             diff < 1e-4);

  // 5. Fine-tune briefly: stem and head at 10x the backbone's lr, the backbone's BatchNorm
  //    statistics frozen. One pass over 1,000 training images (100 per class).
  {
    torch::AutoGradMode grad(true);
    fmt::print("4. {}\n", graft::freeze_norm_stats(*net, graft::of_type<torch::nn::BatchNorm2dImpl>));
    auto groups = graft::param_groups(*net)
                      .group("stem and head", "conv1.weight"_glob | "fc.**"_glob, {.lr_scale = 10})
                      .rest("backbone")
                      .build(torch::optim::SGDOptions(0.002).momentum(0.9));
    const auto table = fmt::format("{}", groups);
    for (std::size_t at = 0, nl; at < table.size(); at = nl + 1) {
      nl = table.find('\n', at);
      if (nl == std::string::npos) nl = table.size();
      fmt::print("   {}\n", table.substr(at, nl - at));
    }
    auto opt = groups.make_optimizer<torch::optim::SGD>();
    auto train = fashion_mnist::few_shot(data.train, 100);
    auto x = fashion_mnist::normalize(train.images);
    graft::train(*net);
    double first = 0, last = 0;
    const std::int64_t batch = 50, n = x.size(0);
    for (std::int64_t i = 0; i < n; i += batch) {
      opt.zero_grad();
      auto loss = torch::nn::functional::cross_entropy(net->forward(x.slice(0, i, i + batch)), train.labels.slice(0, i, i + batch));
      loss.backward();
      opt.step();
      (i == 0 ? first : last) = loss.item<double>();
    }
    net->eval();
    auto test = fashion_mnist::normalize(data.test.images.slice(0, 0, 1000));
    auto hits = net->forward(test).argmax(1).eq(data.test.labels.slice(0, 0, 1000));
    fmt::print("   loss {:.3f} on the first batch, {:.3f} on the last; test accuracy on 1000 images {:.1f}%\n", first, last,
               100.0 * hits.to(torch::kDouble).mean().item<double>());
  }
  return 0;
}
