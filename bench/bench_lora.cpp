// LoRA training on ResNet-50 (CPU, float32, a batch of 16 images 3x64x64): one step of
// forward + cross-entropy + backward + AdamW for graft's LoRA (rank 8, alpha 16, every Conv2d
// but not the head `fc`, which trains fully), for full fine-tuning of the same model, and for
// the LoRA a C++ user writes by hand (each conv computes base(x) + B(A(x))·scale with two small
// extra convs, as PEFT computes it); plus attach + merge on every Conv2d/Linear of a fresh
// ResNet-50; and the weight route alone (refresh() and its backward). DoRA's step against
// LoRA's on both routes, and, with --peft PYTHON, PEFT's own DoRA/LoRA ratio on the same
// ResNet-50 measured in the same run (bench/peft_lora_dora.py). Prints the ratios against the
// goals after the table.
//
// A custom main: each step benchmark runs --steps N steps (default 10; 1 in the ctest smoke run,
// --benchmark_min_time below 0.1 s) after 2 warm-up steps and one untimed step that measures
// memory. Peak memory: glibc's free memory is returned to the kernel (malloc_trim), VmRSS is read,
// the kernel's peak (VmHWM) is reset to it by writing "5" to /proc/self/clear_refs, the step
// runs, VmHWM is read again. Gradients are set to none at the end of every step (PyTorch's
// zero_grad(set_to_none=True)), so they are counted inside the step. glibc keeps freed memory for
// reuse, so the peaks include what it keeps; run with MALLOC_MMAP_THRESHOLD_=65536 to have every
// tensor mapped and unmapped on its own, and peaks close to the live tensors' bytes.
#include <malloc.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "resnet.hpp"

using namespace graft::literals;
namespace F = torch::nn::functional;

namespace {

// The batch: 16 images of 3x64x64 by default (--batch, --image to change it). Why not 8: with
// fewer than 16 images on one thread, libtorch 1.13 runs unstrided 1x1 convolutions through its
// im2col + BLAS fallback instead of oneDNN, 4x slower here (see bench/README.md).
std::int64_t batch = 16, image = 64;
constexpr std::int64_t classes = 1000, rank = 8;
constexpr double alpha = 16;

// ---- memory ----

// A field of /proc/self/status ("VmRSS", "VmHWM"), in bytes.
std::int64_t status_bytes(const std::string& field) {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with(field + ":")) return std::stoll(line.substr(field.size() + 1)) * 1024;
  return 0;
}
// The resident set once glibc has given its free memory back.
std::int64_t settled_rss() {
  malloc_trim(0);
  return status_bytes("VmRSS");
}
// Runs f and returns {the resident set before it, the peak resident set while it ran}.
template <class F>
std::pair<std::int64_t, std::int64_t> peak_during(F&& f) {
  auto before = settled_rss();
  { std::ofstream("/proc/self/clear_refs") << "5"; }  // VmHWM := VmRSS
  f();
  return {before, status_bytes("VmHWM")};
}

// ---- the step ----

struct batch_data {
  torch::Tensor x, y;
};
const batch_data& data() {
  static batch_data d = [] {
    torch::manual_seed(1);
    return batch_data{torch::randn({batch, 3, image, image}), torch::randint(0, classes, {batch}, torch::kLong)};
  }();
  return d;
}

auto adamw_options() { return torch::optim::AdamWOptions(1e-4).weight_decay(1e-2); }

// zero_grad(set_to_none=True): libtorch 1.13's zero_grad() keeps the gradients and zeroes them.
void drop_grads(torch::optim::Optimizer& opt) {
  for (auto& g : opt.param_groups())
    for (auto& p : g.params()) p.mutable_grad() = torch::Tensor();
}

// Bytes of every AdamW state tensor (exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad).
std::int64_t adamw_state_bytes(torch::optim::AdamW& opt) {
  std::int64_t n = 0;
  for (auto& [key, s] : opt.state()) {
    auto& st = static_cast<torch::optim::AdamWParamState&>(*s);
    for (const auto* t : {&st.exp_avg(), &st.exp_avg_sq(), &st.max_exp_avg_sq()})
      if (t->defined()) n += t->numel() * static_cast<std::int64_t>(t->element_size());
  }
  return n;
}

std::int64_t trainable_elements(const std::vector<torch::Tensor>& params) {
  std::int64_t n = 0;
  for (auto& p : params) n += p.numel();
  return n;
}

struct step_result {
  double step_peak = 0;        // bytes: peak during one step over the resident set before it
  double over_model = 0;       // bytes: peak during one step over the bare model's resident set
  double optimizer_state = 0;  // bytes of AdamW state after the warm-up steps
  std::int64_t trainable = 0;  // trainable elements
};
std::map<std::string, step_result> results;

// Warm-up, one measured step, then the timed steps; `model_rss` is the resident set after the
// model was built, before anything else (adapters, optimizer) was added.
template <class Step>
void run_steps(benchmark::State& state, const std::string& name, Step step, torch::optim::AdamW& opt,
               const std::vector<torch::Tensor>& trainable, std::int64_t model_rss) {
  for (int i = 0; i < 2; ++i) step();
  auto [before, peak] = peak_during(step);
  step_result r{double(peak - before), double(peak - model_rss), double(adamw_state_bytes(opt)), trainable_elements(trainable)};
  for (auto _ : state) step();
  results[name] = r;
  const double mib = 1024.0 * 1024.0;
  state.counters["step_peak_MiB"] = r.step_peak / mib;
  state.counters["over_model_MiB"] = r.over_model / mib;
  state.counters["optim_state_MiB"] = r.optimizer_state / mib;
}

// ---- (a) graft LoRA ----

// Every Conv2d and Linear but the head.
auto lora_targets() { return ("**.weight"_glob & graft::lora::wrappable) - "fc.**"_glob; }
graft::lora::options lora_options(bool dora = false) { return {.r = rank, .alpha = alpha, .dora = dora}; }

// One LoRA training step with graft on `net`: attach (the head fc trained whole), AdamW over
// the adapters, refresh() before each forward (a no-op for graft's own layer types).
template <class Net>
void graft_step(benchmark::State& state, const std::string& name, Net net, bool dora = false) {
  net->train();
  auto model_rss = settled_rss();
  auto ad = graft::lora::attach(*net, lora_targets(), lora_options(dora), "fc.**"_glob);
  auto params = ad.parameters();
  torch::optim::AdamW opt(params, adamw_options());
  auto& d = data();
  auto step = [&] {
    ad.refresh();
    F::cross_entropy(net->forward(d.x), d.y).backward();
    opt.step();
    drop_grads(opt);
  };
  run_steps(state, name, step, opt, params, model_rss);
}

void graft_lora_step(benchmark::State& state) {
  torch::manual_seed(0);
  graft_step(state, "graft LoRA", models::resnet(50, classes));
}

// The weight route alone, as in a LoRA step: refresh() (W0 + scale·B·A for each of the 53
// layers), and the backward from the weights' gradients (random here) to A and B.
void graft_refresh(benchmark::State& state, bool backward) {
  torch::manual_seed(0);
  auto net = models::resnet(50, classes);
  auto ad = graft::lora::attach(*net, lora_targets(), lora_options(), "fc.**"_glob);
  auto params = ad.parameters();
  std::vector<torch::Tensor> grads;
  for (auto& l : ad.layers()) grads.push_back(torch::randn_like(l.base));
  for (auto _ : state) {
    ad.refresh();
    if (!backward) continue;
    std::vector<torch::Tensor> weights;
    for (auto& l : ad.layers()) weights.push_back(*l.weight);
    torch::autograd::backward(weights, grads);
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
  }
}

// ---- (b) full fine-tuning ----

void full_ft_step(benchmark::State& state) {
  torch::manual_seed(0);
  auto net = models::resnet(50, classes);
  net->train();
  auto model_rss = settled_rss();
  auto params = net->parameters();
  torch::optim::AdamW opt(params, adamw_options());
  auto& d = data();
  auto step = [&] {
    F::cross_entropy(net->forward(d.x), d.y).backward();
    opt.step();
    drop_grads(opt);
  };
  run_steps(state, "full fine-tuning", step, opt, params, model_rss);
}

// ---- (c) the LoRA a C++ user writes by hand ----
// libtorch has no forward hooks, so the user rebuilds the model with a LoRA conv in place of
// each Conv2d: the frozen base conv, A (the base's kernel, stride and padding, r output
// channels) and B (1x1, r -> out), output base(x) + B(A(x))·scale, as PEFT's Conv2d computes
// it. A ResNet-50 with torchvision's shapes; its only Linear is the head, which is not wrapped
// (it trains fully), so no LoRA Linear is needed.
namespace hand {
namespace nn = torch::nn;

struct LoraConv2dImpl : nn::Module {
  LoraConv2dImpl(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride)
      : scale(alpha / static_cast<double>(rank)) {
    base = register_module("base", nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false)));
    lora_A = register_module("lora_A", nn::Conv2d(nn::Conv2dOptions(in, rank, k).stride(stride).padding(k / 2).bias(false)));
    lora_B = register_module("lora_B", nn::Conv2d(nn::Conv2dOptions(rank, out, 1).bias(false)));
    base->weight.set_requires_grad(false);
    torch::NoGradGuard no_grad;
    lora_B->weight.zero_();  // A keeps Conv2d's Kaiming-uniform init, as PEFT's
  }
  torch::Tensor forward(const torch::Tensor& x) { return base(x) + lora_B(lora_A(x)) * scale; }
  nn::Conv2d base{nullptr}, lora_A{nullptr}, lora_B{nullptr};
  double scale;
};
TORCH_MODULE(LoraConv2d);

// The ResNet-50 below takes its convolution type: the hand-written LoraConv2d, or graft's own
// graft::lora::Conv2d (a torch::nn::Conv2d until lora::attach() wraps it).
LoraConv2d make_conv(LoraConv2d*, std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride) {
  return LoraConv2d(in, out, k, stride);
}
graft::lora::Conv2d make_conv(graft::lora::Conv2d*, std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride) {
  return graft::lora::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(false));
}
template <class Conv>
Conv conv(std::int64_t in, std::int64_t out, std::int64_t k, std::int64_t stride) {
  return make_conv(static_cast<Conv*>(nullptr), in, out, k, stride);
}

template <class Conv>
struct Bottleneck : nn::Module {
  Bottleneck(std::int64_t in, std::int64_t planes, std::int64_t stride) {
    conv1 = register_module("conv1", conv<Conv>(in, planes, 1, 1));
    bn1 = register_module("bn1", nn::BatchNorm2d(planes));
    conv2 = register_module("conv2", conv<Conv>(planes, planes, 3, stride));
    bn2 = register_module("bn2", nn::BatchNorm2d(planes));
    conv3 = register_module("conv3", conv<Conv>(planes, planes * 4, 1, 1));
    bn3 = register_module("bn3", nn::BatchNorm2d(planes * 4));
    if (stride != 1 || in != planes * 4) {
      down = register_module("down", conv<Conv>(in, planes * 4, 1, stride));
      down_bn = register_module("down_bn", nn::BatchNorm2d(planes * 4));
    }
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto identity = down ? down_bn(down(x)) : x;
    auto y = torch::relu(bn1(conv1(x)));
    y = torch::relu(bn2(conv2(y)));
    y = bn3(conv3(y));
    return torch::relu(y + identity);
  }
  Conv conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, down{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr}, down_bn{nullptr};
};

template <class Conv>
struct ResNet50 : nn::Module {
  ResNet50() {
    conv1 = register_module("conv1", conv<Conv>(3, 64, 7, 2));
    bn1 = register_module("bn1", nn::BatchNorm2d(64));
    std::int64_t in = 64;
    const std::int64_t blocks[] = {3, 4, 6, 3};
    for (int i = 0; i < 4; ++i) {
      nn::Sequential layer;
      for (std::int64_t b = 0; b < blocks[i]; ++b) {
        layer->push_back(std::make_shared<Bottleneck<Conv>>(in, 64 << i, b == 0 && i > 0 ? 2 : 1));
        in = (64 << i) * 4;
      }
      layers.push_back(register_module("layer" + std::to_string(i + 1), layer));
    }
    fc = register_module("fc", nn::Linear(in, classes));
    // Trainable: the adapters and the head.
    for (auto& p : named_parameters())
      p.value().set_requires_grad(p.key().find("lora_") != std::string::npos || p.key().starts_with("fc."));
  }

  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn1(conv1(x)));
    x = torch::max_pool2d(x, 3, 2, 1);
    for (auto& l : layers) x = l->forward(x);
    return fc(torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1));
  }
  Conv conv1{nullptr};
  nn::BatchNorm2d bn1{nullptr};
  std::vector<nn::Sequential> layers;
  nn::Linear fc{nullptr};
};
} // namespace hand

void hand_lora_step(benchmark::State& state) {
  torch::manual_seed(0);
  // The bare model's resident set: what the process would hold with the same ResNet-50 without
  // adapters (built, measured and dropped), so that the adapters count as what LoRA adds.
  auto empty_rss = settled_rss();
  std::int64_t bare_bytes;
  {
    auto bare = models::resnet(50, classes);
    bare_bytes = settled_rss() - empty_rss;
  }
  auto model_rss = settled_rss() + bare_bytes;
  auto net = std::make_shared<hand::ResNet50<hand::LoraConv2d>>();
  net->train();
  std::vector<torch::Tensor> params;
  for (auto& p : net->parameters())
    if (p.requires_grad()) params.push_back(p);
  torch::optim::AdamW opt(params, adamw_options());
  auto& d = data();
  auto step = [&] {
    F::cross_entropy(net->forward(d.x), d.y).backward();
    opt.step();
    drop_grads(opt);
  };
  run_steps(state, "hand-written LoRA", step, opt, params, model_rss);
}

// ---- (d) graft LoRA on a model declared with graft's own layer types ----
// The same ResNet-50 with graft::lora::Conv2d in place of torch::nn::Conv2d (what a user who
// can change the model's code writes): attach() wraps them, and their forward() computes
// base(x) + B(A(x))·scale on the activations.
void graft_own_layers_step(benchmark::State& state) {
  torch::manual_seed(0);
  graft_step(state, "graft LoRA, own layers", std::make_shared<hand::ResNet50<graft::lora::Conv2d>>());
}

// ---- (e) DoRA: the same steps with a magnitude vector per layer ----
void graft_dora_step(benchmark::State& state) {
  torch::manual_seed(0);
  graft_step(state, "graft DoRA", models::resnet(50, classes), true);
}
void graft_own_layers_dora_step(benchmark::State& state) {
  torch::manual_seed(0);
  graft_step(state, "graft DoRA, own layers", std::make_shared<hand::ResNet50<graft::lora::Conv2d>>(), true);
}

// PEFT's LoRA and DoRA steps on the same ResNet-50 (bench/peft_lora_dora.py), in ms, or {}
// when the script fails.
std::map<std::string, double> peft_steps(const std::string& python, int steps) {
  auto cmd = fmt::format("'{}' '{}/peft_lora_dora.py' {} {} {} 2>&1", python, GRAFT_BENCH_SOURCE_DIR, steps, batch, image);
  std::map<std::string, double> out;
  std::string text;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[512];
    while (fgets(buf, sizeof buf, p)) text += buf;
    if (pclose(p) != 0) {
      fmt::print("PEFT's steps failed ({}):\n{}\n", cmd, text);
      return {};
    }
  }
  std::istringstream lines(text);
  std::string key;
  double ms = 0;
  while (lines >> key >> ms) out[key] = ms;
  return out;
}

// ---- attach + merge ----

double attach_merge_layers = 0;

// Adapters on every Conv2d and Linear of a fresh ResNet-50 (54 layers, the head too), then
// merged; building and destroying the model are not timed.
void graft_attach_merge(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    auto net = models::resnet(50, classes);
    std::optional<graft::lora::adapters> ad;
    state.ResumeTiming();
    ad.emplace(graft::lora::attach(*net, "**.weight"_glob & graft::lora::wrappable, lora_options()));
    ad->merge();
    state.PauseTiming();
    attach_merge_layers = static_cast<double>(ad->layers().size());
    ad.reset();
    net = nullptr;
    state.ResumeTiming();
  }
  state.counters["layers"] = attach_merge_layers;
}

// Keeps each benchmark's CPU time per iteration, to print the ratios after the run.
class ratio_reporter : public benchmark::ConsoleReporter {
public:
  ratio_reporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    for (auto& r : runs)
      if (r.run_type == Run::RT_Iteration && r.iterations > 0)
        times[r.run_name.function_name] = r.cpu_accumulated_time / static_cast<double>(r.iterations);
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> times;
};

} // namespace

int main(int argc, char** argv) {
  int steps = 10;
  bool smoke = false;
  std::string peft_python;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--peft" && i + 1 < argc) {
      peft_python = argv[++i];
      continue;
    }
    if ((a == "--steps" || a == "--batch" || a == "--image") && i + 1 < argc) {
      int v = std::stoi(argv[++i]);
      if (a == "--steps") steps = v;
      else if (a == "--batch") batch = v;
      else image = v;
      continue;
    }
    if (a.starts_with("--benchmark_min_time=") && std::stod(a.substr(21)) < 0.1) smoke = true;
    args.push_back(argv[i]);
  }
  if (smoke) steps = 1;
  int n = static_cast<int>(args.size());
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;

  benchmark::RegisterBenchmark("step/graft_lora", graft_lora_step)->Iterations(steps)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("step/graft_own_layers", graft_own_layers_step)->Iterations(steps)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("step/hand_lora", hand_lora_step)->Iterations(steps)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("step/full_ft", full_ft_step)->Iterations(steps)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("step/graft_dora", graft_dora_step)->Iterations(steps)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("step/graft_own_layers_dora", graft_own_layers_dora_step)->Iterations(steps)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("weights/graft_refresh", graft_refresh, false)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("weights/graft_refresh_and_backward", graft_refresh, true)->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("attach_merge/every_layer", graft_attach_merge)->Unit(benchmark::kMillisecond);

  fmt::print("ResNet-50, {} classes; batch {}x3x{}x{} float32 on CPU, libtorch {}, {} torch thread{}; LoRA r={} alpha={}; "
             "AdamW; {} timed steps each\n",
             classes, batch, image, image, TORCH_VERSION, torch::get_num_threads(), torch::get_num_threads() == 1 ? "" : "s", rank, alpha, steps);
  const char* threshold = std::getenv("MALLOC_MMAP_THRESHOLD_");
  fmt::print("glibc malloc: {}\n", threshold ? fmt::format("MALLOC_MMAP_THRESHOLD_={} (peaks close to the live tensors' bytes; "
                                                            "steps slower, do not compare their times)", threshold)
                                              : std::string("defaults (peaks include memory the allocator keeps)"));
  ratio_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);

  auto& t = reporter.times;
  const double mib = 1024.0 * 1024.0;
  auto have = [&](const char* bench, const char* name) { return t.count(bench) && results.count(name); };
  fmt::print("\n| | step (CPU) | peak during the step | peak over the bare model | AdamW state | trainable elements |\n"
             "|---|---:|---:|---:|---:|---:|\n");
  for (auto [bench, name] : {std::pair{"step/graft_lora", "graft LoRA"}, std::pair{"step/graft_own_layers", "graft LoRA, own layers"},
                             std::pair{"step/hand_lora", "hand-written LoRA"},
                             std::pair{"step/full_ft", "full fine-tuning"}, std::pair{"step/graft_dora", "graft DoRA"},
                             std::pair{"step/graft_own_layers_dora", "graft DoRA, own layers"}})
    if (have(bench, name)) {
      auto& r = results[name];
      fmt::print("| {} | {:.0f} ms | {:.1f} MiB | {:.1f} MiB | {:.2f} MiB ({} B) | {} |\n", name, t[bench] * 1e3, r.step_peak / mib,
                 r.over_model / mib, r.optimizer_state / mib, static_cast<std::int64_t>(r.optimizer_state), r.trainable);
    }
  for (auto [bench, what] : {std::pair{"weights/graft_refresh", "refresh() alone"},
                             std::pair{"weights/graft_refresh_and_backward", "refresh() + its backward to A and B"}})
    if (t.count(bench) && t.count("step/graft_lora"))
      fmt::print("| graft LoRA: {} | {:.0f} ms ({:.0f}% of its step) | | | | |\n", what, t[bench] * 1e3,
                 100.0 * t[bench] / t["step/graft_lora"]);
  if (t.count("attach_merge/every_layer"))
    fmt::print("| attach + merge, {:.0f} layers | {:.1f} ms | | | | |\n", attach_merge_layers, t["attach_merge/every_layer"] * 1e3);

  auto verdict = [](bool met) { return met ? "met" : "NOT met"; };
  fmt::print("\n");
  for (auto [bench, name] : {std::pair{"step/graft_lora", "graft LoRA"}, std::pair{"step/graft_own_layers", "graft LoRA, own layers"}}) {
    if (have(bench, name) && have("step/hand_lora", "hand-written LoRA")) {
      double ratio = t[bench] / t["step/hand_lora"];
      fmt::print("{}: step time / hand-written = {:.2f}x (goal <= 1.1x: {})\n", name, ratio, verdict(ratio <= 1.1));
      if (results[name].trainable != results["hand-written LoRA"].trainable)
        fmt::print("  (the trainable sets differ: {} against {} elements)\n", results[name].trainable,
                   results["hand-written LoRA"].trainable);
    }
    if (results.count(name) && results.count("full fine-tuning")) {
      auto& l = results[name];
      auto& f = results["full fine-tuning"];
      double ratio = l.optimizer_state / f.optimizer_state;
      // The head alone: fc's weight and bias, two AdamW moments each, float32.
      double head = 2.0 * 4.0 * static_cast<double>(2048 * classes + classes);
      double adapters = (l.optimizer_state - head) / f.optimizer_state;
      fmt::print("{}: AdamW state / full fine-tuning = {:.4f}x; without the head fc (modules_to_save, {:.2f} MiB): {:.4f}x "
                 "(goal <= 0.05x: {})\n",
                 name, ratio, head / mib, adapters, verdict(adapters <= 0.05));
      fmt::print("{}: peak during a step / full fine-tuning = {:.2f}x (goal < 1x: {}); peak over the bare model: {:.2f}x\n", name,
                 l.step_peak / f.step_peak, verdict(l.step_peak < f.step_peak), l.over_model / f.over_model);
    }
  }
  if (t.count("attach_merge/every_layer") && t.count("step/graft_lora")) {
    double ratio = t["attach_merge/every_layer"] / t["step/graft_lora"];
    fmt::print("attach + merge / one LoRA step = {:.2f}x (goal <= 0.3x: {})\n", ratio, verdict(ratio <= 0.3));
  }
  // DoRA against LoRA: graft on both routes, and PEFT's own ratio from the same run.
  std::map<std::string, double> peft;
  if (!peft_python.empty()) peft = peft_steps(peft_python, steps);
  const char* peft_note = peft.empty() ? "" : " (PEFT, same run, same model: {:.0f} ms / {:.0f} ms = {:.2f}x)";
  for (auto [dora, lora] : {std::pair{"step/graft_own_layers_dora", "step/graft_own_layers"}, std::pair{"step/graft_dora", "step/graft_lora"}})
    if (t.count(dora) && t.count(lora)) {
      fmt::print("{}: DoRA step / LoRA step = {:.2f}x", dora, t[dora] / t[lora]);
      if (!peft.empty())
        fmt::print(fmt::runtime(peft_note), peft["peft_dora_ms"], peft["peft_lora_ms"], peft["peft_dora_ms"] / peft["peft_lora_ms"]);
      fmt::print("\n");
    }
  benchmark::Shutdown();
}
