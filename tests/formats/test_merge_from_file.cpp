// merge reads tensors that view a mapped checkpoint straight from the file into the model.
// Whatever path a copy takes, the model must end up with the source tensors' current values:
// after in-place edits of the mapped tensors, with tied destinations, on several threads, and
// when the file is replaced or cut short after it was read.

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "oracle.hpp"
#include "resnet.hpp"

using graft::test::scratch_dir;

namespace {

struct PairNet : torch::nn::Module {
  torch::nn::Linear a{nullptr}, b{nullptr};
  PairNet(std::int64_t in, std::int64_t out) {
    a = register_module("a", torch::nn::Linear(in, out));
    b = register_module("b", torch::nn::Linear(out, 3));
  }
};

// A state dict for PairNet with values unlike any fresh initialization.
graft::state_dict values_for(std::int64_t in, std::int64_t out, double shift) {
  graft::state_dict sd;
  sd.insert("a.weight", torch::arange(in * out, torch::kFloat).reshape({out, in}) / 1000 + shift);
  sd.insert("a.bias", torch::full({out}, shift - 1));
  sd.insert("b.weight", torch::linspace(-1, 1, out * 3).reshape({3, out}) + shift);
  sd.insert("b.bias", torch::tensor({1.5f, -2.5f, 3.5f}) + shift);
  return sd;
}

void require_loaded(PairNet& net, const graft::state_dict& expected) {
  for (auto& e : expected) {
    auto& got = e.key == "a.weight" ? net.a->weight : e.key == "a.bias" ? net.a->bias : e.key == "b.weight" ? net.b->weight : net.b->bias;
    INFO(e.key);
    REQUIRE(torch::equal(got, e.tensor));
  }
}

bool is_mapped(const torch::Tensor& t) { return graft::mapped_file::viewed_by(t.storage()) != nullptr; }

} // namespace

TEST_CASE("merge from a mapped checkpoint loads exactly the file's values, both formats", "[formats][merge]") {
  scratch_dir dir;
  auto want = values_for(64, 32, 0.25);
  for (auto name : {"net.pth", "net.safetensors"}) {
    auto path = dir.file(name);
    graft::save(want, path);
    auto sd = graft::read(path) | graft::collect();
    REQUIRE(is_mapped(sd.at("a.weight")));
    PairNet net(64, 32);
    auto versions = net.a->weight._version();
    auto r = graft::merge(net, sd);
    CHECK(r.loaded.size() == 4);
    require_loaded(net, want);
    // Autograd sees the parameters as changed in place, as after copy_.
    CHECK(net.a->weight._version() > versions);
    // The model does not view the file: its own tensors were written.
    CHECK_FALSE(is_mapped(net.a->weight));
  }
}

TEST_CASE("merge loads mapped tensors as they are now, after in-place edits", "[formats][merge]") {
  scratch_dir dir;
  auto path = dir.file("net.pth");
  auto want = values_for(2048, 8, 1.0);  // a.weight spans several pages
  graft::save(want, path);

  SECTION("an in-place operation") {
    auto sd = graft::read(path) | graft::collect();
    sd.at("a.weight").mul_(-3);
    PairNet net(2048, 8);
    graft::merge(net, sd);
    CHECK(torch::equal(net.a->weight, want.at("a.weight") * -3));
    CHECK(torch::equal(net.b->weight, want.at("b.weight")));
  }
  SECTION("a write through a raw pointer, which no version counter sees") {
    auto sd = graft::read(path) | graft::collect();
    auto w = sd.at("a.weight");
    w.data_ptr<float>()[w.numel() - 1] = 12345.0f;  // one element on the last page
    PairNet net(2048, 8);
    graft::merge(net, sd);
    auto expect = want.at("a.weight").clone();
    expect.view(-1)[-1] = 12345.0f;
    CHECK(torch::equal(net.a->weight, expect));
  }
  SECTION("the file on disk is not changed by either") {
    auto sd = graft::read(path) | graft::collect();
    sd.at("a.weight").fill_(7);
    auto again = graft::read(path) | graft::collect();
    CHECK(torch::equal(again.at("a.weight"), want.at("a.weight")));
  }
}

TEST_CASE("merge reads the file it mapped, even after the path is replaced", "[formats][merge]") {
  scratch_dir dir;
  auto path = dir.file("net.safetensors");
  auto want = values_for(16, 8, 2.0);
  graft::save(want, path);
  auto sd = graft::read(path) | graft::collect();
  graft::save(values_for(16, 8, -9.0), path);  // atomic: a new file under the old name
  PairNet net(16, 8);
  graft::merge(net, sd);
  require_loaded(net, want);
}

TEST_CASE("a mapped checkpoint cut short after reading is refused before anything changes", "[formats][merge]") {
  scratch_dir dir;
  auto path = dir.file("net.pth");
  graft::save(values_for(512, 64, 3.0), path);
  auto sd = graft::read(path) | graft::collect();
  auto full = std::filesystem::file_size(path);
  REQUIRE(::truncate(path.c_str(), static_cast<off_t>(full / 2)) == 0);

  PairNet net(512, 64);
  auto before = graft::state_dict(net);
  std::vector<torch::Tensor> copies;
  for (auto& e : before) copies.push_back(e.tensor.clone());
  for (unsigned threads : {1u, 4u}) {
    try {
      graft::merge(net, sd, {.threads = threads});
      FAIL("merge loaded from a truncated file");
    } catch (const graft::io_error& e) {
      CHECK_THAT(e.what(), Catch::Contains(path) && Catch::Contains("shorter") && Catch::Contains("nothing was loaded"));
    }
  }
  std::size_t i = 0;
  for (auto& e : before) CHECK(torch::equal(e.tensor, copies[i++]));
}

TEST_CASE("merge with tied destinations keeps the checkpoint's order", "[formats][merge]") {
  // Both keys name one tensor in the model; the later key wins, as in load_state_dict.
  struct Tied : torch::nn::Module {
    torch::Tensor w;
    Tied() {
      w = register_parameter("first", torch::zeros({64, 64}));
      register_parameter("second", w);
    }
  };
  scratch_dir dir;
  auto path = dir.file("tied.pth");
  graft::state_dict sd;
  sd.insert("first", torch::full({64, 64}, 1.0f));
  sd.insert("second", torch::full({64, 64}, 2.0f));
  graft::save(sd, path);
  Tied net;
  graft::merge(net, graft::read(path) | graft::collect());
  CHECK(torch::equal(net.w, torch::full({64, 64}, 2.0f)));
}

TEST_CASE("a large load split across threads equals the single-threaded one", "[formats][merge]") {
  scratch_dir dir;
  auto path = dir.file("big.safetensors");
  // 48 MiB in one tensor plus small ones: the threads split one tensor between them.
  auto want = values_for(3 << 10, 4 << 10, 0.5);
  graft::save(want, path);
  for (unsigned threads : {1u, 2u, 3u, 8u}) {
    PairNet net(3 << 10, 4 << 10);
    graft::merge(net, graft::read(path) | graft::collect(), {.threads = threads});
    INFO("threads " << threads);
    require_loaded(net, want);
  }
}

TEST_CASE("copies that convert or adapt go through copy_ from the mapping", "[formats][merge]") {
  scratch_dir dir;
  auto path = dir.file("half.pth");
  auto want = values_for(32, 16, 0.5);
  graft::state_dict half;
  for (auto& e : want) half.insert(e.key, e.tensor.to(torch::kHalf));
  graft::save(half, path);
  PairNet net(32, 16);
  graft::merge(net, graft::read(path) | graft::collect());
  for (auto& e : half) {
    auto& got = e.key == "a.weight" ? net.a->weight : e.key == "a.bias" ? net.a->bias : e.key == "b.weight" ? net.b->weight : net.b->bias;
    CHECK(torch::equal(got, e.tensor.to(torch::kFloat)));
  }
}

// PyTorch's BatchNorm rule for a checkpoint whose module versions are unknown (a plain dict:
// no _metadata) inserts num_batches_tracked for every BatchNorm before matching, also for one
// the checkpoint lacks entirely, so load_state_dict(strict=False) does not call it missing. A
// state_dict() with its _metadata names every module's version, and the counter of a module
// the file lacks is missing there. Both against the installed PyTorch.
TEST_CASE("merge: num_batches_tracked of a BatchNorm the checkpoint lacks is missing exactly when PyTorch says so",
          "[merge][oracle]") {
  scratch_dir dir;
  auto out = graft::test::run_python(R"PY(
import torch, torchvision
m = torchvision.models.resnet18()
for name, sd in (("plain", dict(m.state_dict())), ("versioned", m.state_dict())):
    for k in [k for k in sd if k.startswith("layer4.")]: del sd[k]
    torch.save(sd, ")PY" + dir.path().string() + R"PY(/" + name + ".pth")
    r = m.load_state_dict(sd, strict=False)
    print(name, " ".join(r.missing_keys))
)PY");
  std::map<std::string, std::vector<std::string>> missing;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string name, key;
    words >> name;
    while (words >> key) missing[name].push_back(key);
  }
  REQUIRE(missing.size() == 2);
  CHECK(missing["plain"].size() == 25);  // layer4's 30 tensors but its 5 counters
  CHECK(missing["versioned"].size() == 30);
  for (auto name : {"plain", "versioned"}) {
    INFO(name);
    auto net = models::resnet(18);
    auto counter = net->named_buffers()["layer4.0.bn1.num_batches_tracked"];
    {
      torch::NoGradGuard no_grad;
      counter.fill_(3);
    }
    auto r = graft::read(dir.file(std::string(name) + ".pth")) | graft::merge(*net, graft::load_policy::non_strict());
    CHECK(r.missing_keys() == missing[name]);
    CHECK(r.accepted());
#if GRAFT_TORCH_AT_LEAST(2, 2)
    CHECK(counter.item<std::int64_t>() == 3);  // PyTorch 2.2 on keeps the module's own counter
#else
    CHECK(counter.item<std::int64_t>() == (std::string(name) == "plain" ? 0 : 3));
#endif
  }
}
