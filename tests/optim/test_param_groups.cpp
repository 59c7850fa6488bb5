#include <catch2/catch.hpp>

#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/optim.hpp>
#include <graft/select.hpp>
#include <graft/transforms.hpp>

#include "oracle.hpp"
#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Contains;
using Catch::Matchers::Message;

namespace {
std::vector<std::string> paths_of(const torch::nn::Module& m, const torch::optim::OptimizerParamGroup& g) {
  std::map<const void*, std::string> names;
  for (auto& p : m.named_parameters()) names.emplace(p.value().unsafeGetTensorImpl(), p.key());
  std::vector<std::string> out;
  for (auto& p : g.params()) out.push_back(names.at(p.unsafeGetTensorImpl()));
  return out;
}
const torch::optim::SGDOptions& sgd(const torch::optim::OptimizerParamGroup& g) {
  return static_cast<const torch::optim::SGDOptions&>(g.options());
}
std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}
} // namespace

TEST_CASE("param groups equal the split a user writes by hand", "[optim][param_groups]") {
  auto net = models::resnet(18, 10);
  auto base = torch::optim::SGDOptions(1e-3).momentum(0.9).weight_decay(1e-3);
  auto groups = graft::param_groups(*net)
                    .group("head", "fc.**"_glob, {.lr_scale = 10})
                    .group("no_decay", graft::bias | graft::norm_layers, {.weight_decay = 0})
                    .rest("backbone")
                    .build(base);

  // The Python recipe: for name, p in model.named_parameters(): if name.startswith("fc."): ...
  std::vector<std::string> head, no_decay, backbone;
  for (auto& p : net->named_parameters()) {
    const auto& k = p.key();
    bool norm = k.find(".bn") != std::string::npos || k.starts_with("bn1.") || k.find("downsample.1.") != std::string::npos;
    if (k.starts_with("fc.")) head.push_back(k);
    else if (k.ends_with(".bias") || norm) no_decay.push_back(k);
    else backbone.push_back(k);
  }
  REQUIRE(groups.size() == 3);
  CHECK(groups.names() == std::vector<std::string>{"head", "no_decay", "backbone"});
  CHECK(paths_of(*net, groups["head"]) == head);
  CHECK(paths_of(*net, groups["no_decay"]) == no_decay);
  CHECK(paths_of(*net, groups["backbone"]) == backbone);

  CHECK(sgd(groups["head"]).lr() == base.lr() * 10);
  CHECK(sgd(groups["head"]).weight_decay() == base.weight_decay());
  CHECK(sgd(groups["no_decay"]).lr() == base.lr());
  CHECK(sgd(groups["no_decay"]).weight_decay() == 0);
  CHECK(sgd(groups["backbone"]).weight_decay() == base.weight_decay());
  for (auto& g : groups.groups()) CHECK(sgd(g).momentum() == base.momentum());

  // Every parameter once, and the bookkeeping agrees with the groups.
  std::size_t total = 0;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    total += groups.groups()[i].params().size();
    CHECK(groups.info()[i].tensors == groups.groups()[i].params().size());
    std::int64_t n = 0;
    for (auto& p : groups.groups()[i].params()) n += p.numel();
    CHECK(groups.info()[i].elements == n);
  }
  CHECK(total == net->parameters().size());
  CHECK(groups.group_of("fc.bias") == "head");
  CHECK(groups.group_of("layer2.0.downsample.1.weight") == "no_decay");
  CHECK(groups.group_of("conv1.weight") == "backbone");
  CHECK(groups.index_of("backbone") == 2);
  CHECK_THROWS_MATCHES(groups.index_of("body"), graft::key_error,
                       Message("[graft.key] no param group named 'body'; the groups are 'head', 'no_decay', 'backbone'"));

  auto opt = groups.make_optimizer<torch::optim::SGD>();
  REQUIRE(opt.param_groups().size() == 3);
  CHECK(sgd(opt.param_groups()[groups.index_of("head")]).lr() == base.lr() * 10);
}

TEST_CASE("SGD steps use each group's learning rate", "[optim][param_groups]") {
  torch::manual_seed(3);
  auto net = models::resnet(18, 4);
  double base_lr = 0.05;
  auto groups = graft::param_groups(*net)
                    .group("head", "fc.**"_glob, {.lr_scale = 10})
                    .group("late", "layer4.**"_glob, {.lr = 0.003})
                    .rest("backbone")
                    .build(torch::optim::SGDOptions(base_lr));
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  auto x = torch::randn({4, 3, 32, 32});
  auto y = torch::tensor({0, 1, 2, 3});
  opt.zero_grad();
  torch::nn::functional::cross_entropy(net->forward(x), y).backward();
  std::vector<torch::Tensor> before, grads;
  for (auto& p : net->parameters()) {
    before.push_back(p.detach().clone());
    grads.push_back(p.grad().clone());
  }
  opt.step();
  auto params = net->named_parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& k = params[i].key();
    double lr = sgd(groups[*groups.group_of(k)]).lr();
    double expected_lr = k.starts_with("fc.") ? base_lr * 10 : k.starts_with("layer4.") ? 0.003 : base_lr;
    INFO(k);
    CHECK(lr == expected_lr);
    CHECK(torch::allclose(before[i] - params[i].value().detach(), lr * grads[i], 1e-5, 1e-7));
  }
}

TEST_CASE("frozen parameters stay out of the groups unless asked for", "[optim][param_groups]") {
  torch::manual_seed(4);
  auto net = models::resnet(18, 4);
  graft::freeze(*net, !"fc.**"_glob);
  auto groups = graft::param_groups(*net).group("head", "fc.**"_glob).build(torch::optim::SGDOptions(0.1));
  CHECK(paths_of(*net, groups["head"]) == std::vector<std::string>{"fc.weight", "fc.bias"});
  std::size_t out = 0;
  for (auto& p : groups.parameters()) out += !p.group.has_value();
  CHECK(out == 60);
  CHECK_FALSE(groups.parameters().front().trainable);

  // Frozen parameters never move, trained ones do.
  std::vector<torch::Tensor> before;
  for (auto& p : net->parameters()) before.push_back(p.detach().clone());
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  for (int i = 0; i < 2; ++i) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(torch::randn({2, 3, 32, 32})), torch::tensor({0, 1})).backward();
    opt.step();
  }
  auto params = net->named_parameters();
  for (std::size_t i = 0; i < params.size(); ++i)
    CHECK(torch::equal(params[i].value(), before[i]) != params[i].key().starts_with("fc."));

  auto with_frozen = graft::param_groups(*net)
                         .group("head", "fc.**"_glob)
                         .group("frozen_too", "layer4.**"_glob, {.include_frozen = true})
                         .build(torch::optim::SGDOptions(0.1));
  CHECK(with_frozen["frozen_too"].params().size() == graft::select(*net, "layer4.**"_glob).size());
}

TEST_CASE("param group errors name the group and the parameters", "[optim][param_groups]") {
  auto net = models::resnet(18, 10);
  auto opts = torch::optim::SGDOptions(0.1);
  CHECK_THROWS_MATCHES(graft::param_groups(*net).group("head", "fc.**"_glob).build(opts), graft::selection_error,
                       Message("[graft.selection] param groups leave 60 trainable parameters in no group: "
                               "'conv1.weight', 'bn1.weight', 'bn1.bias', 'layer1.0.conv1.weight', "
                               "'layer1.0.bn1.weight', ... (add a group for them, or .rest(\"name\"), or freeze them)"));
  CHECK_THROWS_MATCHES(graft::param_groups(*net).group("head", "fx.**"_glob).rest("body").build(opts),
                       graft::selection_error,
                       Message("[graft.selection] param group 'head': 'fx.**' matched none of the 62 parameters of "
                               "models::ResNetImpl; did you mean 'fc.**' or 'bn1.**'? (wrap the selector in "
                               "graft::optional(...) if matching nothing is fine)"));
  CHECK_THROWS_MATCHES(
      graft::param_groups(*net).group("late", "layer4.**"_glob).group("late_bn", "layer4.*.bn1.*"_glob).rest("body").build(opts),
      graft::selection_error,
      Message("[graft.selection] param group 'late_bn' is empty: its 4 parameters matched by 'layer4.*.bn1.*' are "
              "frozen or taken by earlier groups ('late')"));
  // optional(): an empty group is dropped.
  auto g = graft::param_groups(*net).group("head", graft::optional("fx.**"_glob)).rest("body").build(opts);
  CHECK(g.names() == std::vector<std::string>{"body"});

  CHECK_THROWS_MATCHES(graft::param_groups(*net).group("head", "fc.**"_glob, {.lr = 1, .lr_scale = 2}).rest("body").build(opts),
                       graft::option_error,
                       Message("[graft.option] param group 'head' sets both lr and lr_scale; give one"));
  CHECK_THROWS_MATCHES(graft::param_groups(*net).group("a", "fc.**"_glob).group("a", "layer4.**"_glob).rest("b").build(opts),
                       graft::option_error, Message("[graft.option] two param groups are named 'a'"));
}

TEST_CASE("tied parameters land in one group once", "[optim][param_groups]") {
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
  // "head.weight" is the tied tensor seen first as "emb.weight": it goes where "emb.weight" goes.
  auto g = graft::param_groups(net).group("emb", "emb.*"_glob).rest("head").build(torch::optim::SGDOptions(0.1));
  CHECK(g["emb"].params().size() == 1);
  CHECK(g["head"].params().size() == 1);
  CHECK(g["emb"].params()[0].is_same(w));
}

TEST_CASE("per-group optimizer settings for every libtorch optimizer", "[optim][param_groups]") {
  auto net = models::resnet(18, 10);
  auto adam = graft::param_groups(*net)
                  .group("head", "fc.**"_glob, {.lr = 1e-2}, graft::opt::betas{0.8, 0.9}, graft::opt::amsgrad{true})
                  .rest("body", {.weight_decay_scale = 0.5})
                  .build(torch::optim::AdamOptions(1e-4).weight_decay(0.2));
  auto& head = static_cast<const torch::optim::AdamOptions&>(adam["head"].options());
  auto& body = static_cast<const torch::optim::AdamOptions&>(adam["body"].options());
  CHECK(head.lr() == 1e-2);
  CHECK(head.betas() == std::make_tuple(0.8, 0.9));
  CHECK(head.amsgrad());
  CHECK(body.betas() == torch::optim::AdamOptions().betas());
  CHECK(body.weight_decay() == 0.2 * 0.5);
  auto opt = adam.make_optimizer<torch::optim::Adam>();
  CHECK(opt.param_groups().size() == 2);

  auto sgd_groups = graft::param_groups(*net)
                        .group("head", "fc.**"_glob, {}, graft::opt::momentum{0.5},
                               graft::opt::custom([](torch::optim::SGDOptions& o) { o.nesterov(true); }))
                        .rest("body")
                        .build(torch::optim::SGDOptions(0.1).momentum(0.9));
  CHECK(sgd(sgd_groups["head"]).momentum() == 0.5);
  CHECK(sgd(sgd_groups["head"]).nesterov());
  CHECK_FALSE(sgd(sgd_groups["body"]).nesterov());

  auto rms = graft::param_groups(*net).group("head", "fc.**"_glob, {}, graft::opt::alpha{0.9}, graft::opt::centered{true})
                 .rest("body").build(torch::optim::RMSpropOptions(0.01));
  CHECK(static_cast<const torch::optim::RMSpropOptions&>(rms["head"].options()).alpha() == 0.9);
  auto rms_opt = rms.make_optimizer<torch::optim::RMSprop>();
  CHECK(rms_opt.param_groups().size() == 2);

  auto ada = graft::param_groups(*net).group("head", "fc.**"_glob, {.lr_scale = 2}, graft::opt::lr_decay{0.1})
                 .rest("body").build(torch::optim::AdagradOptions(0.01));
  CHECK(static_cast<const torch::optim::AdagradOptions&>(ada["head"].options()).lr_decay() == 0.1);
  CHECK(static_cast<const torch::optim::AdagradOptions&>(ada["head"].options()).lr() == 0.02);
  auto ada_opt = ada.make_optimizer<torch::optim::Adagrad>();
  CHECK(ada_opt.param_groups().size() == 2);

  auto adamw = graft::param_groups(*net).no_decay().rest("all").build(torch::optim::AdamWOptions(1e-3));
  CHECK(adamw.names() == std::vector<std::string>{"all", "all.no_decay"});
  CHECK(static_cast<const torch::optim::AdamWOptions&>(adamw["all"].options()).weight_decay() == 1e-2);
  CHECK(static_cast<const torch::optim::AdamWOptions&>(adamw["all.no_decay"].options()).weight_decay() == 0);

  // LBFGS keeps a single group.
  auto lbfgs = graft::param_groups(*net).rest("all", {.lr_scale = 0.5}).build(torch::optim::LBFGSOptions(1));
  CHECK(lbfgs["all"].options().get_lr() == 0.5);
  auto lbfgs_opt = lbfgs.make_optimizer<torch::optim::LBFGS>();
  CHECK(lbfgs_opt.param_groups().size() == 1);
  CHECK_THROWS_MATCHES(graft::param_groups(*net).group("head", "fc.**"_glob).rest("body").build(torch::optim::LBFGSOptions(1)),
                       graft::option_error,
                       Message("[graft.option] LBFGS optimizes a single param group; these settings make 2 ('head', 'body')"));
  CHECK_THROWS_MATCHES(graft::param_groups(*net).rest("all", {.weight_decay = 0}).build(torch::optim::LBFGSOptions(1)),
                       graft::option_error,
                       Message("[graft.option] param group 'all' sets a weight decay, but this optimizer has none"));
}

TEST_CASE("no_decay() splits exactly PyTorch's ndim <= 1 tensors off (torchvision resnet18)", "[optim][param_groups][oracle]") {
  auto net = models::resnet(18);
  auto groups = graft::param_groups(*net)
                    .group("head", "fc.**"_glob, {.lr_scale = 10})
                    .rest("backbone")
                    .no_decay()
                    .build(torch::optim::SGDOptions(0.1).weight_decay(1e-4));
  CHECK(groups.names() == std::vector<std::string>{"head", "head.no_decay", "backbone", "backbone.no_decay"});

  // timm's param_groups_weight_decay rule, on torchvision's own resnet18.
  auto out = graft::test::run_python(R"(
import torchvision
m = torchvision.models.resnet18()
for n, p in m.named_parameters():
    if p.ndim <= 1 or n.endswith(".bias"):
        print(("head" if n.startswith("fc.") else "backbone") + ".no_decay", n)
    else:
        print("head" if n.startswith("fc.") else "backbone", n)
)");
  std::map<std::string, std::vector<std::string>> expected;
  for (auto& l : lines(out)) {
    auto space = l.find(' ');
    expected[l.substr(0, space)].push_back(l.substr(space + 1));
  }
  REQUIRE(expected.size() == 4);
  for (auto& [name, members] : expected) {
    INFO(name);
    CHECK(paths_of(*net, groups[name]) == members);
    CHECK(sgd(groups[name]).weight_decay() == (name.ends_with(".no_decay") ? 0.0 : 1e-4));
  }
  CHECK(sgd(groups["head.no_decay"]).lr() == sgd(groups["head"]).lr());
}

TEST_CASE("layer-wise lr decay scales each layer's lr by decay^(num_layers - id)", "[optim][param_groups]") {
  auto net = models::resnet(18, 10);
  double base = 0.1, decay = 0.5;
  int num_layers = 5;  // stem 0, layer1..4, fc 5
  auto layer_of = [](std::string_view p) {
    if (p.starts_with("layer")) return p[5] - '0';
    return p.starts_with("fc.") ? 5 : 0;
  };
  auto groups = graft::param_groups(*net).rest("all").layer_decay(decay, num_layers, layer_of).build(torch::optim::SGDOptions(base));
  REQUIRE(groups.size() == 6);
  for (int id = 0; id <= num_layers; ++id) {
    auto name = fmt::format("all.layer{}", id);
    INFO(name);
    CHECK(groups.names()[id] == name);
    CHECK(sgd(groups[name]).lr() == Approx(base * std::pow(decay, num_layers - id)));
    for (auto& p : paths_of(*net, groups[name])) CHECK(layer_of(p) == id);
  }

  // Ids from a regex capture; paths it does not match (stem, head) get id 0.
  auto by_regex = graft::param_groups(*net)
                      .group("head", "fc.**"_glob)
                      .rest("body")
                      .layer_decay(decay, num_layers, graft::regex(R"(layer(\d)\..*)"))
                      .build(torch::optim::SGDOptions(base));
  CHECK(by_regex.names() == std::vector<std::string>{"head.layer0", "body.layer0", "body.layer1", "body.layer2",
                                                     "body.layer3", "body.layer4"});
  CHECK(paths_of(*net, by_regex["body.layer3"]) == paths_of(*net, groups["all.layer3"]));

  // Combined with no_decay, as timm's param_groups_layer_decay does.
  auto both = graft::param_groups(*net).rest("all").layer_decay(decay, num_layers, layer_of).no_decay()
                  .build(torch::optim::SGDOptions(base).weight_decay(0.05));
  CHECK(both.size() == 12);
  CHECK(sgd(both["all.layer2.no_decay"]).weight_decay() == 0);
  CHECK(sgd(both["all.layer2.no_decay"]).lr() == Approx(base * std::pow(decay, 3)));
}

TEST_CASE("the summary lists groups and, verbosely, every parameter", "[optim][param_groups]") {
  auto net = models::resnet(18, 10);
  graft::freeze(*net, "conv1.*"_glob);
  auto groups = graft::param_groups(*net)
                    .group("head", "fc.**"_glob, {.lr_scale = 10})
                    .rest("backbone")
                    .build(torch::optim::SGDOptions(1e-3).weight_decay(1e-4));
  auto table = lines(fmt::format("{}", groups));
  REQUIRE(table.size() == 3);
  CHECK(table[0] == "group             lr  weight_decay  tensors    elements");
  auto& h = groups.info()[0];
  CHECK(table[1] == fmt::format("{:<8}  {:>10.4g}  {:>12}  {:>7}  {:>10}", "head", h.lr, "0.0001", h.tensors, h.elements));
  auto verbose = lines(fmt::format("{:v}", groups));
  REQUIRE(verbose.size() == 3 + net->parameters().size());
  CHECK(verbose[3] == "  conv1.weight [64, 3, 7, 7] (no group) frozen");
  CHECK(verbose[4] == "  bn1.weight [64] backbone trainable");
  CHECK(verbose.back() == "  fc.bias [10] head trainable");
}

// libtorch before 2.9 installs the groups' options as given; from 2.9 the constructor replaces
// options equal to their class's defaults, which make_optimizer never does.
TEST_CASE("make_optimizer equals constructing the optimizer from the groups where libtorch keeps group options",
          "[optim][param_groups]") {
  torch::manual_seed(5);
  auto a = models::resnet(18, 4);
  auto b = models::resnet(18, 4);
  {
    torch::NoGradGuard g;
    auto pb = b->parameters();
    auto pa = a->parameters();
    for (std::size_t i = 0; i < pa.size(); ++i) pb[i].copy_(pa[i]);
  }
  auto base = torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-3);
  auto build = [&](torch::nn::Module& m) {
    return graft::param_groups(m).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").no_decay().build(base);
  };
  auto ga = build(*a);
  auto gb = build(*b);
  auto ob = gb.make_optimizer<torch::optim::SGD>();
  auto no_decay = gb.index_of("head.no_decay");
  CHECK(sgd(ob.param_groups()[no_decay]).weight_decay() == 0);
  torch::optim::SGD oa(ga.groups(), base);
#if GRAFT_OPTIMIZER_MERGES_GROUP_OPTIONS
  // The constructor's merge gives the no-decay groups the default's decay back.
  CHECK(sgd(oa.param_groups()[no_decay]).weight_decay() == base.weight_decay());
  for (std::size_t i = 0; i < oa.param_groups().size(); ++i) oa.param_groups()[i].set_options(ga.groups()[i].options().clone());
#endif
  REQUIRE(ob.param_groups().size() == oa.param_groups().size());
  for (std::size_t i = 0; i < oa.param_groups().size(); ++i) {
    CHECK(sgd(ob.param_groups()[i]).lr() == sgd(oa.param_groups()[i]).lr());
    CHECK(sgd(ob.param_groups()[i]).weight_decay() == sgd(oa.param_groups()[i]).weight_decay());
    CHECK(ob.param_groups()[i].params().size() == oa.param_groups()[i].params().size());
  }
  auto x = torch::randn({2, 3, 32, 32});
  auto y = torch::tensor({0, 3});
  for (int s = 0; s < 2; ++s) {
    oa.zero_grad();
    ob.zero_grad();
    torch::nn::functional::cross_entropy(a->forward(x), y).backward();
    torch::nn::functional::cross_entropy(b->forward(x), y).backward();
    oa.step();
    ob.step();
  }
  auto pa = a->parameters();
  auto pb = b->parameters();
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(torch::equal(pa[i], pb[i]));
}

// timm is the reference for both splits; its resnet18 has torchvision's parameter names.
TEST_CASE("no_decay() and layer_decay() give each parameter timm's lr scale and weight decay", "[optim][param_groups][oracle]") {
  auto out = graft::test::run_python(R"(
import timm
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
m = timm.create_model("resnet18", pretrained=False, num_classes=10)
name = {id(p): n for n, p in m.named_parameters()}
for g in param_groups_weight_decay(m, weight_decay=1e-4):
    for p in g["params"]:
        print("wd", name[id(p)], 1.0, g["weight_decay"])
for g in param_groups_layer_decay(m, weight_decay=0.05, layer_decay=0.75):
    for p in g["params"]:
        print("ld", name[id(p)], repr(g["lr_scale"]), g["weight_decay"])
)");
  struct setting {
    double scale, decay;
  };
  std::map<std::string, std::map<std::string, setting>> timm;  // split -> path -> setting
  for (auto& l : lines(out)) {
    std::istringstream in(l);
    std::string split, path;
    setting s{};
    in >> split >> path >> s.scale >> s.decay;
    timm[split][path] = s;
  }
  auto net = models::resnet(18, 10);
  REQUIRE(timm["wd"].size() == net->parameters().size());
  REQUIRE(timm["ld"].size() == net->parameters().size());
  const double lr = 0.1;

  // Each parameter's group holds its lr and weight decay; compare them parameter by parameter.
  auto compare = [&](const graft::named_param_groups& groups, const std::map<std::string, setting>& expected) {
    std::size_t seen = 0;
    for (auto& p : groups.parameters()) {
      INFO(p.path);
      REQUIRE(p.group.has_value());
      auto& o = sgd(groups.groups()[*p.group]);
      auto& e = expected.at(std::string(p.path));
      CHECK(o.lr() == Approx(lr * e.scale).epsilon(1e-12));
      CHECK(o.weight_decay() == e.decay);
      ++seen;
    }
    CHECK(seen == expected.size());
  };
  compare(graft::param_groups(*net).rest("all").no_decay().build(torch::optim::SGDOptions(lr).weight_decay(1e-4)),
          timm["wd"]);

  // timm's resnet group_matcher: the stem is layer 0, each residual block one layer, the head last.
  auto layer_of = [](std::string_view p) {
    if (p.starts_with("layer")) return 1 + 2 * (p[5] - '1') + (p[7] - '0');
    return p.starts_with("fc.") ? 9 : 0;
  };
  compare(graft::param_groups(*net).rest("all").layer_decay(0.75, 9, layer_of).no_decay()
              .build(torch::optim::SGDOptions(lr).weight_decay(0.05)),
          timm["ld"]);
}

// One source for the options: a group added to the optimizer later (gradual unfreezing)
// starts from the optimizer's defaults, which make_optimizer takes from build(). Given
// different options twice, the later groups would silently lose momentum and weight decay.
TEST_CASE("make_optimizer takes build()'s options, so groups added later keep momentum and weight decay",
          "[optim][param_groups]") {
  torch::manual_seed(0);
  auto net = models::resnet(18, 10);
  graft::freeze(*net, !"fc.**"_glob);
  const auto base = torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-4).nesterov(true);
  auto groups = graft::param_groups(*net).rest("head").build(base);
  REQUIRE(groups.defaults() != nullptr);
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  CHECK(static_cast<const torch::optim::SGDOptions&>(opt.defaults()) == base);

  graft::gradual_unfreezing stages(*net);
  stages.at(1, "layer4", "layer4.**"_glob, 0.1);
  auto done = stages.step(opt, 1);
  REQUIRE(done.size() == 1);
  REQUIRE(opt.param_groups().size() == 2);
  const auto& added = static_cast<const torch::optim::SGDOptions&>(opt.param_groups().back().options());
  CHECK(added.momentum() == 0.9);
  CHECK(added.weight_decay() == 1e-4);
  CHECK(added.nesterov());
  CHECK(added.lr() == Approx(0.01));

  // The same options again are accepted; others are refused before an optimizer exists.
  CHECK(groups.make_optimizer<torch::optim::SGD>(base).param_groups().size() == 1);
  CHECK_THROWS_MATCHES(groups.make_optimizer<torch::optim::SGD>(torch::optim::SGDOptions(0.1)), graft::option_error,
                       Message("[graft.option] make_optimizer: its options differ from those given to build(); the groups "
                               "were made from build()'s, and the optimizer's defaults, from which a group added later "
                               "(gradual unfreezing, add_param_group) starts, would be these: give the options once, to "
                               "build(), and call make_optimizer<Opt>()"));
  CHECK_THROWS_MATCHES(groups.make_optimizer<torch::optim::Adam>(), graft::option_error,
                       Message("[graft.option] make_optimizer: the groups were built with torch::optim::SGDOptions, not "
                               "torch::optim::AdamOptions: build() and the optimizer take the same options type"));
  CHECK_THROWS_AS(graft::named_param_groups().make_optimizer<torch::optim::SGD>(), graft::state_error);
}
