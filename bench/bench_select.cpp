// Walking and selecting: graft's walk and selectors against the hand-written libtorch way
// (named_parameters() plus a string test), on ResNet-50 and ResNet-152. After the benchmarks
// run, prints a table of graft/baseline time ratios next to their goals (bench/README.md).

#include <benchmark/benchmark.h>

#include <cstdio>
#include <map>
#include <regex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <graft/select.hpp>
#include <graft/walk.hpp>

#include "resnet.hpp"

using namespace graft::literals;

namespace {

// Models are built once per depth: construction (random init of 60M weights) is not measured.
const torch::nn::Module& model(int depth) {
  static std::map<int, models::ResNet> cache;
  auto it = cache.find(depth);
  if (it == cache.end()) it = cache.emplace(depth, models::resnet(depth)).first;
  return *it->second;
}

// The regexes of the comparison, written as PEFT users write target_modules: layer4's
// convolution weights (a literal prefix, so graft's walk prunes), and every block's second
// convolution (a leading ".*": nothing can be pruned, every path goes through RE2).
constexpr const char* layer4_convs = R"(layer4\.\d+\.conv\d\.weight)";
constexpr const char* any_conv2 = R"(.*\.conv2\.weight)";

// (a) Every parameter with its name: what a libtorch user writes today...
void named_parameters_loop(benchmark::State& state, int depth) {
  const auto& m = model(depth);
  for (auto _ : state)
    for (const auto& p : m.named_parameters()) {
      benchmark::DoNotOptimize(p.key().data());
      benchmark::DoNotOptimize(p.value().unsafeGetTensorImpl());
    }
}
// ...and graft's walk, touching the same path and tensor.
void graft_walk(benchmark::State& state, int depth) {
  const auto& m = model(depth);
  for (auto _ : state)
    for (auto t : graft::walk(m)) {
      benchmark::DoNotOptimize(t.path().data());
      benchmark::DoNotOptimize(t.tensor().unsafeGetTensorImpl());
    }
}

// Both sides collect what they select as (path, tensor) pairs that outlive the loop.
using collected = std::vector<std::pair<std::string, torch::Tensor>>;

// (b) One subtree: a prefix test on every name...
void named_parameters_prefix(benchmark::State& state, int depth) {
  const auto& m = model(depth);
  for (auto _ : state) {
    collected out;
    for (const auto& p : m.named_parameters())
      if (p.key().starts_with("layer4.")) out.emplace_back(p.key(), p.value());
    benchmark::DoNotOptimize(out.data());
  }
}
// ...against a glob, whose walk skips the subtrees that cannot match.
void graft_select_glob(benchmark::State& state, int depth) {
  const auto& m = model(depth);
  for (auto _ : state) {
    auto s = graft::select(m, "layer4.**"_glob);
    benchmark::DoNotOptimize(&s);
  }
}

// (c) A regex on every name, std::regex_match (compiled once, outside the loop)...
void named_parameters_std_regex(benchmark::State& state, int depth, const char* pattern) {
  const auto& m = model(depth);
  const std::regex re(pattern);
  for (auto _ : state) {
    collected out;
    for (const auto& p : m.named_parameters())
      if (std::regex_match(p.key(), re)) out.emplace_back(p.key(), p.value());
    benchmark::DoNotOptimize(out.data());
  }
}
// ...against graft::regex (RE2, also compiled once).
void graft_select_regex(benchmark::State& state, int depth, const char* pattern) {
  const auto& m = model(depth);
  const graft::regex re(pattern);
  for (auto _ : state) {
    auto s = graft::select(m, re);
    benchmark::DoNotOptimize(&s);
  }
}

// One comparison of the ratio table: graft's benchmark over the baseline's, against a goal.
struct comparison {
  const char* label;
  const char* baseline;
  const char* graft;
  double goal;  // 0: reported, no goal
};
constexpr comparison comparisons[] = {
    {"walk / named_parameters()", "named_parameters_loop", "graft_walk", 0.3},
    {"select(\"layer4.**\"_glob) / starts_with", "named_parameters_prefix", "graft_select_glob", 0.1},
    {"select(graft::regex) / std::regex_match", "named_parameters_std_regex", "graft_select_regex", 0.3},
    {"same, regex without a literal prefix", "named_parameters_std_regex_unprefixed",
     "graft_select_regex_unprefixed", 0},
};
constexpr std::pair<int, const char*> depths[] = {{50, "resnet50"}, {152, "resnet152"}};

void register_all() {
  using fn = void (*)(benchmark::State&, int);
  const std::pair<const char*, fn> all[] = {
      {"named_parameters_loop", named_parameters_loop},   {"graft_walk", graft_walk},
      {"named_parameters_prefix", named_parameters_prefix}, {"graft_select_glob", graft_select_glob},
  };
  using regex_fn = void (*)(benchmark::State&, int, const char*);
  const std::tuple<const char*, regex_fn, const char*> regexes[] = {
      {"named_parameters_std_regex", named_parameters_std_regex, layer4_convs},
      {"graft_select_regex", graft_select_regex, layer4_convs},
      {"named_parameters_std_regex_unprefixed", named_parameters_std_regex, any_conv2},
      {"graft_select_regex_unprefixed", graft_select_regex, any_conv2},
  };
  for (auto [depth, model_name] : depths) {
    auto full = [&](const char* name) { return std::string(name) + "/" + model_name; };
    for (auto [name, f] : all) benchmark::RegisterBenchmark(full(name).c_str(), f, depth)->Unit(benchmark::kMicrosecond);
    for (auto [name, f, pattern] : regexes)
      benchmark::RegisterBenchmark(full(name).c_str(), f, depth, pattern)->Unit(benchmark::kMicrosecond);
  }
}

// Prints as the console reporter does and keeps each benchmark's CPU time per iteration (the
// median when repetitions are asked for) for the ratio table.
class recording_reporter : public benchmark::ConsoleReporter {
public:
  std::map<std::string, double> times;
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.run_type == Run::RT_Iteration && !times.contains(r.run_name.str()))
        times[r.run_name.str()] = r.GetAdjustedCPUTime();
      else if (r.run_type == Run::RT_Aggregate && r.aggregate_name == "median")
        times[r.run_name.str()] = r.GetAdjustedCPUTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }
};

} // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  recording_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  std::printf("\n%-42s %-10s %12s %12s %7s %6s\n", "graft / baseline", "model", "baseline us", "graft us",
              "ratio", "goal");
  for (const auto& c : comparisons)
    for (auto [depth, model_name] : depths) {
      auto b = reporter.times.find(std::string(c.baseline) + "/" + model_name);
      auto g = reporter.times.find(std::string(c.graft) + "/" + model_name);
      if (b == reporter.times.end() || g == reporter.times.end()) continue;  // filtered out
      double ratio = g->second / b->second;
      std::printf("%-42s %-10s %12.2f %12.2f %7.3f", c.label, model_name, b->second, g->second, ratio);
      if (c.goal > 0)
        std::printf("  <=%.1f %s", c.goal, ratio <= c.goal ? "met" : "MISSED");
      std::printf("\n");
    }
  return 0;
}
