#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/optim.hpp>
#include <graft/select.hpp>
#include <graft/transforms.hpp>

#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Contains;
using Catch::Matchers::Message;

namespace {
struct stats {
  std::vector<torch::Tensor> mean, var, count;
};
stats snapshot(const std::vector<torch::nn::BatchNorm2d>& bns) {
  stats s;
  for (auto& b : bns) {
    s.mean.push_back(b->running_mean.clone());
    s.var.push_back(b->running_var.clone());
    s.count.push_back(b->num_batches_tracked.clone());
  }
  return s;
}
// Gives running statistics values a fresh BatchNorm would not have, so "normalizes with the
// running statistics" cannot pass by accident.
void randomize_stats(torch::nn::Module& m) {
  torch::NoGradGuard g;
  for (auto& b : m.named_buffers()) {
    if (b.key().ends_with("running_mean")) b.value().normal_(0, 0.5);
    if (b.key().ends_with("running_var")) b.value().uniform_(0.5, 2.0);
  }
}
} // namespace

TEST_CASE("frozen BatchNorm statistics stay unchanged in a training-mode forward", "[transforms][norm]") {
  torch::manual_seed(1);
  auto net = models::resnet(18, 10);
  randomize_stats(*net);
  auto r = graft::freeze_norm_stats(*net, graft::of_type<torch::nn::BatchNorm2dImpl> & !"layer4.**"_glob);
  CHECK(r.layers.size() == 15);  // 20 batch norms, 5 of them in layer4
  CHECK(r.layers.front() == "bn1");
  CHECK(fmt::format("{}", r) ==
        "froze the statistics of 15 layers selected by 'of_type<BatchNorm2d> and not layer4.**'");

  std::vector<torch::nn::BatchNorm2d> frozen{net->bn1, net->layers[0][0]->as<models::BasicBlock>()->bn1,
                                             net->layers[2][1]->as<models::BasicBlock>()->bn2};
  std::vector<torch::nn::BatchNorm2d> live{net->layers[3][0]->as<models::BasicBlock>()->bn1,
                                           net->layers[3][1]->as<models::BasicBlock>()->bn2};
  for (auto& b : frozen) CHECK(graft::norm_stats_frozen(*b));
  for (auto& b : live) CHECK_FALSE(graft::norm_stats_frozen(*b));

  graft::train(*net);
  CHECK(net->is_training());
  for (auto& b : frozen) CHECK_FALSE(b->is_training());
  for (auto& b : live) CHECK(b->is_training());

  auto before_frozen = snapshot(frozen);
  auto before_live = snapshot(live);
  auto x = torch::randn({4, 3, 64, 64});
  net->forward(x);
  auto after_frozen = snapshot(frozen);
  auto after_live = snapshot(live);
  for (std::size_t i = 0; i < frozen.size(); ++i) {
    CHECK(torch::equal(after_frozen.mean[i], before_frozen.mean[i]));
    CHECK(torch::equal(after_frozen.var[i], before_frozen.var[i]));
    CHECK(torch::equal(after_frozen.count[i], before_frozen.count[i]));
  }
  for (std::size_t i = 0; i < live.size(); ++i) {
    CHECK_FALSE(torch::equal(after_live.mean[i], before_live.mean[i]));
    CHECK_FALSE(torch::equal(after_live.var[i], before_live.var[i]));
    CHECK(after_live.count[i].item<std::int64_t>() == before_live.count[i].item<std::int64_t>() + 1);
  }
}

TEST_CASE("a frozen layer's training-mode output equals its eval-mode output", "[transforms][norm]") {
  torch::manual_seed(2);
  torch::nn::Sequential net(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3)), torch::nn::BatchNorm2d(8),
                            torch::nn::ReLU(), torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3)),
                            torch::nn::BatchNorm2d(8));
  randomize_stats(*net);
  auto x = torch::randn({2, 3, 12, 12});
  net->eval();
  auto eval_out = net->forward(x);
  auto bn = net[1]->as<torch::nn::BatchNorm2d>();
  auto h = net[0]->as<torch::nn::Conv2d>()->forward(x);
  auto eval_bn = bn->forward(h);

  graft::freeze_norm_stats(*net, graft::norm_layers);
  graft::train(*net);
  auto train_bn = bn->forward(h);
  CHECK(torch::allclose(train_bn, eval_bn));
  CHECK(torch::allclose(net->forward(x), eval_out));
  // Batch statistics would differ: the frozen path is really in use.
  auto batch_stats = torch::batch_norm(h, bn->weight, bn->bias, {}, {}, true, 0.1, 1e-5, false);
  CHECK_FALSE(torch::allclose(train_bn, batch_stats));

  // A plain train() brings batch statistics back; graft::train() restores the freeze.
  net->train();
  CHECK(bn->is_training());
  graft::train(*net);
  CHECK_FALSE(bn->is_training());
  graft::train(*net, false);
  CHECK_FALSE(net->is_training());
}

TEST_CASE("freeze_norm_stats: affine parameters, selection by module path, unfreezing", "[transforms][norm]") {
  auto net = models::resnet(18, 10);
  auto r = graft::freeze_norm_stats(*net, "layer1.0.bn1"_glob | "bn1"_glob, {.affine = true});
  CHECK(r.layers == std::vector<std::string>{"bn1", "layer1.0.bn1"});
  CHECK(r.affine_tensors == 4);
  CHECK_FALSE(net->bn1->weight.requires_grad());
  CHECK_FALSE(net->bn1->bias.requires_grad());
  CHECK(net->conv1->weight.requires_grad());

  graft::train(*net);
  auto u = graft::unfreeze_norm_stats(*net, "bn1"_glob, {.affine = true});
  CHECK(u.layers == std::vector<std::string>{"bn1"});
  CHECK(fmt::format("{}", u) == "unfroze the statistics of 1 layers selected by 'bn1' and unfroze 2 affine tensors");
  CHECK(net->bn1->is_training());
  CHECK(net->bn1->weight.requires_grad());
  CHECK_FALSE(graft::norm_stats_frozen(*net->bn1));
  CHECK(graft::norm_stats_frozen(*net->layers[0][0]->as<models::BasicBlock>()->bn1));
}

TEST_CASE("freeze_norm_stats selecting no statistics layer is an error", "[transforms][norm]") {
  auto net = models::resnet(18, 10);
  CHECK_THROWS_MATCHES(
      graft::freeze_norm_stats(*net, "layer4.0.bn3"_glob), graft::selection_error,
      Catch::Matchers::Message("[graft.selection] 'layer4.0.bn3' selected none of the 20 normalization layers "
                               "with running statistics of models::ResNetImpl; did you mean 'layer4.0.bn1' or "
                               "'layer4.0.bn2' or 'layer1.0.bn1'?"));
  CHECK_THROWS_AS(graft::freeze_norm_stats(*net, "fc.**"_glob), graft::selection_error);
  CHECK(graft::freeze_norm_stats(*net, graft::optional("fc.**"_glob)).layers.empty());

  // LayerNorm has no running statistics; InstanceNorm only when it tracks them.
  torch::nn::Sequential seq(torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})),
                            torch::nn::InstanceNorm1d(torch::nn::InstanceNorm1dOptions(4)),
                            torch::nn::InstanceNorm1d(torch::nn::InstanceNorm1dOptions(4).track_running_stats(true)));
  auto r = graft::freeze_norm_stats(*seq, graft::norm_layers | "**"_glob);
  CHECK(r.layers == std::vector<std::string>{"2"});
}

// libtorch's module->train() puts frozen layers back in training mode, where each forward
// updates their statistics. graft cannot see that call, but lr_scheduler::step(), which follows
// every optimizer step, checks, and refuses to go on naming the layer.
TEST_CASE("lr_scheduler::step refuses to go on after module->train() undid frozen statistics", "[transforms][norm]") {
  torch::manual_seed(3);
  auto net = models::resnet(18, 10);
  graft::freeze_norm_stats(*net, graft::of_type<torch::nn::BatchNorm2dImpl> & !"layer4.**"_glob);
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  graft::lr_scheduler sched(opt, graft::step_lr{.step_size = 1, .gamma = 0.5});
  graft::train(*net);
  sched.step();
  CHECK(sched.epoch() == 1);

  net->train();  // libtorch's own: every layer trains, the frozen ones too
  CHECK_THROWS_MATCHES(
      sched.step(), graft::state_error,
      Message(fmt::format("[graft.state] lr_scheduler::step: 'bn1' of {} (and 14 more) has frozen statistics "
                          "(freeze_norm_stats) but is in training mode, so every forward updates them: "
                          "module->train() switched it back; switch modes with graft::train(module), which keeps "
                          "frozen layers in eval mode (or unfreeze_norm_stats to let them train)",
                          net->name())));
  CHECK(sched.epoch() == 1);  // no step taken
  CHECK(opt.param_groups()[0].options().get_lr() == 0.05);

  graft::train(*net);
  sched.step();
  CHECK(sched.epoch() == 2);
  // Unfrozen layers may train; a model that is gone is not checked.
  graft::unfreeze_norm_stats(*net, graft::norm_layers);
  net->train();
  sched.step();
  graft::freeze_norm_stats(*net, graft::norm_layers);
  net->train();
  net = nullptr;
  CHECK_NOTHROW(sched.step());
}
