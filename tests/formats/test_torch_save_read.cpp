// Reading files that the installed Python torch writes: every tree must come back equal to what
// torch.load sees, tensors viewing the mapped file and sharing memory where Python shares storage.

#include <chrono>
#include <fstream>

#include <catch2/catch.hpp>

#include <graft/formats/torch_save.hpp>
#include <torch/serialize.h>

#include "oracle.hpp"
#include "test_torch_save_support.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;

namespace {

// Runs `make` (Python that binds `obj`), saves obj to `file` and returns Python's summary of
// what torch.load gives back.
std::string python_save(const std::string& file, const std::string& make) {
  return run_python(graft::test::py_summary + "torch.manual_seed(0)\n" + make + "\ntorch.save(obj, '" + file +
                    "')\nsys.stdout.write(summary(torch.load('" + file + "')))\n");
}

bool inside(const torch::Tensor& t, const graft::mapped_file& f) {
  auto p = static_cast<const std::byte*>(t.data_ptr());
  return p >= f.data() && p < f.data() + f.size();
}

} // namespace

TEST_CASE("torch.save: a torchvision resnet18 state dict reads equal, key by key", "[torch_save]") {
  scratch_dir dir;
  auto file = dir.file("resnet18.pth");
  auto expected = python_save(file, "import torchvision\nobj = torchvision.models.resnet18().state_dict()");
  auto sd = graft::read_torch_save(file);
  REQUIRE(sd.is_dict());
  CHECK(sd.as_dict().size() == 122);
  CHECK(sd.as_dict().begin()->first.as_string() == "conv1.weight");
  CHECK(sd.as_dict().at("fc.weight").as_tensor().sizes() == torch::IntArrayRef{1000, 512});
  CHECK(sd.as_dict().at("bn1.num_batches_tracked").as_tensor().scalar_type() == torch::kLong);
  CHECK(graft::test::summary(sd) == expected);
}

TEST_CASE("torch.save: a training checkpoint with optimizer, scheduler and args nests as Python does", "[torch_save]") {
  scratch_dir dir;
  auto file = dir.file("ckpt.pt");
  auto expected = python_save(file, R"PY(
net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
net(torch.randn(5, 4)).sum().backward()
opt.step(); sched.step()
sd = collections.OrderedDict(('module.' + k, v) for k, v in net.state_dict().items())
obj = {'model': net.state_dict(), 'ddp_model': sd, 'optimizer': opt.state_dict(), 'scheduler': sched.state_dict(),
       'epoch': 3, 'best': 0.875, 'args': {'lr': 0.001, 'name': 'run-1', 'layers': [1, 2, 3],
       'betas': (0.9, 0.999), 'resume': None, 'amp': False, 'big': 2**40, 'neg': -7, 'tags': {3, 1},
       'huge': 12345678901234567}}
)PY");
  auto ckpt = graft::read_torch_save(file);
  CHECK(graft::test::summary(ckpt) == expected);
  auto& d = ckpt.as_dict();
  CHECK(d.at("epoch").as_int() == 3);
  CHECK(d.at("ddp_model").as_dict().begin()->first.as_string() == "module.0.weight");
  // Optimizer state is keyed by parameter index (int keys), as in Python.
  auto& state = d.at("optimizer").as_dict().at("state").as_dict();
  CHECK(state.begin()->first.is_int());
  CHECK(state.at("0").as_dict().at("exp_avg").as_tensor().sizes() == torch::IntArrayRef{3, 4});
}

TEST_CASE("torch.save: every dtype, 0-dim scalars and empty tensors", "[torch_save]") {
  scratch_dir dir;
  auto file = dir.file("dtypes.pt");
  auto expected = python_save(file, R"PY(
obj = collections.OrderedDict()
for dt in [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8, torch.int16, torch.int32,
           torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128]:
    n = str(dt)[6:]
    if dt.is_complex: obj[n] = torch.randn(3, 2, dtype=dt)
    elif dt == torch.bool: obj[n] = torch.rand(3, 2) > 0.5
    elif dt.is_floating_point: obj[n] = (torch.randn(3, 2) * 100).to(dt)
    else: obj[n] = torch.randint(-100 if dt != torch.uint8 else 0, 100, (3, 2)).to(dt)
    obj[n + '_scalar'] = obj[n][0, 0].clone()
    obj[n + '_empty'] = obj[n][:0].clone()
obj['empty_2d'] = torch.zeros(0, 5)
)PY");
  auto v = graft::read_torch_save(file);
  CHECK(graft::test::summary(v) == expected);
  CHECK(v.as_dict().at("float32_scalar").as_tensor().dim() == 0);
  CHECK(v.as_dict().at("empty_2d").as_tensor().sizes() == torch::IntArrayRef{0, 5});
  CHECK(v.as_dict().at("bfloat16").as_tensor().scalar_type() == torch::kBFloat16);
}

TEST_CASE("torch.save: tied weights and views share memory; offsets and strides are Python's", "[torch_save]") {
  scratch_dir dir;
  auto file = dir.file("views.pt");
  auto expected = python_save(file, R"PY(
w = torch.arange(24, dtype=torch.float32).reshape(4, 6)
obj = {'embed': w, 'head': w, 'slice': w[1:, 2:], 't': w.t(), 'row': w[2], 'col': w[:, 3], 'expand': torch.ones(3)[:1].expand(4, 5)}
print("STRIDES", obj['slice'].stride(), obj['slice'].storage_offset(), obj['t'].stride(), obj['col'].storage_offset())
)PY");
  auto mapped = graft::mapped_file::open(file);
  auto v = graft::read_torch_save(mapped);
  auto& d = v.as_dict();
  auto embed = d.at("embed").as_tensor(), head = d.at("head").as_tensor(), slice = d.at("slice").as_tensor();
  auto t = d.at("t").as_tensor(), col = d.at("col").as_tensor();
  CHECK(expected.find("STRIDES (6, 1) 8 (1, 6) 3") != std::string::npos);
  CHECK(slice.strides() == torch::IntArrayRef{6, 1});
  CHECK(slice.storage_offset() == 8);
  CHECK(t.strides() == torch::IntArrayRef{1, 6});
  CHECK(col.storage_offset() == 3);
  CHECK(d.at("expand").as_tensor().strides() == torch::IntArrayRef{0, 0});
  // One storage per key: tied weights are one tensor's memory, views alias it.
  CHECK(embed.data_ptr() == head.data_ptr());
  CHECK(embed.storage().is_alias_of(slice.storage()));
  CHECK(embed.storage().is_alias_of(t.storage()));
  CHECK(inside(embed, *mapped));
  embed[1][3].fill_(-1);
  CHECK(head[1][3].item<float>() == -1);
  CHECK(slice[0][1].item<float>() == -1);
  CHECK(t[3][1].item<float>() == -1);
  CHECK(col[1].item<float>() == -1);
  // The map is private: the file still holds the original value.
  CHECK(graft::read_torch_save(file).as_dict().at("embed").as_tensor()[1][3].item<float>() == 9);
  auto lines = expected.substr(expected.find('\n') + 1);
  CHECK(graft::test::summary(graft::read_torch_save(file)) == lines);
}

TEST_CASE("torch.save: an nn.Parameter saved directly requires grad", "[torch_save]") {
  scratch_dir dir;
  auto file = dir.file("param.pt");
  auto expected = python_save(file, "obj = torch.nn.Parameter(torch.randn(2, 3))");
  auto v = graft::read_torch_save(file);
  REQUIRE(v.is_tensor());
  CHECK(v.as_tensor().requires_grad());
  CHECK(graft::test::summary(v) == expected);
  auto list = dir.file("params.pt");
  auto expected_list = python_save(list, "obj = [torch.nn.Parameter(torch.randn(2)), torch.nn.Parameter(torch.ones(1), requires_grad=False), torch.device('cpu'), torch.Size([2, 3]), torch.float16]");
  auto l = graft::read_torch_save(list);
  CHECK(l.as_sequence().items[0].as_tensor().requires_grad());
  CHECK_FALSE(l.as_sequence().items[1].as_tensor().requires_grad());
  CHECK(l.as_sequence().items[2].as_string() == "cpu");
  CHECK(l.as_sequence().items[3].as_sequence().items[1].as_int() == 3);
  CHECK(l.as_sequence().items[4].as_string() == "torch.float16");
}

TEST_CASE("torch.save: mmap views the file, mmap = false copies", "[torch_save]") {
  scratch_dir dir;
  auto file = dir.file("sd.pt");
  auto expected = python_save(file, "obj = {'a': torch.randn(100, 10), 'b': torch.arange(7).to(torch.int16), 'c': torch.randn(3).double()}");
  auto mapped = graft::mapped_file::open(file);
  CHECK(graft::is_torch_save_file(*mapped));
  auto viewed = graft::read_torch_save(mapped);
  auto copied = graft::read_torch_save(mapped, {.mmap = false});
  for (auto key : {"a", "b", "c"}) {
    INFO(key);
    CHECK(inside(viewed.as_dict().at(key).as_tensor(), *mapped));
    CHECK_FALSE(inside(copied.as_dict().at(key).as_tensor(), *mapped));
    CHECK(reinterpret_cast<std::uintptr_t>(viewed.as_dict().at(key).as_tensor().data_ptr()) % 64 == 0);
  }
  CHECK(graft::test::summary(viewed) == expected);
  CHECK(graft::test::summary(copied) == expected);
  // Tensors keep the mapping alive after every other owner is gone.
  auto a = viewed.as_dict().at("a").as_tensor();
  viewed = {};
  mapped.reset();
  CHECK(graft::test::summary(graft::value(a)).find("T  float32 [100, 10]") == 0);
}

TEST_CASE("torch.save: a ResNet-152 state dict reads in a fraction of a second", "[torch_save][perf]") {
  scratch_dir dir;
  auto file = dir.file("resnet152.pth");
  auto expected = python_save(file, "import torchvision\nobj = torchvision.models.resnet152().state_dict()");
  auto t0 = std::chrono::steady_clock::now();
  auto sd = graft::read_torch_save(file);
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WARN(fmt::format("read {} tensors of a {:.0f} MB ResNet-152 state dict in {:.1f} ms", sd.as_dict().size(),
                   std::filesystem::file_size(file) / 1e6, seconds * 1e3));
  CHECK(seconds < 0.5);
  CHECK(graft::test::summary(sd) == expected);
}

TEST_CASE("torch.save: what libtorch's torch::pickle_save writes reads as Python's torch.load reads it", "[torch_save]") {
  // pickle_save tags typed containers with torch.jit._pickle.restore_type_tag and
  // build_intlist; Python's torch.load accepts both, and so does graft.
  scratch_dir dir;
  auto path = dir.file("pickle_save.pt");
  c10::Dict<std::string, at::Tensor> tensors;
  tensors.insert("w", torch::arange(6, torch::kFloat).reshape({2, 3}));
  tensors.insert("b", torch::tensor({-1.5, 2.5}, torch::kDouble));
  c10::impl::GenericDict root(c10::StringType::get(), c10::AnyType::get());
  root.insert("model", tensors);
  root.insert("steps", c10::List<int64_t>({3, 1, 4}));
  root.insert("epoch", 7);
  auto bytes = torch::pickle_save(root);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));

  auto v = graft::read_torch_save(path);
  const auto& model = v.as_dict().at("model").as_dict();
  CHECK(torch::equal(model.at("w").as_tensor(), tensors.at("w")));
  CHECK(torch::equal(model.at("b").as_tensor(), tensors.at("b")));
  CHECK(v.as_dict().at("epoch").as_int() == 7);
  const auto& steps = v.as_dict().at("steps").as_sequence();
  REQUIRE(steps.items.size() == 3);
  CHECK(steps.items[2].as_int() == 4);

  // The oracle reads the same file to the same numbers (its TorchScript tags are not among
  // the globals PyTorch 2.x's default weights_only=True load allows).
  auto out = run_python(fmt::format(R"(
import torch
d = torch.load("{}", weights_only=False)
print(d["model"]["w"].sum().item(), d["model"]["b"].tolist(), d["steps"], d["epoch"])
)", path));
  CHECK(out == "15.0 [-1.5, 2.5] [3, 1, 4] 7\n");
}

// collections.Counter is on PyTorch's weights_only allow-list (a tokenizer's or a sampler's
// counts in a training checkpoint): read as the dict of its counts, equal to torch.load's view.
TEST_CASE("torch.save: a collections.Counter reads as the dict of its counts", "[torch_save]") {
  scratch_dir dir;
  auto file = dir.file("counter.pt");
  auto expected = python_save(file, "obj = {'counts': collections.Counter({'cat': 3, 'dog': 7, 5: 1}), "
                                    "'empty': collections.Counter(), 'w': torch.arange(4.0)}");
  auto v = graft::read_torch_save(file);
  CHECK(graft::test::summary(v) == expected);
  auto& counts = v.as_dict().at("counts").as_dict();
  CHECK(counts.size() == 3);
  CHECK(counts.at("dog").as_int() == 7);
}
