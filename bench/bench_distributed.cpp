// Gradient averaging across 2 local processes (Gloo over loopback): graft's bucketed
// gradient_averager against the per-tensor allreduce loop a user would write, on a
// ResNet-50-sized trainable set, and on the same model with only layer4 and the head trainable.
// A custom main (the ranks are processes): run it as is; it starts its own ranks.
// --benchmark_min_time=T below 0.1 s (the ctest smoke run) times one step of each.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/distributed.hpp>
#include <graft/graft.hpp>

#include "resnet.hpp"

using namespace graft::literals;
namespace dist = graft::dist;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median seconds per call of f over `iters` calls after one warm-up, ranks started together.
template <class F>
double time_steps(c10d::ProcessGroup& pg, int iters, F&& f) {
  std::vector<double> t;
  for (int i = 0; i <= iters; ++i) {
    pg.barrier()->wait();
    auto t0 = std::chrono::steady_clock::now();
    f();
    auto dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i > 0) t.push_back(dt);
  }
  return median(t);
}

void fill_grads(models::ResNet& net, int rank) {
  torch::manual_seed(rank);
  for (auto& p : net->parameters())
    if (p.requires_grad()) p.mutable_grad() = torch::randn_like(p);
}

void compare(c10d::ProcessGroup& pg, const dist::process_group& handle, models::ResNet& net, const char* what, int iters) {
  int rank = pg.getRank();
  double world = pg.getSize();
  std::vector<torch::Tensor> trainable;
  std::int64_t bytes = 0;
  for (auto& p : net->parameters())
    if (p.requires_grad()) trainable.push_back(p), bytes += p.numel() * 4;

  fill_grads(net, rank);
  std::int64_t plain_bytes = 0, plain_calls = 0;
  double plain = time_steps(pg, iters, [&] {
    for (auto& p : trainable) {  // what a user writes without graft
      std::vector<torch::Tensor> g{p.grad()};
      pg.allreduce(g)->wait();
      p.grad().div_(world);
      plain_bytes += p.numel() * 4, ++plain_calls;
    }
  });
  fill_grads(net, rank);
  dist::gradient_averager avg(handle, *net);
  double bucketed = time_steps(pg, iters, [&] { avg.average(); });
  auto s = avg.stats();
  if (rank != 0) return;
  fmt::print("{:<34} {:>8.1f} MB  {:>4} tensors\n", what, bytes / 1e6, trainable.size());
  fmt::print("  per-tensor allreduce  {:>8.2f} ms/step  {:>4} calls/step  {:>8.1f} MB/step\n", plain * 1e3,
             plain_calls / (iters + 1), plain_bytes / (iters + 1) / 1e6);
  fmt::print("  gradient_averager     {:>8.2f} ms/step  {:>4} calls/step  {:>8.1f} MB/step\n", bucketed * 1e3,
             s.calls / s.steps, s.bytes / s.steps / 1e6);
  fmt::print("  ratio graft / plain   {:>8.2f}x    bytes moved = trainable bytes: {}\n", bucketed / plain,
             s.bytes / s.steps == bytes ? "yes" : "NO");
}

int run_rank(int iters) {
  auto pg = dist::gloo_group_from_env({.timeout = std::chrono::seconds(120)});
  torch::manual_seed(0);
  auto net = models::resnet(50);
  compare(*pg, pg, net, "ResNet-50, all trainable", iters);
  graft::freeze(*net, (!"layer4.**"_glob) & (!"fc.*"_glob));
  for (auto& p : net->parameters())
    if (!p.requires_grad()) p.mutable_grad() = torch::Tensor();
  compare(*pg, pg, net, "ResNet-50, layer4 + fc trainable", iters);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  int iters = 10;
  std::vector<std::string> args{"/proc/self/exe"};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    args.push_back(a);
    if (a.starts_with("--benchmark_min_time=") && std::stod(a.substr(21)) < 0.1) iters = 1;
  }
  if (dist::rendezvous_from_env()) return run_rank(iters);
  fmt::print("gradient averaging, 2 processes, Gloo over 127.0.0.1, median of {} steps\n", iters);
  auto r = dist::launch_local(args, {.nproc = 2, .timeout = std::chrono::minutes(10)});
  return r.exit_code;
}
