#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <vector>

#include <range/v3/view/filter.hpp>
#include <range/v3/view/transform.hpp>
#include <range/v3/range/conversion.hpp>

#include <graft/walk.hpp>

#include "oracle.hpp"
#include "resnet.hpp"

namespace {

std::vector<std::string> walked(const torch::nn::Module& m, graft::walk_options o = {}) {
  std::vector<std::string> out;
  for (auto t : graft::walk(m, o)) out.emplace_back(t.path());
  return out;
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(l);
  return out;
}

// Registers the tensors it is given, as a module that shares a weight with another does.
struct holder_impl : torch::nn::Module {
  holder_impl(std::vector<std::pair<std::string, torch::Tensor>> ts) {
    for (auto& [n, t] : ts) register_parameter(n, t);
  }
};

// One weight registered twice, as language models tie the embedding and the output layer.
struct tied_impl : torch::nn::Module {
  tied_impl() {
    auto w = torch::randn({10, 4});
    register_module("emb", std::make_shared<holder_impl>(std::vector<std::pair<std::string, torch::Tensor>>{{"weight", w}}));
    register_module("head", std::make_shared<holder_impl>(
                                std::vector<std::pair<std::string, torch::Tensor>>{{"weight", w}, {"bias", torch::zeros({10})}}));
  }
};

} // namespace

TEST_CASE("walk lists parameters in named_parameters() order", "[walk]") {
  auto net = models::resnet(18);
  std::vector<std::string> expected;
  for (auto& p : net->named_parameters()) expected.push_back(p.key());
  CHECK(walked(*net) == expected);
  CHECK(expected.size() == 62);

  std::vector<std::string> buffers;
  for (auto& b : net->named_buffers()) buffers.push_back(b.key());
  CHECK(walked(*net, {.parameters = false, .buffers = true}) == buffers);
}

TEST_CASE("walk in state mode lists Python's state_dict() keys in order", "[walk][oracle]") {
  auto python = lines(graft::test::run_python(R"(
import torchvision
for k in torchvision.models.resnet18().state_dict().keys(): print(k)
)"));
  auto net = models::resnet(18);
  CHECK(walked(*net, graft::walk_options::state()) == python);
  CHECK(python.size() == 122);  // 62 parameters, 60 buffers (running mean/var, num_batches_tracked)
}

TEST_CASE("walk views carry path, local name, owner and kind", "[walk]") {
  auto net = models::resnet(18);
  bool seen = false;
  for (auto t : graft::walk(*net, graft::walk_options::state())) {
    if (t.path() != "layer4.1.bn2.running_var") continue;
    seen = true;
    CHECK(t.name() == "running_var");
    CHECK(t.module_path() == "layer4.1.bn2");
    CHECK(t.is_buffer());
    CHECK(dynamic_cast<torch::nn::BatchNorm2dImpl*>(&t.owner()) != nullptr);
    CHECK(t.tensor().is_same(net->layers[3]->ptr(1)->as<models::BasicBlock>()->bn2->running_var));
  }
  CHECK(seen);
  auto w = graft::walk(*net);  // views point into the walk: keep it alive while using them
  auto first = *w.begin();
  CHECK(first.path() == "conv1.weight");
  CHECK(first.module_path() == "conv1");
}

TEST_CASE("tied tensors are visited once by default, under every name on request", "[walk]") {
  tied_impl m;
  CHECK(walked(m) == std::vector<std::string>{"emb.weight", "head.bias"});
  CHECK(walked(m, {.every_name = true}) == std::vector<std::string>{"emb.weight", "head.weight", "head.bias"});
}

TEST_CASE("walk handles Sequential, ModuleList, ModuleDict and numeric names", "[walk]") {
  using namespace torch::nn;
  struct net_impl : Module {
    Sequential seq{Linear(2, 3), ReLU(), Linear(3, 4)};
    ModuleList list{Linear(4, 4), BatchNorm1d(4)};
    ModuleDict dict{torch::OrderedDict<std::string, std::shared_ptr<Module>>{
        {"b", Linear(4, 1).ptr()}, {"a", Linear(1, 1).ptr()}}};
    Linear nobias{LinearOptions(1, 1).bias(false)};
    net_impl() {
      register_module("seq", seq);
      register_module("list", list);
      register_module("dict", dict);
      register_module("nobias", nobias);
    }
  } net;
  std::vector<std::string> expected;
  for (auto& p : net.named_parameters()) expected.push_back(p.key());
  CHECK(walked(net) == expected);
  CHECK(walked(net) == std::vector<std::string>{"seq.0.weight", "seq.0.bias", "seq.2.weight", "seq.2.bias",
                                                "list.0.weight", "list.0.bias", "list.1.weight", "list.1.bias",
                                                "dict.b.weight", "dict.b.bias", "dict.a.weight", "dict.a.bias",
                                                "nobias.weight"});
}

TEST_CASE("walk composes with range-v3 and std::ranges and prunes subtrees", "[walk]") {
  auto net = models::resnet(18);
  auto w = graft::walk(*net);
  auto fc = w | ranges::views::filter([](const graft::tensor_view& t) { return t.path().starts_with("fc."); }) |
            ranges::views::transform([](const graft::tensor_view& t) { return std::string(t.path()); }) |
            ranges::to<std::vector>();
  CHECK(fc == std::vector<std::string>{"fc.weight", "fc.bias"});
  static_assert(std::ranges::input_range<graft::basic_walk<>>);
  static_assert(std::ranges::view<graft::basic_walk<>>);
  static_assert(ranges::enable_view<graft::basic_walk<>>);  // a view to range-v3 as well

  std::vector<std::string> asked;
  auto pruned = graft::walk(*net, {}, [&](std::string_view prefix) {
    asked.emplace_back(prefix);
    return prefix.starts_with("layer4.") || std::string_view("layer4.").starts_with(prefix);
  });
  std::vector<std::string> got;
  for (auto t : pruned) got.emplace_back(t.path());
  REQUIRE(!got.empty());
  CHECK(got.front() == "layer4.0.conv1.weight");
  CHECK(got.size() == 15);
  for (auto& g : got) CHECK(g.starts_with("layer4."));
  // Pruned subtrees are never entered: nothing below layer3 was asked about.
  CHECK(std::none_of(asked.begin(), asked.end(), [](auto& a) { return a.starts_with("layer3.0"); }));
}
