#include <catch2/catch.hpp>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/optim.hpp>
#include <graft/select.hpp>
#include <graft/transforms.hpp>

#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Message;

namespace {
std::size_t trainable_count(const torch::nn::Module& m) {
  std::size_t n = 0;
  for (auto& p : m.parameters()) n += p.requires_grad();
  return n;
}
std::size_t count_under(const torch::nn::Module& m, const std::string& prefix) {
  std::size_t n = 0;
  for (auto& p : m.named_parameters()) n += p.key().starts_with(prefix);
  return n;
}
void train_step(models::ResNet& net, torch::optim::Optimizer& opt) {
  opt.zero_grad();
  torch::nn::functional::cross_entropy(net->forward(torch::randn({2, 3, 32, 32})), torch::tensor({0, 1})).backward();
  opt.step();
}
} // namespace

TEST_CASE("gradual unfreezing unfreezes stages at their epochs and adds their groups", "[transforms][gradual]") {
  torch::manual_seed(6);
  auto net = models::resnet(18, 4);
  graft::freeze(*net, !"fc.**"_glob);
  torch::optim::SGD opt(graft::trainable_parameters(*net), torch::optim::SGDOptions(0.1));
  graft::gradual_unfreezing stages(*net);
  stages.at(2, "layer4", "layer4.**"_glob, 0.1).at(3, "layer3", "layer3.**"_glob, 0.01);
  CHECK(stages.names() == std::vector<std::string>{"layer4", "layer3"});

  CHECK(stages.step(opt, 0).empty());
  CHECK(stages.step(opt, 1).empty());
  CHECK(opt.param_groups().size() == 1);
  CHECK(trainable_count(*net) == 2);

  auto layer4 = net->layers[3]->named_parameters();
  auto before = layer4[0].value().detach().clone();
  auto done = stages.step(opt, 2);
  REQUIRE(done.size() == 1);
  CHECK(done[0].name == "layer4");
  CHECK(done[0].group_tensors == count_under(*net, "layer4."));
  CHECK(done[0].lr == Approx(0.1 * 0.1));
  CHECK(fmt::format("{}", done[0]) ==
        fmt::format("epoch 2: stage 'layer4' {}; added a group of {} tensors at lr 0.01", done[0].unfrozen,
                    done[0].group_tensors));
  REQUIRE(opt.param_groups().size() == 2);
  CHECK(opt.param_groups()[1].options().get_lr() == Approx(0.01));
  CHECK(trainable_count(*net) == 2 + count_under(*net, "layer4."));
  train_step(net, opt);
  CHECK_FALSE(torch::equal(layer4[0].value(), before));  // the new group trains

  // A stage is applied once; a late step() applies every stage due.
  CHECK(stages.step(opt, 2).empty());
  CHECK(stages.step(opt, 7).size() == 1);
  CHECK(opt.param_groups().size() == 3);
  CHECK(stages.applied() == std::vector<bool>{true, true});
}

TEST_CASE("a stage's selector is checked when it is declared", "[transforms][gradual]") {
  auto net = models::resnet(18, 4);
  graft::gradual_unfreezing stages(*net);
  CHECK_THROWS_AS(stages.at(1, "layer5", "layer5.**"_glob), graft::selection_error);
  stages.at(1, "layer4", "layer4.**"_glob);
  CHECK_THROWS_MATCHES(stages.at(2, "layer4", "layer3.**"_glob), graft::option_error,
                       Message("[graft.option] gradual_unfreezing: two stages are named 'layer4'"));
}

TEST_CASE("an lr scheduler keeps driving a group added mid-training", "[transforms][gradual][schedules]") {
  torch::manual_seed(7);
  auto net = models::resnet(18, 4);
  graft::freeze(*net, !"fc.**"_glob);
  double base = 0.1, scale = 0.1;
  std::int64_t t_max = 10;
  torch::optim::SGD opt(graft::trainable_parameters(*net), torch::optim::SGDOptions(base));
  graft::lr_scheduler sched(opt, graft::cosine_annealing{.t_max = t_max});
  graft::gradual_unfreezing stages(*net);
  stages.at(3, "layer4", "layer4.**"_glob, scale);
  auto cosine = [&](double b, std::int64_t e) { return b * (1 + std::cos(M_PI * static_cast<double>(e) / t_max)) / 2; };

  for (std::int64_t epoch = 0; epoch < 6; ++epoch) {
    stages.step(opt, epoch);
    if (epoch >= 4) {
      // The scheduler's step() after the stage took the new group's base lr and follows it.
      REQUIRE(opt.param_groups().size() == 2);
      CHECK(opt.param_groups()[1].options().get_lr() == Approx(cosine(base * scale, epoch)));
    }
    CHECK(opt.param_groups()[0].options().get_lr() == Approx(cosine(base, epoch)));
    sched.step();
  }
}

TEST_CASE("gradual unfreezing resumes: applied stages are re-created before the optimizer state loads",
          "[transforms][gradual]") {
  torch::manual_seed(8);
  std::ostringstream saved_stages, saved_opt;
  {
    auto net = models::resnet(18, 4);
    graft::freeze(*net, !"fc.**"_glob);
    torch::optim::SGD opt(graft::trainable_parameters(*net), torch::optim::SGDOptions(0.1).momentum(0.9));
    graft::gradual_unfreezing stages(*net);
    stages.at(1, "layer4", "layer4.**"_glob, 0.1).at(5, "layer3", "layer3.**"_glob, 0.1);
    for (std::int64_t e = 0; e < 3; ++e) {
      stages.step(opt, e);
      train_step(net, opt);
    }
    torch::serialize::OutputArchive a;
    stages.save(a);
    a.save_to(saved_stages);
    torch::save(opt, saved_opt);
  }
  auto net = models::resnet(18, 4);
  graft::freeze(*net, !"fc.**"_glob);
  torch::optim::SGD opt(graft::trainable_parameters(*net), torch::optim::SGDOptions(0.1).momentum(0.9));
  graft::gradual_unfreezing stages(*net);
  stages.at(1, "layer4", "layer4.**"_glob, 0.1).at(5, "layer3", "layer3.**"_glob, 0.1);
  torch::serialize::InputArchive a;
  std::istringstream in(saved_stages.str());
  a.load_from(in);
  stages.load(a, opt);
  CHECK(stages.applied() == std::vector<bool>{true, false});
  CHECK(opt.param_groups().size() == 2);
  CHECK(trainable_count(*net) == 2 + count_under(*net, "layer4."));
  std::istringstream opt_in(saved_opt.str());
  torch::load(opt, opt_in);  // matches: same groups, same sizes
  CHECK(opt.param_groups()[1].options().get_lr() == Approx(0.01));
  CHECK(stages.step(opt, 3).empty());

  graft::gradual_unfreezing other(*net);
  other.at(1, "blocks4", "layer4.**"_glob);
  torch::serialize::InputArchive b;
  std::istringstream in2(saved_stages.str());
  b.load_from(in2);
  CHECK_THROWS_MATCHES(other.load(b, opt), graft::key_error,
                       Message("[graft.key] gradual_unfreezing: the saved run applied stage 'layer4', which is not declared"));
}
