// Checkpoints as users have them: Hugging Face sharded torch.save (.bin) and model folders,
// BatchNorm dicts without num_batches_tracked, TorchScript bookkeeping attributes, truncated
// safetensors; and the stem/head stages, checked against timm's own adapt_input_conv.

#include <fstream>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/formats.hpp>
#include <graft/select.hpp>
#include <graft/state_dict.hpp>

#include "oracle.hpp"

using graft::test::run_python;
using graft::test::scratch_dir;
using namespace graft::literals;

namespace compat_test {

// Python's torch.save of a small model's state dict in two HF-style shards; `legacy_second`
// writes the second shard in the legacy format. Returns the folder.
void write_bin_shards(const scratch_dir& dir, bool legacy_second = false) {
  run_python(fmt::format(R"PY(
import torch, json
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
sd = m.state_dict()
keys = list(sd)
shards = {{'pytorch_model-00001-of-00002.bin': keys[:2], 'pytorch_model-00002-of-00002.bin': keys[2:]}}
for i, (name, ks) in enumerate(shards.items()):
    torch.save({{k: sd[k] for k in ks}}, '{0}/' + name, _use_new_zipfile_serialization=not ({1} and i == 1))
index = {{'metadata': {{'total_size': sum(t.numel() * 4 for t in sd.values())}},
         'weight_map': {{k: n for n, ks in shards.items() for k in ks}}}}
json.dump(index, open('{0}/pytorch_model.bin.index.json', 'w'))
torch.save(sd, '{0}/whole.pt')
)PY",
                         dir.path().string(), legacy_second ? "True" : "False"));
}

struct Net : torch::nn::Module {
  Net() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)));
    bn = register_module("bn", torch::nn::BatchNorm2d(4));
    fc = register_module("fc", torch::nn::Linear(4, 2));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
};

// Python's module of the same layout, for writing its state dict.
const std::string py_net = R"PY(
import torch, collections
torch.manual_seed(0)
m = torch.nn.Module()
m.conv = torch.nn.Conv2d(3, 4, 3); m.bn = torch.nn.BatchNorm2d(4); m.fc = torch.nn.Linear(4, 2)
m.bn.running_mean.uniform_(); m.bn.num_batches_tracked.fill_(7)
sd = m.state_dict()
)PY";

} // namespace compat_test

TEST_CASE("Hugging Face sharded torch.save: the index, a model folder, legacy shards", "[formats][shards]") {
  for (bool legacy : {false, true}) {
    INFO("second shard legacy: " << legacy);
    scratch_dir dir;
    compat_test::write_bin_shards(dir, legacy);
    auto index = dir.file("pytorch_model.bin.index.json");
    CHECK(graft::detect_format(index) == graft::checkpoint_format::torch_save_index);
    CHECK(graft::detect_format(dir.path().string()) == graft::checkpoint_format::torch_save_index);
    auto whole = graft::read(dir.file("whole.pt")) | graft::collect();
    for (const auto& src : {index, dir.path().string()}) {
      auto sd = graft::read(src) | graft::collect();
      REQUIRE(sd.keys() == whole.keys());
      for (auto& e : whole) CHECK(torch::equal(sd.at(e.key), e.tensor));
    }
  }
}

TEST_CASE("Hugging Face sharded torch.save: a missing or inconsistent shard is named with its index", "[formats][shards][errors]") {
  scratch_dir dir;
  compat_test::write_bin_shards(dir);
  auto index = dir.file("pytorch_model.bin.index.json");
  std::filesystem::remove(dir.file("pytorch_model-00002-of-00002.bin"));
  CHECK_THROWS_WITH(graft::read(index) | graft::collect(),
                    fmt::format("[graft.io] '{}': shard 'pytorch_model-00002-of-00002.bin' is missing from {}; \"weight_map\" "
                                "puts 2 tensors in it: '2.weight', '2.bias'",
                                index, dir.path().string()));
  // A shard that holds a tensor the index puts elsewhere.
  run_python("import torch\ntorch.save({'2.weight': torch.ones(3, 8), '2.bias': torch.ones(3), '0.bias': torch.ones(8)}, '" +
             dir.file("pytorch_model-00002-of-00002.bin") + "')\n");
  CHECK_THROWS_WITH(graft::read(index) | graft::collect(),
                    fmt::format("[graft.format] '{}': tensor '0.bias' is in shard 'pytorch_model-00002-of-00002.bin', but "
                                "\"weight_map\" puts it in 'pytorch_model-00001-of-00002.bin'",
                                index));
  // A folder without a checkpoint names what it looked for.
  scratch_dir empty;
  CHECK_THROWS_AS(graft::read(empty.path().string()) | graft::collect(), graft::io_error);
}

TEST_CASE("num_batches_tracked: absent from a rebuilt dict, it loads as PyTorch's load_state_dict loads it", "[formats][merge]") {
  scratch_dir dir;
  auto rebuilt = dir.file("rebuilt.pt"), deleted = dir.file("deleted.pt"), old = dir.file("old.pt");
  // A comprehension drops _metadata; del keeps it (BatchNorm version 2); an old checkpoint
  // says version 1. Python's strict load accepts the first and third, refuses the second.
  auto python = run_python(compat_test::py_net + fmt::format(R"PY(
rebuilt = {{k: v for k, v in sd.items() if not k.endswith('num_batches_tracked')}}
torch.save(rebuilt, '{}')
deleted = m.state_dict(); del deleted['bn.num_batches_tracked']
torch.save(deleted, '{}')
old = m.state_dict(); del old['bn.num_batches_tracked']; old._metadata['bn']['version'] = 1
torch.save(old, '{}')
for name, d in (('rebuilt', rebuilt), ('deleted', deleted), ('old', old)):
    n = torch.nn.Module(); n.conv = torch.nn.Conv2d(3, 4, 3); n.bn = torch.nn.BatchNorm2d(4); n.fc = torch.nn.Linear(4, 2)
    n.bn.num_batches_tracked.fill_(5)
    try:
        n.load_state_dict(d); print(name, 'loaded', n.bn.num_batches_tracked.item())
    except RuntimeError as e:
        print(name, 'refused', 'num_batches_tracked' in str(e))
)PY",
                                                             rebuilt, deleted, old));
  // PyTorch 2.2 on keeps the model's own counter (5 here); before, it set 0.
  const std::int64_t counter = GRAFT_TORCH_AT_LEAST(2, 2) ? 5 : 0;
  CHECK(python == fmt::format("rebuilt loaded {0}\ndeleted refused True\nold loaded {0}\n", counter));

  for (const auto& file : {rebuilt, old}) {
    INFO(file);
    auto net = std::make_shared<compat_test::Net>();
    net->bn->num_batches_tracked.fill_(5);
    auto report = graft::read(file) | graft::merge(*net);
    CHECK(report.defaulted == std::vector<std::string>{"bn.num_batches_tracked"});
    CHECK(report.missing.empty());
    CHECK(net->bn->num_batches_tracked.item<std::int64_t>() == counter);
    CHECK(fmt::format("{}", report).find("1 defaulted") != std::string::npos);
  }
  auto net = std::make_shared<compat_test::Net>();
  auto before = net->bn->running_mean.clone();
  CHECK_THROWS_AS(graft::read(deleted) | graft::merge(*net), graft::load_error);
  CHECK(torch::equal(net->bn->running_mean, before));
  // safetensors has no _metadata: as Python's load_state_dict(safetensors.torch.load_file(...)).
  auto st = dir.file("rebuilt.safetensors");
  graft::save(graft::read(rebuilt) | graft::collect(), st);
  auto report = graft::read(st) | graft::merge(*net);
  CHECK(report.defaulted.size() == 1);
}

TEST_CASE("TorchScript archives: nn.Module bookkeeping is not checkpoint state", "[formats][libtorch_archive]") {
  scratch_dir dir;
  auto file = dir.file("scripted.pt");
  run_python("import torch\nm = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))\n"
             "torch.jit.save(torch.jit.script(m), '" + file + "')\n");
  auto sd = graft::read(file) | graft::collect();
  CHECK(sd.keys() == std::vector<std::string>{"0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                                              "1.num_batches_tracked"});
  for (auto& [k, v] : sd.extras()) CHECK(k.find("_is_full_backward_hook") == std::string::npos);
  for (auto& [k, v] : sd.extras()) CHECK(k.find("training") == std::string::npos);
}

TEST_CASE("safetensors: a file cut inside its header says it looks truncated", "[formats][safetensors][errors]") {
  scratch_dir dir;
  auto good = dir.file("good.safetensors");
  graft::write_safetensors(good, {{"w", torch::ones({4, 4})}});
  std::ifstream in(good, std::ios::binary);
  std::string bytes{std::istreambuf_iterator<char>(in), {}};
  auto bad = dir.file("cut.safetensors");
  std::ofstream(bad, std::ios::binary) << bytes.substr(0, 20);
  CHECK_THROWS_WITH(graft::read(bad) | graft::collect(),
                    Catch::StartsWith(fmt::format("[graft.format] '{}' looks like a truncated safetensors file: its header claims", bad)));
}

TEST_CASE("adapt_input_channels turns an RGB stem into n channels exactly as timm's adapt_input_conv", "[formats][adapt]") {
  scratch_dir dir;
  auto file = dir.file("stems.pt");
  run_python(fmt::format(R"PY(
import torch
from timm.models._manipulate import adapt_input_conv
torch.manual_seed(0)
w = torch.randn(8, 3, 5, 5)
s2d = torch.randn(8, 12, 3, 3)
out = {{'w': w, 's2d': s2d, 'half': w.half()}}
for n in (1, 2, 3, 4, 6, 7):
    out[f'w{{n}}'] = adapt_input_conv(n, w)
out['s2d1'] = adapt_input_conv(1, s2d)
out['half1'] = adapt_input_conv(1, w.half())
torch.save(out, '{}')
)PY",
                         file));
  auto timm = graft::read(file) | graft::collect();
  for (int n : {1, 2, 3, 4, 6, 7}) {
    INFO(n << " channels");
    auto sd = graft::read(file) | graft::filter("w"_glob) | graft::adapt_input_channels("w", n) | graft::collect();
    CHECK(sd.at("w").sizes() == timm.at(fmt::format("w{}", n)).sizes());
    CHECK(torch::allclose(sd.at("w"), timm.at(fmt::format("w{}", n)), 1e-6, 1e-6));
  }
  auto s2d = graft::read(file) | graft::adapt_input_channels("s2d", 1) | graft::collect();
  CHECK(torch::allclose(s2d.at("s2d"), timm.at("s2d1"), 1e-6, 1e-6));
  auto half = graft::read(file) | graft::adapt_input_channels("half", 1) | graft::collect();
  CHECK(half.at("half").scalar_type() == torch::kHalf);
  CHECK(torch::allclose(half.at("half").to(torch::kFloat), timm.at("half1").to(torch::kFloat), 1e-3, 1e-3));

  CHECK_THROWS_WITH(graft::read(file) | graft::adapt_input_channels("conv1.weight", 1) | graft::collect(),
                    Catch::StartsWith("[graft.key] adapt_input_channels(\"conv1.weight\", 1): no entry is named 'conv1.weight'"));
  CHECK_THROWS_WITH(graft::read(file) | graft::adapt_input_channels("s2d", 2) | graft::collect(),
                    "[graft.shape] adapt_input_channels(\"s2d\", 2): 's2d' has 12 input channels; only a 3-channel weight "
                    "can be spread over 2");
}

TEST_CASE("keep_rows cuts a pretrained head down to chosen classes, and the strict merge then loads it", "[formats][adapt]") {
  graft::state_dict sd;
  sd.insert("fc.weight", torch::arange(1000 * 4, torch::kFloat).reshape({1000, 4}));
  sd.insert("fc.bias", torch::arange(1000, torch::kFloat));
  sd.insert("body.weight", torch::ones({3, 3}));
  std::vector<std::int64_t> rows{404, 430, 0, 999};
  auto out = sd | graft::keep_rows("fc.*"_glob, rows) | graft::collect();
  CHECK(out.at("fc.weight").sizes() == torch::IntArrayRef{4, 4});
  CHECK(torch::equal(out.at("fc.bias"), torch::tensor({404.f, 430.f, 0.f, 999.f})));
  CHECK(torch::equal(out.at("fc.weight")[1], sd.at("fc.weight")[430]));
  CHECK(torch::equal(out.at("body.weight"), sd.at("body.weight")));
  auto head = torch::nn::Linear(4, 4);
  auto report = out | graft::filter("fc.*"_glob) | graft::strip_prefix("fc.") | graft::merge(*head);
  CHECK(report.loaded.size() == 2);
  CHECK(torch::equal(head->bias, out.at("fc.bias")));

  CHECK_THROWS_WITH(sd | graft::keep_rows("fc.*"_glob, {1000}) | graft::collect(),
                    Catch::Contains("row 1000 is outside 'fc.weight', which has 1000 rows"));
  CHECK_THROWS_AS(sd | graft::keep_rows("head.*"_glob, {1}) | graft::collect(), graft::selection_error);
}
