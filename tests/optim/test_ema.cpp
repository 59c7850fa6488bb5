// graft::ema against timm's ModelEmaV3 (decay, warm-up, min_decay, update_after_step,
// exclude_buffers, every k steps), then what timm has no counterpart for: swapping the average
// in and out bit for bit, its state dict, tied tensors, dtypes, and refusals.

#include <catch2/catch.hpp>

#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <graft/train.hpp>

#include "oracle.hpp"

namespace ema_test {

struct NetImpl : torch::nn::Module {
  NetImpl() {
    fc1 = register_module("fc1", torch::nn::Linear(3, 4));
    bn = register_module("bn", torch::nn::BatchNorm1d(4));
    fc2 = register_module("fc2", torch::nn::Linear(4, 2));
  }
  torch::nn::Linear fc1{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
  torch::nn::Linear fc2{nullptr};
};
TORCH_MODULE(Net);

// The model's state at step k, the same formula on both sides: small multiples of 1/8, exact in
// float32, so both sides average the same floats; num_batches_tracked = k.
const char* const fill_py = R"(
import torch
class Net(torch.nn.Module):
    def __init__(s):
        super().__init__(); s.fc1 = torch.nn.Linear(3, 4); s.bn = torch.nn.BatchNorm1d(4); s.fc2 = torch.nn.Linear(4, 2)
def fill(net, k):
    with torch.no_grad():
        for j, (name, t) in enumerate(net.state_dict().items()):
            if t.is_floating_point():
                t.copy_(((torch.arange(t.numel()) * 5 + j * 3 + k * 7) % 11 - 5).to(torch.float32).mul(0.125).reshape(t.shape))
            else:
                t.fill_(k)
)";
void fill(torch::nn::Module& net, std::int64_t k) {
  torch::NoGradGuard no_grad;
  std::int64_t j = 0;
  for (auto& item : graft::state_dict(net)) {
    const auto& t = item.tensor;
    if (t.is_floating_point())
      t.copy_((torch::arange(t.numel(), torch::kInt64) * 5 + (j * 3 + k * 7)).remainder(11).sub(5).to(torch::kFloat32)
                  .mul(0.125).reshape(t.sizes()));
    else
      t.fill_(k);
    ++j;
  }
}

// Each configuration: timm's arguments, whether update() gets the step, and k of "every k steps".
const char* const oracle_script = R"(
import warnings
warnings.filterwarnings("ignore")
from timm.utils import ModelEmaV3
configs = {
    "plain": (dict(decay=0.9), False, 1),
    "warmup": (dict(decay=0.95, use_warmup=True, warmup_power=0.75, warmup_gamma=2.0, min_decay=0.3, update_after_step=2), True, 1),
    "buffers": (dict(decay=0.8, exclude_buffers=True), True, 1),
    "every": (dict(decay=0.7, update_after_step=1), True, 3),
}
for name, (kw, with_step, every) in configs.items():
    net = Net(); fill(net, 0)
    ema = ModelEmaV3(net, **kw)
    for k in range(1, 13):
        fill(net, k)
        if k % every == 0:
            ema.update(net, step=k if with_step else None)
    for key, v in ema.module.state_dict().items():
        print(name, key, *[repr(float(x)) for x in v.flatten().tolist()])
    print("decay", name, *[repr(ema.get_decay(k)) for k in range(0, 13)])
)";

using rows = std::map<std::string, std::vector<double>>;  // "config key" -> values
rows parse(const std::string& out) {
  rows r;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string config, key;
    if (!(words >> config >> key)) continue;
    auto& row = r[config + " " + key];
    for (std::string w; words >> w;) row.push_back(std::stod(w));
  }
  return r;
}

} // namespace ema_test

TEST_CASE("ema equals timm's ModelEmaV3: decay, warm-up, update_after_step, exclude_buffers, every k steps") {
  using namespace ema_test;
  const auto expected = parse(graft::test::run_python(std::string(fill_py) + oracle_script));
  struct config {
    std::string name;
    graft::ema_options options;
    bool with_step;
  };
  const std::vector<config> configs = {
      {"plain", {.decay = 0.9}, false},
      {"warmup",
       {.decay = 0.95, .min_decay = 0.3, .update_after_step = 2, .use_warmup = true, .warmup_gamma = 2.0, .warmup_power = 0.75},
       true},
      {"buffers", {.decay = 0.8, .exclude_buffers = true}, true},
      {"every", {.decay = 0.7, .update_after_step = 1, .every = 3}, true},
  };
  for (const auto& c : configs) {
    INFO(c.name);
    Net net;
    fill(*net, 0);
    graft::ema ema(*net, c.options);
    int updates = 0;
    for (std::int64_t k = 1; k <= 12; ++k) {
      fill(*net, k);
      updates += ema.update(*net, c.with_step ? std::optional<std::int64_t>(k) : std::nullopt) ? 1 : 0;
    }
    CHECK(updates == (c.options.every == 3 ? 4 : 12));
    const auto& decays = expected.at("decay " + c.name);
    REQUIRE(decays.size() == 13);
    for (std::int64_t k = 0; k <= 12; ++k) CHECK(ema.decay_at(k) == Approx(decays[static_cast<std::size_t>(k)]).margin(1e-15));
    const auto sd = ema.state_dict();
    REQUIRE(sd.size() == 9);
    for (const auto& e : sd) {
      INFO(e.key);
      const auto& want = expected.at(c.name + " " + e.key);
      const auto got = e.tensor.to(torch::kFloat64).flatten();
      REQUIRE(got.numel() == static_cast<std::int64_t>(want.size()));
      for (std::size_t i = 0; i < want.size(); ++i)
        CHECK(got[static_cast<std::int64_t>(i)].item<double>() == Approx(want[i]).epsilon(1e-6).margin(1e-6));
    }
  }
}

TEST_CASE("ema swaps its average into a model and puts the model's own tensors back bit for bit") {
  using namespace ema_test;
  Net net;
  fill(*net, 0);
  graft::ema ema(*net, {.decay = 0.5});
  fill(*net, 3);
  ema.update(*net);
  const graft::state_dict own(*net);
  std::vector<torch::Tensor> before;
  for (const auto& e : own) before.push_back(e.tensor.clone());
  const auto average = ema.state_dict();
  {
    auto in_use = ema.swap_into(*net);
    std::size_t i = 0;
    for (const auto& e : graft::state_dict(*net)) {
      INFO(e.key);
      CHECK(torch::equal(e.tensor, average.at(e.key)));
      CHECK_FALSE((e.tensor.is_floating_point() && torch::equal(e.tensor, before[i])));  // the average differs
      ++i;
    }
  }
  std::size_t i = 0;
  for (const auto& e : graft::state_dict(*net)) CHECK(torch::equal(e.tensor, before[i++]));
  // restore() early, then the destructor does nothing more.
  auto in_use = ema.swap_into(*net);
  in_use.restore();
  fill(*net, 5);
  in_use.restore();
  CHECK(torch::equal(net->fc1->weight, graft::state_dict(*net).at("fc1.weight")));
  // copy_to: the model takes the average for good.
  ema.copy_to(*net);
  CHECK(torch::equal(net->fc2->bias, average.at("fc2.bias")));
}

TEST_CASE("ema's state dict has the model's keys, loads into a model, and loads back into an ema transactionally") {
  using namespace ema_test;
  Net net;
  fill(*net, 1);
  graft::ema ema(*net, {.decay = 0.75});
  fill(*net, 2);
  ema.update(*net);
  const auto sd = ema.state_dict();
  CHECK(sd.keys() == graft::state_dict(*net).keys());

  graft::ema other(*net, {.decay = 0.75});
  other.load_state_dict(sd);
  for (const auto& e : other.state_dict()) CHECK(torch::equal(e.tensor, sd.at(e.key)));

  // A state dict missing a key, with a wrong shape, or an extra key: refused, the average unchanged.
  graft::ema third(*net, {.decay = 0.75});
  const auto untouched = [&] {
    for (const auto& e : third.state_dict())
      if (!torch::equal(e.tensor, graft::state_dict(*net).at(e.key))) return false;
    return true;
  };
  graft::state_dict missing;
  for (const auto& e : sd)
    if (e.key != "bn.running_var") missing.insert(e.key, e.tensor);
  CHECK_THROWS_MATCHES(third.load_state_dict(missing), graft::key_error,
                       Catch::Matchers::Predicate<graft::key_error>([](const graft::key_error& x) {
                         return x.context().key == "bn.running_var";
                       }));
  graft::state_dict reshaped;
  for (const auto& e : sd) reshaped.insert(e.key, e.key == "fc2.weight" ? e.tensor.reshape({4, 2}) : e.tensor);
  CHECK_THROWS_AS(third.load_state_dict(reshaped), graft::shape_error);
  graft::state_dict extra = sd;
  extra.insert("head.weight", torch::zeros({2}));
  CHECK_THROWS_WITH(third.load_state_dict(extra), Catch::Contains("unexpected key 'head.weight'"));
  CHECK(untouched());
}

TEST_CASE("ema refuses another model, bad settings and a half-precision average, before anything changes") {
  using namespace ema_test;
  Net net;
  fill(*net, 0);
  graft::ema ema(*net, {.decay = 0.5});
  const auto before = ema.state_dict().at("fc1.weight").clone();
  torch::nn::Sequential other(torch::nn::Linear(3, 4));
  CHECK_THROWS_AS(ema.update(*other), graft::key_error);
  struct Wider : torch::nn::Module {
    Wider() {
      register_module("fc1", torch::nn::Linear(3, 5));
      register_module("bn", torch::nn::BatchNorm1d(4));
      register_module("fc2", torch::nn::Linear(4, 2));
    }
  } wider;
  CHECK_THROWS_AS(ema.update(wider), graft::shape_error);
  CHECK(torch::equal(ema.state_dict().at("fc1.weight"), before));

  CHECK_THROWS_WITH(graft::ema(*net, {.decay = 1.5}), Catch::Contains("decay 1.5 must be in [0, 1]"));
  CHECK_THROWS_AS(graft::ema(*net, {.decay = 0.9, .min_decay = 0.95}), graft::option_error);
  CHECK_THROWS_AS(graft::ema(*net, {.every = 0}), graft::option_error);
  CHECK_THROWS_AS(graft::ema(*net, {.dtype = torch::kInt32}), graft::option_error);

  // bfloat16 weights: the average is kept in float32 or refused.
  Net half;
  for (auto& p : half->parameters()) p.set_data(p.to(torch::kBFloat16));  // buffers stay float32 and int64
  CHECK_THROWS_WITH(graft::ema(*half), Catch::Contains("fc1.weight") && Catch::Contains("float32"));
  graft::ema wide(*half, {.decay = 0.5, .dtype = torch::kFloat32});
  CHECK(wide.state_dict().at("fc1.weight").scalar_type() == torch::kFloat32);
  CHECK(wide.state_dict().at("bn.num_batches_tracked").scalar_type() == torch::kInt64);
  const auto w0 = wide.state_dict().at("fc1.weight").clone();
  {
    torch::NoGradGuard no_grad;
    half->fc1->weight.add_(1.0);
  }
  wide.update(*half);
  CHECK(torch::equal(wide.state_dict().at("fc1.weight"), (w0 + half->fc1->weight.to(torch::kFloat32)) / 2));
}

TEST_CASE("ema averages a tied tensor once and lists it under every name") {
  struct Tied : torch::nn::Module {
    Tied() {
      a = register_module("a", torch::nn::Linear(2, 2));
      b = register_module("b", a);  // the same layer under two names
    }
    torch::nn::Linear a{nullptr}, b{nullptr};
  } tied;
  {
    torch::NoGradGuard no_grad;
    tied.a->weight.fill_(0.0);
  }
  graft::ema ema(tied, {.decay = 0.5});
  {
    torch::NoGradGuard no_grad;
    tied.a->weight.fill_(1.0);
  }
  ema.update(tied);
  const auto sd = ema.state_dict();
  CHECK(sd.contains("a.weight"));
  CHECK(sd.contains("b.weight"));
  CHECK(torch::allclose(sd.at("a.weight"), torch::full({2, 2}, 0.5)));  // once: 0.5, not 0.75
  CHECK(sd.at("a.weight").data_ptr() == sd.at("b.weight").data_ptr());
}
