// Param groups and freezing on ResNet-152 (465 parameters), graft against the loop over
// named_parameters() a user writes by hand today, in the same run. Prints graft/hand ratios.
#include <map>
#include <set>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "resnet.hpp"

using namespace graft::literals;

namespace {
models::ResNet& net() {
  static models::ResNet n = models::resnet(152);
  return n;
}
auto base_options() { return torch::optim::SGDOptions(1e-3).momentum(0.9).weight_decay(1e-4); }

// Head at 10x, backbone at 1x, each split into decay / no-decay (ndim <= 1 or bias), then the optimizer.
void graft_param_groups(benchmark::State& state) {
  auto& n = net();
  for (auto _ : state) {
    auto groups = graft::param_groups(*n).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").no_decay().build(base_options());
    torch::optim::SGD opt(groups.groups(), base_options());
    benchmark::DoNotOptimize(opt.param_groups().data());
  }
}
void hand_param_groups(benchmark::State& state) {
  auto& n = net();
  for (auto _ : state) {
    std::vector<torch::Tensor> head, head_nd, body, body_nd;
    for (auto& p : n->named_parameters()) {
      if (!p.value().requires_grad()) continue;
      bool nd = p.value().dim() <= 1 || p.key().ends_with(".bias");
      if (p.key().starts_with("fc.")) (nd ? head_nd : head).push_back(p.value());
      else (nd ? body_nd : body).push_back(p.value());
    }
    auto o = base_options();
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(head, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(o).lr(o.lr() * 10)));
    groups.emplace_back(head_nd, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(o).lr(o.lr() * 10).weight_decay(0)));
    groups.emplace_back(body, std::make_unique<torch::optim::SGDOptions>(o));
    groups.emplace_back(body_nd, std::make_unique<torch::optim::SGDOptions>(torch::optim::SGDOptions(o).weight_decay(0)));
    torch::optim::SGD opt(groups, o);
    benchmark::DoNotOptimize(opt.param_groups().data());
  }
}

// Freeze the backbone, then unfreeze it (so every iteration changes every flag).
void graft_freeze(benchmark::State& state) {
  auto& n = net();
  for (auto _ : state) {
    benchmark::DoNotOptimize(graft::freeze(*n, !"fc.**"_glob));
    benchmark::DoNotOptimize(graft::unfreeze(*n, !"fc.**"_glob));
  }
}
void hand_freeze(benchmark::State& state) {
  auto& n = net();
  for (auto _ : state) {
    for (auto& p : n->named_parameters())
      if (!p.key().starts_with("fc.")) p.value().set_requires_grad(false);
    for (auto& p : n->named_parameters())
      if (!p.key().starts_with("fc.")) p.value().set_requires_grad(true);
  }
}

// The same, with the optimizer made by named_param_groups::make_optimizer.
void graft_param_groups_make(benchmark::State& state) {
  auto& n = net();
  for (auto _ : state) {
    auto groups = graft::param_groups(*n).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").no_decay().build(base_options());
    auto opt = groups.make_optimizer<torch::optim::SGD>();
    benchmark::DoNotOptimize(opt.param_groups().data());
  }
}
void graft_build_only(benchmark::State& state) {
  auto& n = net();
  for (auto _ : state) {
    auto groups = graft::param_groups(*n).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").no_decay().build(base_options());
    benchmark::DoNotOptimize(groups.groups().data());
  }
}
void sgd_ctor_only(benchmark::State& state) {
  auto& n = net();
  auto groups = graft::param_groups(*n).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").no_decay().build(base_options());
  for (auto _ : state) {
    torch::optim::SGD opt(groups.groups(), base_options());
    benchmark::DoNotOptimize(opt.param_groups().data());
  }
}
BENCHMARK(graft_param_groups_make)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_build_only)->Unit(benchmark::kMicrosecond);
BENCHMARK(sgd_ctor_only)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_param_groups)->Unit(benchmark::kMicrosecond);
BENCHMARK(hand_param_groups)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_freeze)->Unit(benchmark::kMicrosecond);
BENCHMARK(hand_freeze)->Unit(benchmark::kMicrosecond);

// Keeps each benchmark's time per iteration, to print the ratios after the run.
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
  auto ratio = [&](const char* what, const std::string& a, const std::string& b) {
    if (reporter.times.count(a) && reporter.times.count(b))
      fmt::print("{}: graft / hand = {:.2f}x (goal <= 0.3x)\n", what, reporter.times[a] / reporter.times[b]);
  };
  ratio("param groups + SGD (make_optimizer) on ResNet-152", "graft_param_groups_make", "hand_param_groups");
  ratio("param groups + SGD(groups, defaults) on ResNet-152", "graft_param_groups", "hand_param_groups");
  auto& t = reporter.times;
  if (t.count("graft_build_only") && t.count("hand_param_groups") && t.count("sgd_ctor_only"))
    fmt::print("param groups alone (hand loop minus the SGD constructor): graft / hand = {:.2f}x\n",
               t["graft_build_only"] / (t["hand_param_groups"] - t["sgd_ctor_only"]));
  ratio("freeze + unfreeze backbone of ResNet-152", "graft_freeze", "hand_freeze");
  benchmark::Shutdown();
}
