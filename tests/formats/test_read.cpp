#include <catch2/catch.hpp>

#include <fstream>

#include <graft/formats.hpp>
#include <graft/select.hpp>
#include <graft/state_dict.hpp>

#include "oracle.hpp"
#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Contains;

TEST_CASE("a torchvision checkpoint saved by Python loads into the C++ ResNet and computes the same", "[formats][oracle]") {
  graft::test::scratch_dir dir;
  auto path = dir.file("resnet18.pth");
  graft::test::run_python(R"(
import torch, torchvision
torch.manual_seed(0)
m = torchvision.models.resnet18().eval()
for mod in m.modules():
    if isinstance(mod, torch.nn.BatchNorm2d):
        mod.running_mean.uniform_(-0.1, 0.1); mod.running_var.uniform_(0.5, 1.5)
x = torch.randn(2, 3, 64, 64)
with torch.no_grad(): y = m(x)
sd = {'module.' + k: v for k, v in m.state_dict().items()}
torch.save({'model': sd, 'epoch': 3, 'input': x, 'output': y}, ')" + path + R"(')
)");
  CHECK(graft::detect_format(path) == graft::checkpoint_format::torch_save);
  auto ckpt = graft::read(path) | graft::collect();
  CHECK(ckpt.extra("epoch")->as_int() == 3);
  auto net = models::resnet(18);
  auto report = graft::read(path) | graft::at("model") | graft::strip_prefix("module.") | graft::merge(*net);
  CHECK(report.accepted());
  CHECK(report.loaded.size() == 122);
  CHECK(report.renamed_count() == 122);
  net->eval();
  torch::NoGradGuard g;
  auto y = net->forward(ckpt.at("input"));
  CHECK(torch::allclose(y, ckpt.at("output"), 1e-5, 1e-5));
  CHECK((y - ckpt.at("output")).abs().max().item<float>() <= 1e-5f);
}

TEST_CASE("save writes by file name and read detects the format from the bytes", "[formats]") {
  graft::test::scratch_dir dir;
  auto net = models::resnet(18, 10);
  auto st = dir.file("weights.bin");  // the name says nothing: the bytes decide
  graft::from(*net) | graft::filter(!"fc.*"_glob) | graft::save(st, graft::checkpoint_format::safetensors);
  CHECK(graft::detect_format(st) == graft::checkpoint_format::safetensors);
  auto pt = dir.file("weights.pt");
  graft::from(*net) | graft::save(pt);
  CHECK(graft::detect_format(pt) == graft::checkpoint_format::torch_save);
  auto other = models::resnet(18, 10);
  auto r1 = graft::read(st) | graft::merge(*other, {.missing = graft::allow("fc.*"_glob)});
  CHECK(r1.loaded.size() == 120);
  CHECK(torch::equal(other->conv1->weight, net->conv1->weight));
  auto r2 = graft::read(pt) | graft::merge(*other);
  CHECK(r2.loaded.size() == 122);
  CHECK(torch::equal(other->fc->weight, net->fc->weight));
  auto out = graft::test::run_python("import torch\nsd = torch.load('" + pt + "')\nprint(len(sd), list(sd)[0], tuple(sd['fc.weight'].shape))\n");
  CHECK(out == "122 conv1.weight (10, 512)\n");
}

TEST_CASE("a file that is no checkpoint is refused by name", "[formats]") {
  graft::test::scratch_dir dir;
  auto p = dir.file("notes.txt");
  std::ofstream(p) << "hello world";
  CHECK_THROWS_WITH(graft::read(p) | graft::collect(),
                    "[graft.format] '" + p + "' is not a checkpoint graft can read (a torch.save file, safetensors, or a "
                    "libtorch archive); its first bytes are 68 65 6c 6c 6f 20 77 6f (11 bytes in all)");
  CHECK_THROWS_AS(graft::read(dir.file("absent.pt")) | graft::collect(), graft::io_error);
}
