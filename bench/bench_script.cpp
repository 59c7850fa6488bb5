// Walk, select, freeze and param groups on a *scripted* torchvision ResNet-152 (467 parameters):
// graft on a graft::script_module against the loop a user writes by hand over the jit module's
// own named_parameters(), in the same run; plus the one-time cost of building the view, next to
// torch::jit::load itself. Prints the graft/hand ratios and their goals after the table.
//
// The model file comes from GRAFT_BENCH_SCRIPT_MODEL (default
// build/bench-data/resnet152_script.pt, relative to the working directory). When it is missing,
// the program makes it with the system's Python (torchvision's ResNet-152, random weights:
// no download) before running.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <graft/graft.hpp>
#include <graft/script.hpp>

using namespace graft::literals;

namespace {

std::string model_path;                          // the TorchScript file
torch::jit::Module jit_model;                    // torch::jit::load(model_path)
std::shared_ptr<graft::script_module> view;      // graft's view of jit_model

auto base_options() { return torch::optim::SGDOptions(1e-3).momentum(0.9).weight_decay(1e-4); }

// (1) Every parameter: count them and sum their elements, touching each name.
void hand_walk(benchmark::State& state) {
  for (auto _ : state) {
    std::int64_t count = 0, numel = 0;
    for (const auto& p : jit_model.named_parameters()) {
      benchmark::DoNotOptimize(p.name.data());
      ++count;
      numel += p.value.numel();
    }
    benchmark::DoNotOptimize(count);
    benchmark::DoNotOptimize(numel);
  }
}
void graft_walk(benchmark::State& state) {
  for (auto _ : state) {
    std::int64_t count = 0, numel = 0;
    for (auto t : graft::walk(*view)) {
      benchmark::DoNotOptimize(t.path().data());
      ++count;
      numel += t.tensor().numel();
    }
    benchmark::DoNotOptimize(count);
    benchmark::DoNotOptimize(numel);
  }
}

// (2) One subtree, collected as (name, tensor) pairs that outlive the loop.
void hand_select(benchmark::State& state) {
  for (auto _ : state) {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (const auto& p : jit_model.named_parameters())
      if (p.name.starts_with("layer4.")) out.emplace_back(p.name, p.value);
    benchmark::DoNotOptimize(out.data());
  }
}
void graft_select(benchmark::State& state) {
  for (auto _ : state) {
    auto s = graft::select(*view, "layer4.**"_glob);
    benchmark::DoNotOptimize(&s);
  }
}

// (3) Freeze the backbone, then unfreeze it (every iteration changes every flag).
void hand_freeze(benchmark::State& state) {
  for (auto _ : state) {
    for (const auto& p : jit_model.named_parameters())
      if (!p.name.starts_with("fc.")) p.value.set_requires_grad(false);
    for (const auto& p : jit_model.named_parameters())
      if (!p.name.starts_with("fc.")) p.value.set_requires_grad(true);
  }
}
void graft_freeze(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(graft::freeze(*view, !"fc.**"_glob));
    benchmark::DoNotOptimize(graft::unfreeze(*view, !"fc.**"_glob));
  }
}

// (4) Head at 10x, backbone at 1x, each split into decay / no-decay (ndim <= 1 or bias), then SGD.
void hand_param_groups(benchmark::State& state) {
  for (auto _ : state) {
    std::vector<torch::Tensor> head, head_nd, body, body_nd;
    for (const auto& p : jit_model.named_parameters()) {
      if (!p.value.requires_grad()) continue;
      bool nd = p.value.dim() <= 1 || p.name.ends_with(".bias");
      if (p.name.starts_with("fc.")) (nd ? head_nd : head).push_back(p.value);
      else (nd ? body_nd : body).push_back(p.value);
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
void graft_param_groups(benchmark::State& state) {
  for (auto _ : state) {
    auto groups = graft::param_groups(*view).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").no_decay().build(base_options());
    auto opt = groups.make_optimizer<torch::optim::SGD>();
    benchmark::DoNotOptimize(opt.param_groups().data());
  }
}
// The same groups, the optimizer built as torch::optim::SGD(groups, defaults).
void graft_param_groups_sgd_ctor(benchmark::State& state) {
  for (auto _ : state) {
    auto groups = graft::param_groups(*view).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").no_decay().build(base_options());
    torch::optim::SGD opt(groups.groups(), base_options());
    benchmark::DoNotOptimize(opt.param_groups().data());
  }
}

// (5) The view, built once per model: its construction (destruction not timed), and the load
// it follows (the destruction of the loaded module not timed either).
void script_module_view(benchmark::State& state) {
  for (auto _ : state) {
    auto v = std::make_shared<graft::script_module>(jit_model);
    benchmark::DoNotOptimize(v.get());
    state.PauseTiming();
    v.reset();
    state.ResumeTiming();
  }
}
void jit_load(benchmark::State& state) {
  for (auto _ : state) {
    auto m = torch::jit::load(model_path);
    benchmark::DoNotOptimize(&m);
    state.PauseTiming();
    m = torch::jit::Module();
    state.ResumeTiming();
  }
}

BENCHMARK(hand_walk)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_walk)->Unit(benchmark::kMicrosecond);
BENCHMARK(hand_select)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_select)->Unit(benchmark::kMicrosecond);
BENCHMARK(hand_freeze)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_freeze)->Unit(benchmark::kMicrosecond);
BENCHMARK(hand_param_groups)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_param_groups)->Unit(benchmark::kMicrosecond);
BENCHMARK(graft_param_groups_sgd_ctor)->Unit(benchmark::kMicrosecond);
BENCHMARK(script_module_view)->Unit(benchmark::kMillisecond);
BENCHMARK(jit_load)->Unit(benchmark::kMillisecond);

// Prints as the console reporter does and keeps each benchmark's CPU time per iteration (the
// median when repetitions are asked for) for the ratio table.
class recording_reporter : public benchmark::ConsoleReporter {
public:
  std::map<std::string, double> times;  // microseconds
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      double us = r.GetAdjustedCPUTime() * 1e6 / benchmark::GetTimeUnitMultiplier(r.time_unit);
      if (r.run_type == Run::RT_Iteration && !times.contains(r.run_name.str())) times[r.run_name.str()] = us;
      else if (r.run_type == Run::RT_Aggregate && r.aggregate_name == "median") times[r.run_name.str()] = us;
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

// Single-quotes `s` for /bin/sh.
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Makes the scripted ResNet-152 with the system's Python when the file is missing.
bool ensure_model(const std::string& path) {
  if (std::filesystem::exists(path)) return true;
  const std::string python = "/usr/bin/python3";
  const std::string how = fmt::format(
      "  {} -c \"import sys, torch, torchvision; torch.jit.script(torchvision.models.resnet152()).save(sys.argv[1])\" {}\n"
      "(Debian: apt-get install python3-torchvision), or point GRAFT_BENCH_SCRIPT_MODEL at a TorchScript ResNet-152.\n",
      python, shell_quote(path));
  if (std::system(fmt::format("{} -c 'import torch, torchvision' >/dev/null 2>&1", python).c_str()) != 0) {
    fmt::print(stderr, "bench_script: '{}' does not exist, and {} cannot import torch and torchvision to make it. Make it with\n{}",
               path, python, how);
    return false;
  }
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) {
    fmt::print(stderr, "bench_script: cannot create the directory '{}': {}\n", dir.string(), ec.message());
    return false;
  }
  fmt::print("bench_script: '{}' does not exist; scripting torchvision's ResNet-152 (random weights) with {}\n", path, python);
  std::fflush(stdout);
  auto cmd = fmt::format("{} -c 'import sys, torch, torchvision; torch.jit.script(torchvision.models.resnet152()).save(sys.argv[1])' {}",
                         python, shell_quote(path));
  if (std::system(cmd.c_str()) != 0 || !std::filesystem::exists(path)) {
    fmt::print(stderr, "bench_script: {} failed to write '{}'. Make it with\n{}", python, path, how);
    return false;
  }
  return true;
}

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const char* env = std::getenv("GRAFT_BENCH_SCRIPT_MODEL");
  model_path = env && *env ? env : "build/bench-data/resnet152_script.pt";
  if (!ensure_model(model_path)) return 1;
  try {
    jit_model = torch::jit::load(model_path);
    view = std::make_shared<graft::script_module>(jit_model);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_script: cannot load '{}' as a TorchScript module: {}\n", model_path, e.what());
    return 1;
  }
  std::size_t params = 0;
  for (const auto& p : jit_model.named_parameters()) params += p.value.defined();
  fmt::print("bench_script: {} ({} parameters)\n", model_path, params);

  recording_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  struct comparison {
    const char* label;
    const char* graft;
    const char* hand;
    double goal;  // 0: no goal
  };
  const comparison comparisons[] = {
      {"walk / jit named_parameters()", "graft_walk", "hand_walk", 0.3},
      {"select(\"layer4.**\"_glob) / starts_with", "graft_select", "hand_select", 0.1},
      {"freeze + unfreeze(!\"fc.**\"_glob) / loop", "graft_freeze", "hand_freeze", 0.3},
      {"param groups + make_optimizer<SGD> / loop", "graft_param_groups", "hand_param_groups", 0.3},
      {"param groups + SGD(groups, defaults) / loop", "graft_param_groups_sgd_ctor", "hand_param_groups", 0},
  };
  auto& t = reporter.times;
  fmt::print("\n{:<46} {:>10} {:>10} {:>7}  {}\n", "graft / hand (scripted ResNet-152)", "graft us", "hand us", "ratio", "goal");
  for (const auto& c : comparisons) {
    if (!t.contains(c.graft) || !t.contains(c.hand)) continue;  // filtered out
    double ratio = t[c.graft] / t[c.hand];
    fmt::print("{:<46} {:>10.2f} {:>10.2f} {:>6.3f}x", c.label, t[c.graft], t[c.hand], ratio);
    if (c.goal > 0) fmt::print("  <= {:.1f}x {}", c.goal, ratio <= c.goal ? "met" : "MISSED");
    fmt::print("\n");
  }
  if (t.contains("script_module_view") && t.contains("jit_load"))
    fmt::print("view construction: graft::script_module {:.2f} ms, torch::jit::load {:.2f} ms ({:.3f}x the load; once per model)\n",
               t["script_module_view"] / 1e3, t["jit_load"] / 1e3, t["script_module_view"] / t["jit_load"]);
  return 0;
}
