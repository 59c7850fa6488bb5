// A ResNet-50 training step with a gradient scaler and a weight EMA: graft's grad_scaler and
// ema against the same math written by hand (scale the loss, unscale and check the gradients,
// step unless one is inf or NaN, update the scale; lerp every floating-point tensor of a
// copy towards the model's, copy the others), in the same run. Prints graft / hand.
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/amp.hpp>
#include <graft/graft.hpp>
#include <graft/train.hpp>

#include "resnet.hpp"

namespace {

struct setup {
  models::ResNet net = models::resnet(50, 10);
  torch::Tensor x = torch::randn({8, 3, 64, 64});
  torch::Tensor y = torch::randint(10, {8});
};
setup& data() {
  static setup s;
  return s;
}
torch::Tensor loss_of(setup& s) { return torch::nn::functional::cross_entropy(s.net->forward(s.x), s.y); }

// graft's scaler and EMA after backward. full: the whole step (forward and backward too);
// otherwise the gradients of one backward are reused, to time what follows it alone.
void graft_run(benchmark::State& state, bool full) {
  auto& s = data();
  torch::optim::SGD opt(s.net->parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
  graft::amp::grad_scaler scaler;
  graft::ema ema(*s.net, {.decay = 0.999});
  std::int64_t step = 0;
  auto loss = loss_of(s);
  opt.zero_grad();
  scaler.scale(loss).backward();
  for (auto _ : state) {
    if (full) {
      opt.zero_grad();
      loss = loss_of(s);
    }
    auto scaled = scaler.scale(loss);
    if (full) scaled.backward();
    scaler.step(opt);
    scaler.update();
    ema.update(*s.net, ++step);
  }
}

// The same math by hand: scale, unscale and check, step unless inf/NaN, update the scale;
// lerp a copy of every floating-point parameter and buffer, copy the others.
void hand_run(benchmark::State& state, bool full) {
  auto& s = data();
  torch::optim::SGD opt(s.net->parameters(), torch::optim::SGDOptions(1e-3).momentum(0.9));
  float scale = 65536.0f;
  std::int64_t good_steps = 0;
  std::vector<std::pair<torch::Tensor, torch::Tensor>> ema;  // (average, the model's tensor)
  {
    torch::NoGradGuard no_grad;
    for (auto& p : s.net->named_parameters()) ema.emplace_back(p.value().detach().clone(), p.value());
    for (auto& b : s.net->named_buffers()) ema.emplace_back(b.value().clone(), b.value());
  }
  std::int64_t step = 0;
  auto loss = loss_of(s);
  opt.zero_grad();
  (loss * scale).backward();
  for (auto _ : state) {
    if (full) {
      opt.zero_grad();
      loss = loss_of(s);
    }
    auto scaled = loss * scale;
    if (full) scaled.backward();
    bool finite = true;
    {
      torch::NoGradGuard no_grad;
      const double inv = 1.0 / scale;
      for (auto& p : s.net->parameters())
        if (p.grad().defined()) {
          if (!p.grad().isfinite().all().item<bool>()) finite = false;
          p.grad().mul_(inv);
        }
    }
    if (finite) opt.step();
    if (!finite) scale *= 0.5f, good_steps = 0;
    else if (++good_steps == 2000) scale *= 2.0f, good_steps = 0;
    ++step;
    const double decay = step <= 1 ? 0.0 : 0.999;
    torch::NoGradGuard no_grad;
    for (auto& [average, current] : ema) {
      if (average.is_floating_point()) average.lerp_(current, 1.0 - decay);
      else average.copy_(current);
    }
  }
}

void graft_step(benchmark::State& state) { graft_run(state, true); }
void hand_step(benchmark::State& state) { hand_run(state, true); }
void graft_after_backward(benchmark::State& state) { graft_run(state, false); }
void hand_after_backward(benchmark::State& state) { hand_run(state, false); }

BENCHMARK(graft_step)->Unit(benchmark::kMillisecond)->MinTime(5.0);
BENCHMARK(hand_step)->Unit(benchmark::kMillisecond)->MinTime(5.0);
BENCHMARK(graft_after_backward)->Unit(benchmark::kMillisecond)->MinTime(2.0);
BENCHMARK(hand_after_backward)->Unit(benchmark::kMillisecond)->MinTime(2.0);

class ratio_reporter : public benchmark::ConsoleReporter {
public:
  void ReportRuns(const std::vector<Run>& runs) override {
    // The median of repetitions where there are several, else the one run.
    for (auto& r : runs)
      if ((r.run_type == Run::RT_Iteration && r.iterations > 0 && !medians.count(r.run_name.function_name)) ||
          (r.run_type == Run::RT_Aggregate && r.aggregate_name == "median")) {
        times[r.run_name.function_name] = r.real_accumulated_time / static_cast<double>(r.iterations);
        if (r.run_type == Run::RT_Aggregate) medians.insert(r.run_name.function_name);
      }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> times;
  std::set<std::string> medians;
};

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  auto& t = reporter.times;
  if (t.count("graft_step") && t.count("hand_step"))
    fmt::print("ResNet-50 step with grad_scaler + ema: graft / hand = {:.3f}x (goal <= 1.05x)\n", t["graft_step"] / t["hand_step"]);
  if (t.count("graft_after_backward") && t.count("hand_after_backward"))
    fmt::print("grad_scaler + ema after backward alone: graft / hand = {:.3f}x\n",
               t["graft_after_backward"] / t["hand_after_backward"]);
  benchmark::Shutdown();
}
