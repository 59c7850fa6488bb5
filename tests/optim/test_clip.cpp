// graft::clip_grad_norm / clip_grad_value, per named param group and over a whole module,
// against torch.nn.utils.clip_grad_norm_ / clip_grad_value_ on the same parameter sets; the
// refusals (nothing clipped), and clipping after a grad_scaler's unscale_.

#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <graft/amp.hpp>
#include <graft/graft.hpp>
#include <graft/train.hpp>

#include "oracle.hpp"

namespace clip_test {

using namespace graft::literals;

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(3, 4));
    bn = register_module("bn", torch::nn::BatchNorm1d(4));
    fc2 = register_module("fc2", torch::nn::Linear(4, 2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(bn(fc1(x))); }
  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Net);

// Gradients from one formula on both sides: multiples of 1/4, exact in float32.
void set_grads(torch::nn::Module& net) {
  std::int64_t j = 0;
  for (auto& p : net.parameters()) {
    p.mutable_grad() = (torch::arange(p.numel(), torch::kInt64) * 3 + j * 5).remainder(13).sub(6).to(torch::kFloat32)
                           .mul(0.25).reshape(p.sizes());
    ++j;
  }
}

// graft's groups below: head = fc2.*, no_decay = the other biases and the norm layer, backbone =
// the rest; each in named_parameters() order, as the Python lists are.
const char* const oracle_script = R"(
import math, torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_
class Net(torch.nn.Module):
    def __init__(s):
        super().__init__(); s.fc1 = torch.nn.Linear(3, 4); s.bn = torch.nn.BatchNorm1d(4); s.fc2 = torch.nn.Linear(4, 2)
net = Net()
params = dict(net.named_parameters())
groups = {"head": ["fc2.weight", "fc2.bias"], "no_decay": ["fc1.bias", "bn.weight", "bn.bias"], "backbone": ["fc1.weight"]}
def set_grads():
    for j, p in enumerate(net.parameters()):
        p.grad = ((torch.arange(p.numel()) * 3 + j * 5) % 13 - 6).to(torch.float32).mul(0.25).reshape(p.shape)
def show(case, norms):
    for g, n in norms: print(case, "norm", g, repr(float(n)))
    for k, p in net.named_parameters(): print(case, "grad", k, *[repr(v) for v in p.grad.flatten().tolist()])
cases = {
    "two": ({"head": 0.5, "backbone": 2.0}, 2.0),
    "inf": ({"head": 1.0, "no_decay": 0.6, "backbone": 0.9}, math.inf),
    "one": ({"no_decay": 0.75}, 1.0),
    "p3": ({"backbone": 1.5, "head": 100.0}, 3.5),
}
for case, (limits, p) in cases.items():
    set_grads()
    norms = [(g, clip_grad_norm_([params[k] for k in groups[g]], limits[g], norm_type=p)) for g in groups if g in limits]
    show(case, norms)
set_grads()
show("module", [("all", clip_grad_norm_(net.parameters(), 1.25))])
set_grads()
for g, v in {"head": 0.3, "backbone": 0.6}.items(): clip_grad_value_([params[k] for k in groups[g]], v)
show("value", [])
)";

using rows = std::map<std::string, std::vector<double>>;  // "case kind name" -> values
rows parse(const std::string& out) {
  rows r;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string c, kind, name;
    if (!(words >> c >> kind >> name)) continue;
    auto& row = r[c + " " + kind + " " + name];
    for (std::string w; words >> w;) row.push_back(std::stod(w));
  }
  return r;
}

graft::named_param_groups groups_of(Net& net) {
  return graft::param_groups(*net)
      .group("head", "fc2.**"_glob)
      .group("no_decay", graft::bias | graft::norm_layers, {.weight_decay = 0})
      .rest("backbone")
      .build(torch::optim::SGDOptions(0.1).weight_decay(1e-4));
}

void check_grads(Net& net, const rows& expected, const std::string& c) {
  for (const auto& item : net->named_parameters()) {
    INFO(c << ": " << item.key());
    const auto& want = expected.at(c + " grad " + item.key());
    const auto got = item.value().grad().to(torch::kFloat64).flatten();
    REQUIRE(got.numel() == static_cast<std::int64_t>(want.size()));
    for (std::size_t i = 0; i < want.size(); ++i)
      CHECK(got[static_cast<std::int64_t>(i)].item<double>() == Approx(want[i]).epsilon(1e-6).margin(1e-7));
  }
}

std::vector<torch::Tensor> grads_now(Net& net) {
  std::vector<torch::Tensor> g;
  for (auto& p : net->parameters()) g.push_back(p.grad().clone());
  return g;
}
bool grads_equal(Net& net, const std::vector<torch::Tensor>& g) {
  std::size_t i = 0;
  for (auto& p : net->parameters())
    if (!torch::equal(p.grad(), g[i++])) return false;
  return true;
}

} // namespace clip_test

TEST_CASE("clip_grad_norm per named group and over a module, clip_grad_value per group, equal PyTorch's") {
  using namespace clip_test;
  const std::string peft = GRAFT_PYTHON_PEFT;
  const auto expected = parse(graft::test::run_python_with(peft.empty() ? std::string(GRAFT_PYTHON) : peft, oracle_script));
  Net net;
  const auto groups = groups_of(net);
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<std::pair<std::string, std::pair<std::map<std::string, double>, double>>> cases = {
      {"two", {{{"head", 0.5}, {"backbone", 2.0}}, 2.0}},
      {"inf", {{{"head", 1.0}, {"no_decay", 0.6}, {"backbone", 0.9}}, inf}},
      {"one", {{{"no_decay", 0.75}}, 1.0}},
      {"p3", {{{"backbone", 1.5}, {"head", 100.0}}, 3.5}},
  };
  for (const auto& [c, setting] : cases) {
    set_grads(*net);
    const auto norms = graft::clip_grad_norm(groups, setting.first, {.norm_type = setting.second});
    REQUIRE(norms.size() == setting.first.size());
    for (std::size_t i = 0; i < norms.size(); ++i) {
      INFO(c << ": group " << norms[i].group);
      if (i > 0) CHECK(groups.index_of(norms[i - 1].group) < groups.index_of(norms[i].group));  // the groups' order
      CHECK(norms[i].total_norm.item<double>() == Approx(expected.at(c + " norm " + norms[i].group)[0]).epsilon(1e-6));
    }
    check_grads(net, expected, c);
  }
  set_grads(*net);
  const auto total = graft::clip_grad_norm(*net, 1.25);
  CHECK(total.item<double>() == Approx(expected.at("module norm all")[0]).epsilon(1e-6));
  check_grads(net, expected, "module");
  set_grads(*net);
  graft::clip_grad_value(groups, {{"head", 0.3}, {"backbone", 0.6}});
  check_grads(net, expected, "value");
}

TEST_CASE("clip_grad_norm refuses unknown groups, bad limits and non-finite norms with error_if_nonfinite, clipping nothing") {
  using namespace clip_test;
  Net net;
  const auto groups = groups_of(net);
  set_grads(*net);
  const auto before = grads_now(net);
  CHECK_THROWS_MATCHES(graft::clip_grad_norm(groups, {{"head", 0.1}, {"heads", 1.0}}), graft::key_error,
                       Catch::Matchers::Predicate<graft::key_error>(
                           [](const graft::key_error& e) { return std::string(e.what()).find("heads") != std::string::npos; }));
  CHECK_THROWS_WITH(graft::clip_grad_norm(groups, {{"head", 0.1}, {"backbone", -1.0}}),
                    Catch::Contains("max_norm -1") && Catch::Contains("'backbone'"));
  CHECK_THROWS_AS(graft::clip_grad_norm(*net, 1.0, {.norm_type = std::nan("")}), graft::option_error);
  CHECK_THROWS_AS(graft::clip_grad_value(groups, {{"head", -0.5}}), graft::option_error);
  // An inf in the backbone: with error_if_nonfinite, neither the head nor the backbone is clipped.
  net->fc1->weight.mutable_grad()[0][0].fill_(std::numeric_limits<float>::infinity());
  auto with_inf = grads_now(net);
  CHECK_THROWS_MATCHES(graft::clip_grad_norm(groups, {{"head", 0.1}, {"backbone", 0.1}}, {.error_if_nonfinite = true}),
                       graft::state_error, Catch::Matchers::Predicate<graft::state_error>([](const graft::state_error& e) {
                         return e.context().key == "backbone";
                       }));
  CHECK(grads_equal(net, with_inf));
  // Without it, PyTorch's behaviour: the head is clipped, the backbone scaled by 1 / inf.
  graft::clip_grad_norm(groups, {{"head", 0.1}, {"backbone", 0.1}});
  CHECK_FALSE(torch::equal(net->fc2->weight.grad(), with_inf[4]));
  CHECK(net->fc1->weight.grad()[0][1].item<float>() == 0.0f);
  (void)before;
}

TEST_CASE("clip_grad_norm after grad_scaler::unscale_ clips the true gradients; parameters without gradients are skipped") {
  using namespace clip_test;
  Net a, b;
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < a->parameters().size(); ++i) b->parameters()[i].copy_(a->parameters()[i]);
  }
  const auto x = torch::tensor({{1.0, 2.0, 0.0}, {3.0, -1.0, 2.0}, {0.5, 0.5, -1.0}}, torch::kFloat32);
  torch::optim::SGD opt(a->parameters(), torch::optim::SGDOptions(0.1));
  graft::amp::grad_scaler scaler({.init_scale = 1024.0});
  scaler.scale(a->forward(x).pow(2).sum()).backward();
  scaler.unscale_(opt);
  const auto ta = graft::clip_grad_norm(*a, 0.5);
  b->forward(x).pow(2).sum().backward();
  const auto tb = graft::clip_grad_norm(*b, 0.5);
  CHECK(ta.item<double>() == Approx(tb.item<double>()).epsilon(1e-6));
  for (std::size_t i = 0; i < a->parameters().size(); ++i)
    CHECK(torch::allclose(a->parameters()[i].grad(), b->parameters()[i].grad(), 1e-6, 1e-7));
  // No gradients at all: a total norm of 0, nothing to clip.
  Net fresh;
  CHECK(graft::clip_grad_norm(*fresh, 1.0).item<double>() == 0.0);
  // Frozen parameters are not counted.
  set_grads(*fresh);
  fresh->fc1->weight.set_requires_grad(false);
  const auto with_frozen = graft::clip_grad_norm(*fresh, 1e9);
  std::vector<torch::Tensor> trainable;
  for (auto& p : fresh->parameters())
    if (p.requires_grad()) trainable.push_back(p);
  CHECK(with_frozen.item<double>() == Approx(graft::clip_grad_norm(trainable, 1e9).item<double>()));
}
