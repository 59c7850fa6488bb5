#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/select.hpp>
#include <graft/transforms.hpp>

#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Contains;

namespace {
// The frozen/trainable split as a user computes it by hand from named_parameters().
std::vector<std::string> trainable_names(const torch::nn::Module& m) {
  std::vector<std::string> out;
  for (auto& p : m.named_parameters())
    if (p.value().requires_grad()) out.push_back(p.key());
  return out;
}
} // namespace

TEST_CASE("freeze sets requires_grad on exactly the selected parameters", "[transforms][freeze]") {
  auto net = models::resnet(18, 10);
  auto all = net->named_parameters();
  auto r = graft::freeze(*net, !"fc.**"_glob);
  CHECK(trainable_names(*net) == std::vector<std::string>{"fc.weight", "fc.bias"});

  std::int64_t backbone = 0;
  for (auto& p : all)
    if (!p.key().starts_with("fc.")) backbone += p.value().numel();
  CHECK(r.selected_tensors == all.size() - 2);
  CHECK(r.changed_tensors == r.selected_tensors);
  CHECK(r.selected_elements == backbone);
  CHECK(r.changed_elements == backbone);
  CHECK_FALSE(r.requires_grad);
  CHECK(fmt::format("{}", r) == fmt::format("froze {} tensors ({} elements) selected by 'not fc.**'", all.size() - 2, backbone));

  // Freezing again changes nothing and says so.
  auto again = graft::freeze(*net, "layer1.**"_glob);
  std::size_t layer1 = 0;
  for (auto& p : all) layer1 += p.key().starts_with("layer1.");
  CHECK(again.changed_tensors == 0);
  CHECK(again.selected_tensors == layer1);
  CHECK_THAT(fmt::format("{}", again), Contains(fmt::format("{0} of the {0} selected were already frozen", layer1)));

  auto u = graft::unfreeze(*net, "layer4.**"_glob);
  CHECK(u.requires_grad);
  CHECK(u.changed_tensors == u.selected_tensors);
  auto names = trainable_names(*net);
  CHECK(names.size() == u.selected_tensors + 2);
  for (auto& n : names) CHECK((n.starts_with("layer4.") || n.starts_with("fc.")));
}

TEST_CASE("freezing nothing is an error with did-you-mean, unless optional", "[transforms][freeze]") {
  auto net = models::resnet(18, 10);
  CHECK_THROWS_MATCHES(graft::freeze(*net, "layer5.**"_glob), graft::selection_error,
                       Catch::Matchers::Message(
                           "[graft.selection] 'layer5.**' matched none of the 62 parameters of models::ResNetImpl; "
                           "did you mean 'layer1.**', 'layer2.**' or 'layer3.**'? "
                           "(wrap the selector in graft::optional(...) if matching nothing is fine)"));
  CHECK(trainable_names(*net).size() == 62);  // nothing changed
  auto r = graft::freeze(*net, graft::optional("head.**"_glob));
  CHECK(r.selected_tensors == 0);
  CHECK(r.changed_tensors == 0);
}

TEST_CASE("trainable_parameters and count_parameters agree with named_parameters", "[transforms][freeze]") {
  auto net = models::resnet(18, 10);
  graft::freeze(*net, "layer{1,2,3}.**"_glob | "conv1.*"_glob | "bn1.*"_glob);
  auto params = graft::trainable_parameters(*net);
  std::vector<torch::Tensor> by_hand;
  std::int64_t all = 0, trainable = 0;
  for (auto& p : net->named_parameters()) {
    all += p.value().numel();
    if (p.value().requires_grad()) {
      by_hand.push_back(p.value());
      trainable += p.value().numel();
    }
  }
  REQUIRE(params.size() == by_hand.size());
  for (std::size_t i = 0; i < params.size(); ++i) CHECK(params[i].is_same(by_hand[i]));

  auto c = graft::count_parameters(*net);
  CHECK(c.tensors == 62);
  CHECK(c.elements == all);
  CHECK(c.trainable_tensors == by_hand.size());
  CHECK(c.trainable_elements == trainable);
  CHECK(c.frozen_tensors() == 62 - by_hand.size());
  CHECK(c.frozen_elements() == all - trainable);
  CHECK(fmt::format("{}", c) ==
        fmt::format("trainable: {} of {} elements ({:.2f}%) in {} of 62 tensors", trainable, all,
                    100.0 * static_cast<double>(trainable) / static_cast<double>(all), by_hand.size()));
}

TEST_CASE("tied parameters are frozen once and counted once", "[transforms][freeze]") {
  // One weight registered by two modules, as language models tie embedding and output layer.
  struct holder : torch::nn::Module {
    explicit holder(std::vector<std::pair<std::string, torch::Tensor>> ts) {
      for (auto& [k, t] : ts) register_parameter(k, t);
    }
  };
  auto w = torch::randn({10, 4});
  torch::nn::Module net;
  net.register_module("emb", std::make_shared<holder>(std::vector<std::pair<std::string, torch::Tensor>>{{"weight", w}}));
  net.register_module("head", std::make_shared<holder>(std::vector<std::pair<std::string, torch::Tensor>>{
                                  {"weight", w}, {"bias", torch::zeros({10})}}));
  REQUIRE(net.named_parameters().size() == 3);  // libtorch lists the tied weight under both names
  auto r = graft::freeze(net, graft::everything);
  CHECK(r.selected_tensors == 2);  // the tied weight and the bias
  CHECK(graft::count_parameters(net).tensors == 2);
  CHECK_FALSE(net.named_parameters()["head.bias"].requires_grad());
  CHECK_FALSE(w.requires_grad());
}

TEST_CASE("frozen parameters do not move while the head trains", "[transforms][freeze]") {
  torch::manual_seed(0);
  auto net = models::resnet(18, 4);
  graft::freeze(*net, !"fc.**"_glob);
  std::vector<torch::Tensor> before;
  for (auto& p : net->parameters()) before.push_back(p.detach().clone());
  torch::optim::SGD opt(graft::trainable_parameters(*net), torch::optim::SGDOptions(0.1));
  auto x = torch::randn({4, 3, 32, 32});
  auto y = torch::tensor({0, 1, 2, 3});
  for (int i = 0; i < 3; ++i) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    opt.step();
  }
  auto params = net->named_parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    bool head = params[i].key().starts_with("fc.");
    INFO(params[i].key());
    CHECK(torch::equal(params[i].value(), before[i]) != head);
  }
}
