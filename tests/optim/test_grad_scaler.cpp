// graft::amp: grad_scaler step by step against torch.amp.GradScaler (the oracle runs PyTorch
// 2.x), its refusals, a disabled scaler, two optimizers, and autocast scopes on the CPU.

#include <catch2/catch.hpp>

#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <graft/amp.hpp>

#include "oracle.hpp"

namespace grad_scaler_test {

// A Linear(4, 3), its batch and targets: small integers and powers of two, so that gradients
// (targets^T x, whatever the weights), scales and unscaled gradients are exact in float32 and
// SGD's lr (2^-4) scales exactly: both sides compute the same floats. Steps 2, 6 and 10 get an
// inf or NaN after backward; steps 1, 4, 7 and 10 unscale_ first and clip by value.
const char* const oracle_script = R"(
import warnings, torch
warnings.filterwarnings("ignore")
if not hasattr(torch, "amp") or not hasattr(torch.amp, "GradScaler"):
    print("skip: torch", torch.__version__, "has no torch.amp.GradScaler"); raise SystemExit(0)
lin = torch.nn.Linear(4, 3)
with torch.no_grad():
    lin.weight.copy_(torch.tensor([[1, 2, -1, 0.5], [0, -2, 1, 1], [0.25, 1, -0.5, 2]]))
    lin.bias.copy_(torch.tensor([0.5, -1, 2]))
x, t0 = torch.tensor([[1., 2, 0, -1], [3, -1, 2, 1]]), torch.tensor([[1., -1, 2], [0, 2, 1]])
opt = torch.optim.SGD(lin.parameters(), lr=0.0625, momentum=0.9, foreach=False)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
for k in range(12):
    opt.zero_grad()
    scaler.scale((lin(x) * (t0 if k % 2 == 0 else -t0)).sum()).backward()
    if k == 2: lin.weight.grad[0, 0] = float("inf")
    if k == 6: lin.bias.grad[1] = float("nan")
    if k == 10: lin.weight.grad[2, 3] = float("-inf")
    if k % 3 == 1 or k == 10:
        scaler.unscale_(opt)
        for p in lin.parameters(): p.grad.clamp_(-3.5, 3.5)
    before = [p.detach().clone() for p in lin.parameters()]
    scaler.step(opt)
    stepped = any(not torch.equal(a, p.detach()) for a, p in zip(before, lin.parameters()))
    scaler.update(4096.0) if k == 11 else scaler.update()
    print("step", k, int(stepped), repr(scaler.get_scale()), scaler.state_dict()["_growth_tracker"])
print("params", *[repr(v) for p in lin.parameters() for v in p.detach().flatten().tolist()])
print("state", *[repr(v) for v in scaler.state_dict().values()])
)";

torch::nn::Linear make_linear() {
  torch::nn::Linear lin(4, 3);
  torch::NoGradGuard no_grad;
  lin->weight.copy_(torch::tensor({{1.0, 2.0, -1.0, 0.5}, {0.0, -2.0, 1.0, 1.0}, {0.25, 1.0, -0.5, 2.0}}));
  lin->bias.copy_(torch::tensor({0.5, -1.0, 2.0}));
  return lin;
}
torch::Tensor batch() { return torch::tensor({{1.0, 2.0, 0.0, -1.0}, {3.0, -1.0, 2.0, 1.0}}, torch::kFloat32); }
torch::Tensor targets() { return torch::tensor({{1.0, -1.0, 2.0}, {0.0, 2.0, 1.0}}, torch::kFloat32); }
// The oracle's rows by their first word (step, params, state), in order.
std::map<std::string, std::vector<std::vector<double>>> parse(const std::string& out) {
  std::map<std::string, std::vector<std::vector<double>>> rows;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string tag;
    if (!(words >> tag) || (tag != "step" && tag != "params" && tag != "state")) continue;
    auto& row = rows[tag].emplace_back();
    for (std::string w; words >> w;) row.push_back(std::stod(w));
  }
  return rows;
}
void check_row(const std::vector<double>& got, const std::vector<double>& expected, const std::string& what) {
  INFO(what);
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(expected[i]).epsilon(1e-6).margin(1e-12));
}

} // namespace grad_scaler_test

TEST_CASE("grad_scaler skips, backs off, grows and steps SGD as torch.amp.GradScaler does") {
  using namespace grad_scaler_test;
  const std::string peft = GRAFT_PYTHON_PEFT;
  const std::string out = graft::test::run_python_with(peft.empty() ? std::string(GRAFT_PYTHON) : peft, oracle_script);
  auto lin = make_linear();
  torch::optim::SGD opt(lin->parameters(), torch::optim::SGDOptions(0.0625).momentum(0.9));
  graft::amp::grad_scaler scaler({.init_scale = 1024.0, .growth_interval = 3});
  CHECK(scaler.get_scale() == 1024.0);  // init_scale until the first scale()
  const auto x = batch(), t0 = targets();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<std::vector<double>> steps;
  for (int k = 0; k < 12; ++k) {
    opt.zero_grad();
    scaler.scale((lin(x) * (k % 2 == 0 ? t0 : -t0)).sum()).backward();
    if (k == 2) lin->weight.grad()[0][0].fill_(inf);
    if (k == 6) lin->bias.grad()[1].fill_(std::numeric_limits<float>::quiet_NaN());
    if (k == 10) lin->weight.grad()[2][3].fill_(-inf);
    if (k % 3 == 1 || k == 10) {
      scaler.unscale_(opt);
      for (auto& p : lin->parameters()) p.grad().clamp_(-3.5, 3.5);
    }
    const bool stepped = scaler.step(opt);
    CHECK(stepped == (k != 2 && k != 6 && k != 10));  // an inf or NaN skips the step
    k == 11 ? scaler.update(4096.0) : scaler.update();
    steps.push_back({double(k), stepped ? 1.0 : 0.0, scaler.get_scale(), double(scaler.growth_tracker())});
  }
  const auto state = scaler.state_dict();
  REQUIRE((state.has_value() && state->scale == 4096.0));
  if (out.rfind("skip:", 0) == 0) {
    WARN("no torch.amp.GradScaler to compare with (" << out << "): set GRAFT_PYTHON_PEFT to a PyTorch 2.x Python");
    return;
  }
  auto expected = parse(out);
  REQUIRE(expected["step"].size() == steps.size());
  for (std::size_t k = 0; k < steps.size(); ++k)
    check_row(steps[k], expected["step"][k], "step " + std::to_string(k) + ": index, stepped, scale, growth tracker");
  REQUIRE((expected["params"].size() == 1 && expected["state"].size() == 1));
  const auto p = torch::cat({lin->weight.flatten(), lin->bias}).detach().to(torch::kFloat64).contiguous();
  check_row(std::vector<double>(p.data_ptr<double>(), p.data_ptr<double>() + p.numel()), expected["params"][0], "params");
  check_row({state->scale, state->growth_factor, state->backoff_factor, double(state->growth_interval),
             double(state->growth_tracker)}, expected["state"][0], "state_dict(), in PyTorch's order");
}

TEST_CASE("grad_scaler refuses bad settings and calls out of order") {
  using graft::amp::grad_scaler;
  for (const auto& bad : std::vector<graft::amp::grad_scaler_options>{
           {.init_scale = 0.0}, {.init_scale = std::numeric_limits<double>::infinity()}, {.growth_factor = 1.0},
           {.backoff_factor = 1.0}, {.backoff_factor = 0.0}})
    CHECK_THROWS_AS(grad_scaler(bad), graft::option_error);
  CHECK_THROWS_WITH(grad_scaler({.growth_interval = 0}),
                    Catch::Contains("grad_scaler_options.growth_interval must be >= 1, got 0"));
  auto lin = grad_scaler_test::make_linear();
  torch::optim::SGD opt(lin->parameters(), torch::optim::SGDOptions(0.0625));
  grad_scaler scaler;
  CHECK(scaler.get_scale() == 65536.0);
  CHECK_THROWS_AS(scaler.unscale_(opt), graft::state_error);  // no scale() yet
  CHECK_THROWS_AS(scaler.update(), graft::state_error);
  scaler.scale(lin(grad_scaler_test::batch()).sum()).backward();
  CHECK_THROWS_WITH(scaler.update(), Catch::Contains("no inf checks were recorded"));
  scaler.unscale_(opt);
  CHECK_THROWS_WITH(scaler.unscale_(opt), Catch::Contains("already been called on this optimizer"));
  CHECK(scaler.step(opt));
  CHECK_THROWS_AS(scaler.step(opt), graft::state_error);
  CHECK_THROWS_AS(scaler.unscale_(opt), graft::state_error);
  CHECK_THROWS_AS(scaler.update(-1.0), graft::option_error);
  scaler.update();
  CHECK(scaler.growth_tracker() == 1);
  CHECK_THROWS_AS(scaler.load_state_dict({.scale = -1.0}), graft::option_error);
  CHECK_THROWS_AS(scaler.load_state_dict({.growth_tracker = -1}), graft::option_error);
  scaler.load_state_dict({.scale = 8.0, .growth_interval = 5, .growth_tracker = 2});
  CHECK((scaler.get_scale() == 8.0 && scaler.growth_tracker() == 2 && scaler.state_dict()->growth_interval == 5));
  // float16 gradients are refused, as PyTorch refuses them; so is an optimizer without gradients.
  std::vector<torch::Tensor> fp16_params{torch::ones({2}, torch::TensorOptions().dtype(torch::kFloat16).requires_grad(true))};
  fp16_params[0].mutable_grad() = torch::ones({2}, torch::kFloat16);
  torch::optim::SGD fp16_opt(fp16_params, torch::optim::SGDOptions(0.1));
  CHECK_THROWS_WITH(scaler.unscale_(fp16_opt), Catch::Contains("float16"));
  std::vector<torch::Tensor> gradless{torch::zeros({2}, torch::requires_grad())};
  torch::optim::SGD gradless_opt(gradless, torch::optim::SGDOptions(0.1));
  CHECK_THROWS_WITH(scaler.step(gradless_opt), Catch::Contains("no inf checks were recorded for this optimizer"));
}

TEST_CASE("a disabled grad_scaler trains as plain libtorch does") {
  using namespace grad_scaler_test;
  auto a = make_linear(), b = make_linear();
  const auto x = batch(), t0 = targets();
  torch::optim::SGD opt_a(a->parameters(), torch::optim::SGDOptions(0.0625).momentum(0.9));
  torch::optim::SGD opt_b(b->parameters(), torch::optim::SGDOptions(0.0625).momentum(0.9));
  graft::amp::grad_scaler scaler({.enabled = false});
  for (int k = 0; k < 4; ++k) {
    opt_a.zero_grad(), opt_b.zero_grad();
    auto loss = (a(x) * t0).sum();
    CHECK(scaler.scale(loss).is_same(loss));  // the loss itself
    loss.backward();
    scaler.unscale_(opt_a);
    CHECK(scaler.step(opt_a));
    scaler.update();
    (b(x) * t0).sum().backward();
    opt_b.step();
  }
  CHECK((torch::equal(a->weight, b->weight) && torch::equal(a->bias, b->bias)));
  CHECK((!scaler.is_enabled() && scaler.get_scale() == 1.0 && scaler.growth_tracker() == 0 && !scaler.state_dict()));
  CHECK_NOTHROW(scaler.load_state_dict({.scale = -1.0}));  // a no-op, as PyTorch's
}

TEST_CASE("grad_scaler with two optimizers: each steps on its own gradients, one update") {
  using namespace grad_scaler_test;
  auto a = make_linear(), b = make_linear();
  const auto x = batch(), t0 = targets();
  torch::optim::SGD opt_a(a->parameters(), torch::optim::SGDOptions(0.0625));
  torch::optim::SGD opt_b(b->parameters(), torch::optim::SGDOptions(0.0625));
  graft::amp::grad_scaler scaler({.init_scale = 256.0, .growth_interval = 1});
  for (int k = 0; k < 2; ++k) {
    opt_a.zero_grad(), opt_b.zero_grad();
    scaler.scale((a(x) * t0).sum() + (b(x) * t0).sum()).backward();
    if (k == 0) b->bias.grad()[0].fill_(std::numeric_limits<float>::infinity());
    const auto a_before = a->weight.detach().clone(), b_before = b->weight.detach().clone();
    CHECK(scaler.step(opt_a));              // a's gradients are finite: it steps
    CHECK(scaler.step(opt_b) == (k == 1));  // b's hold an inf in the first iteration
    CHECK((torch::equal(a->weight.grad(), t0.t().mm(x)) && torch::equal(a->bias.grad(), t0.sum(0))));  // unscaled
    CHECK((!torch::equal(a->weight, a_before) && torch::equal(b->weight, b_before) == (k == 0)));
    scaler.update();
    CHECK((scaler.get_scale() == (k == 0 ? 128.0 : 256.0) && scaler.growth_tracker() == 0));  // backoff, then growth
  }
}

TEST_CASE("autocast scopes run a Linear in bfloat16 on the CPU, nest, and restore on the way out") {
  using graft::amp::autocast, graft::amp::autocast_dtype, graft::amp::is_autocast_enabled;
  torch::nn::Linear lin(4, 3);
  const auto x = torch::ones({2, 4});
  const auto cpu_dtype = autocast_dtype(torch::kCPU), cuda_dtype = autocast_dtype(torch::kCUDA);
  REQUIRE_FALSE(is_autocast_enabled(torch::kCPU));
  CHECK(lin(x).scalar_type() == torch::kFloat32);
  {
    autocast outer(torch::kCPU, torch::kBFloat16);
    CHECK((is_autocast_enabled(torch::kCPU) && lin(x).scalar_type() == torch::kBFloat16));
    {
      autocast off(torch::kCPU, false);  // autocast off inside
      CHECK((!is_autocast_enabled(torch::kCPU) && lin(x).scalar_type() == torch::kFloat32));
    }
    CHECK(lin(x).scalar_type() == torch::kBFloat16);
  }
  CHECK((!is_autocast_enabled(torch::kCPU) && autocast_dtype(torch::kCPU) == cpu_dtype));
  CHECK(lin(x).scalar_type() == torch::kFloat32);
  try {  // an exception leaves through the destructor
    autocast scope(torch::kCPU, torch::kBFloat16);
    throw std::runtime_error("thrown inside the scope");
  } catch (const std::runtime_error&) {}
  CHECK((!is_autocast_enabled(torch::kCPU) && lin(x).scalar_type() == torch::kFloat32));
  // CUDA's flag and dtype are this thread's state too: nested scopes restore them without a GPU.
  {
    autocast fp16(torch::kCUDA, torch::kHalf);
    { autocast bf16(torch::kCUDA, torch::kBFloat16); CHECK(autocast_dtype(torch::kCUDA) == torch::kBFloat16); }
    CHECK((autocast_dtype(torch::kCUDA) == torch::kHalf && is_autocast_enabled(torch::kCUDA)));
  }
  CHECK((autocast_dtype(torch::kCUDA) == cuda_dtype && !is_autocast_enabled(torch::kCUDA)));
  CHECK_THROWS_AS(autocast(torch::kCPU, torch::kFloat32), graft::option_error);
  CHECK_THROWS_AS(autocast(torch::kCUDA, torch::kFloat64), graft::option_error);
  CHECK_THROWS_AS(autocast(c10::DeviceType::Meta, torch::kBFloat16), graft::option_error);
#if GRAFT_TORCH_AT_LEAST(2, 4)  // float16 on the CPU from libtorch 2.4
  { autocast fp16(torch::kCPU, torch::kHalf); CHECK(lin(x).scalar_type() == torch::kHalf); }
#else
  CHECK_THROWS_WITH(autocast(torch::kCPU, torch::kHalf), Catch::Contains("cpu autocast does not run ops in Half"));
#endif
  CHECK_FALSE(is_autocast_enabled(torch::kCPU));
}
