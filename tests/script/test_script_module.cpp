// TorchScript modules as graft trees: torchvision models scripted and traced by Python at test
// time, and a small model scripted by the torch the build uses; names, selections, freezing,
// frozen statistics, param groups, partial loads, head resizing and saving, against Python.
#include <catch2/catch.hpp>

#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <torch/version.h>

#include <graft/graft.hpp>
#include <graft/script.hpp>

#include "oracle.hpp"

using namespace graft::literals;

namespace {

double script_max_diff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

std::vector<std::string> keys_of(const nlohmann::json& j) { return j.get<std::vector<std::string>>(); }

// The flags of every jit submodule: path -> training.
std::map<std::string, bool> jit_modes(const torch::jit::Module& m) {
  std::map<std::string, bool> out;
  for (const auto& c : m.named_modules()) out[c.name] = c.value.is_training();
  return out;
}

// A model written with the torch the build uses: conv-BN-ReLU, a second block, a head.
const char* small_model_python = R"(
import json, sys, torch, torch.nn as nn
from safetensors.torch import save_file
class Block(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.conv = nn.Conv2d(i, o, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(o)
    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))
class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(Block(3, 8), Block(8, 16))
        self.fc = nn.Linear(16, 5)
    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))
)";

} // namespace

TEST_CASE("script: a model scripted by the build's torch keeps Python's names, trains with frozen statistics, saves for Python", "[script]") {
  graft::test::scratch_dir dir;
  auto d = dir.path().string();
  graft::test::run_python(std::string(small_model_python) + R"(
d = ')" + d + R"('
torch.manual_seed(0)
a = Small().eval()
with torch.no_grad():
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5); m.running_var.uniform_(0.5, 2)
torch.manual_seed(1)
b = Small().eval()
torch.jit.script(b).save(d + '/small.pt')
torch.save(a.state_dict(), d + '/a.pth')
x = torch.randn(2, 3, 8, 8)
save_file({'x': x, 'y': a(x)}, d + '/io.safetensors')
json.dump({'state': list(a.state_dict()), 'params': [n for n, _ in a.named_parameters()]}, open(d + '/names.json', 'w'))
torch.jit.freeze(torch.jit.script(b)).save(d + '/frozen.pt')
)");
  auto names = nlohmann::json::parse(std::ifstream(d + "/names.json"));
  auto io = graft::read(d + "/io.safetensors").load();
  auto net = graft::script_module::load(d + "/small.pt");

  CHECK(graft::state_dict(*net).keys() == keys_of(names["state"]));
  std::vector<std::string> params;
  for (auto t : graft::walk(*net)) params.emplace_back(t.path());
  CHECK(params == keys_of(names["params"]));
  CHECK(graft::select(*net, graft::norm_layers).size() == 4);
  CHECK(graft::select(*net, graft::module_type("Conv2d")).paths() == std::vector<std::string>{"features.0.conv.weight", "features.1.conv.weight"});
  CHECK(dynamic_cast<graft::detail::script_node_base&>(*net->named_modules()["features.0"]).python_class() == "Block");
  CHECK(graft::select(*net, graft::module_type("torch.nn.modules.batchnorm.BatchNorm2d")).size() == 4);

  // A partial (here: complete) load of the eager checkpoint into the scripted model.
  auto report = graft::read(d + "/a.pth") | graft::merge(*net);
  CHECK(report.loaded.size() == names["state"].size());
  CHECK(script_max_diff(net->forward(io.at("x")), io.at("y")) <= 1e-5);

  // Freeze the backbone and its statistics; graft::train sets the jit module's modes.
  graft::freeze(*net, !"fc.**"_glob);
  graft::freeze_norm_stats(*net, graft::norm_layers);
  graft::train(*net);
  auto modes = jit_modes(net->jit());
  CHECK(modes[""]);
  CHECK(modes["features.0"]);
  CHECK(!modes["features.0.bn"]);
  CHECK(!modes["features.1.bn"]);
  for (const auto& p : net->jit().named_parameters()) CHECK(p.value.requires_grad() == p.name.starts_with("fc."));

  auto before = graft::state_dict(*net);
  std::vector<torch::Tensor> snapshot;
  for (auto& e : before) snapshot.push_back(e.tensor.clone());
  auto opt = graft::param_groups(*net).group("head", "fc.**"_glob).build(torch::optim::SGDOptions(0.1)).make_optimizer<torch::optim::SGD>();
  auto loss = net->forward(io.at("x")).pow(2).mean();
  loss.backward();
  opt.step();
  std::size_t i = 0;
  for (auto& e : graft::state_dict(*net)) {
    INFO(e.key);
    CHECK(torch::equal(e.tensor, snapshot[i++]) == !e.key.starts_with("fc."));  // statistics too stay
  }

  // Resize the head, save, and let Python run the saved module.
  net->eval();
  auto y_before = net->forward(io.at("x")).detach();
  net->resize_linear("fc", 7);
  auto y = net->forward(io.at("x")).detach();
  REQUIRE(y.sizes() == torch::IntArrayRef({2, 7}));
  CHECK(script_max_diff(y.slice(1, 0, 5), y_before) <= 1e-6);
  CHECK(net->jit().attr("fc").toModule().attr("weight").toTensor().size(0) == 7);
  CHECK(graft::select(*net, "fc.weight"_glob)[0].tensor.requires_grad());

  // Loads into the resized module: strict fails and changes nothing; adapt copies the overlap.
  {
    auto fc_before = net->jit().attr("fc").toModule().attr("weight").toTensor().clone();
    CHECK_THROWS_AS(graft::read(d + "/a.pth") | graft::merge(*net), graft::shape_error);
    CHECK(torch::equal(net->jit().attr("fc").toModule().attr("weight").toTensor(), fc_before));
    auto adapted = graft::read(d + "/a.pth") | graft::merge(*net, {.adapt = graft::allow("fc.*"_glob)});
    CHECK(adapted.mismatched.size() == 2);
    auto eager = graft::read(d + "/a.pth").load();
    CHECK(torch::equal(net->jit().attr("fc").toModule().attr("weight").toTensor().slice(0, 0, 5), eager.at("fc.weight")));
    CHECK(torch::equal(net->jit().attr("fc").toModule().attr("weight").toTensor().slice(0, 5, 7), fc_before.slice(0, 5, 7)));
    y = net->forward(io.at("x")).detach();
    CHECK(script_max_diff(y.slice(1, 0, 5), io.at("y")) <= 1e-5);
  }
  net->save(d + "/tuned.pt");
  graft::write_safetensors(d + "/cpp.safetensors", {{"y", y}});
  auto out = graft::test::run_python(R"(
import torch
from safetensors.torch import load_file
d = ')" + d + R"('
m = torch.jit.load(d + '/tuned.pt').eval()
print((m(load_file(d + '/io.safetensors')['x']) - load_file(d + '/cpp.safetensors')['y']).abs().max().item())
)");
  INFO(out);
  CHECK(std::stod(out) <= 1e-5);
  auto again = graft::script_module::load(d + "/tuned.pt");
  again->eval();
  CHECK(script_max_diff(again->forward(io.at("x")), y) <= 1e-6);

  // A frozen module has nothing left to train.
  CHECK_THROWS_WITH(graft::script_module::load(d + "/frozen.pt"), Catch::Contains("has no parameters: torch.jit.freeze"));
  CHECK_THROWS_AS(graft::script_module::load(d + "/missing.pt"), graft::format_error);
  CHECK_THROWS_WITH(net->resize_linear("features.0", 3), Catch::Contains("is a Block, not a Linear layer"));
  CHECK_THROWS_WITH(net->resize_linear("fc.", 3), Catch::Contains("is not a submodule path"));
  CHECK_THROWS_WITH(net->resize_linear("head", 3), Catch::Contains("has no submodule 'head'"));
}

#if TORCH_VERSION_MAJOR < 2
// torchvision is Debian's, beside torch 1.13: its TorchScript files are for this build.
TEST_CASE("script: torchvision's resnet18 and mobilenet_v3_small, scripted and traced, as graft trees", "[script]") {
  graft::test::scratch_dir dir;
  auto d = dir.path().string();
  graft::test::run_python(R"(
import json, torch, torchvision
from safetensors.torch import save_file
d = ')" + d + R"('
x = torch.randn(2, 3, 64, 64)
info = {}
for name, head in [('resnet18', 'fc'), ('mobilenet_v3_small', 'classifier.3')]:
    torch.manual_seed(0)
    a = getattr(torchvision.models, name)().eval()
    with torch.no_grad():
        for m in a.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2); m.running_var.uniform_(0.5, 2)
    torch.manual_seed(1)
    b = getattr(torchvision.models, name)().eval()
    torch.jit.script(b).save(d + '/' + name + '_script.pt')
    torch.jit.trace(b, x).save(d + '/' + name + '_trace.pt')
    torch.save(a.state_dict(), d + '/' + name + '.pth')
    save_file({'y': a(x)}, d + '/' + name + '_out.safetensors')
    bn = [n + '.' + p for n, m in a.named_modules() if isinstance(m, torch.nn.BatchNorm2d) for p, _ in m.named_parameters(recurse=False)]
    convs = [n + '.' + p for n, m in a.named_modules() if isinstance(m, torch.nn.Conv2d) for p, _ in m.named_parameters(recurse=False)]
    info[name] = {'state': list(a.state_dict()), 'params': [n for n, _ in a.named_parameters()], 'bn': bn, 'convs': convs, 'head': head}
save_file({'x': x}, d + '/x.safetensors')
json.dump(info, open(d + '/info.json', 'w'))
)");
  auto info = nlohmann::json::parse(std::ifstream(d + "/info.json"));
  auto x = graft::read(d + "/x.safetensors").load().at("x");
  for (auto* name : {"resnet18", "mobilenet_v3_small"})
    for (auto* kind : {"script", "trace"}) {
      INFO(name << " " << kind);
      auto& i = info[name];
      auto net = graft::script_module::load(fmt::format("{}/{}_{}.pt", d, name, kind));
      CHECK(graft::state_dict(*net).keys() == keys_of(i["state"]));
      std::vector<std::string> params;
      for (auto t : graft::walk(*net)) params.emplace_back(t.path());
      CHECK(params == keys_of(i["params"]));
      CHECK(graft::select(*net, graft::norm_layers).paths() == keys_of(i["bn"]));
      CHECK(graft::select(*net, graft::module_type("Conv2d")).paths() == keys_of(i["convs"]));
      CHECK(graft::select(*net, graft::module_type("torch.nn.modules.conv.Conv2d")).size() == i["convs"].size());

      auto report = graft::read(fmt::format("{}/{}.pth", d, name)) | graft::merge(*net);
      CHECK(report.loaded.size() == i["state"].size());
      net->eval();
      auto want = graft::read(fmt::format("{}/{}_out.safetensors", d, name)).load().at("y");
      CHECK(script_max_diff(net->forward(x), want) <= 1e-4);

      auto head = i["head"].get<std::string>();
      net->resize_linear(head, 10);
      auto y = net->forward(x);
      REQUIRE(y.sizes() == torch::IntArrayRef({2, 10}));
      CHECK(script_max_diff(y, want.slice(1, 0, 10)) <= 1e-4);

      if (std::string(kind) == "trace") {
        CHECK_THROWS_WITH(graft::freeze_norm_stats(*net, graft::norm_layers), Catch::Contains("it was traced (torch.jit.trace)"));
        for (auto& m : net->modules()) CHECK(!graft::norm_stats_frozen(*m));  // nothing half-changed
      } else {
        auto r = graft::freeze_norm_stats(*net, graft::norm_layers);
        CHECK(r.layers.size() * 2 == i["bn"].size());
        graft::train(*net);
        CHECK(jit_modes(net->jit())[head] == true);
      }
    }
}
#endif
