// Tutorial 7: the transfer recipe of tutorials 2 and 3 — frozen stem, frozen BatchNorm
// statistics, the new head at 10x the learning rate — run by N processes over PyTorch's own
// c10d (Gloo on CPU, over loopback), each process training on its shard of every batch.
//
//   07_distributed_finetune --nproc 2      starts 2 ranks of itself and waits for them
//   torchrun --nproc_per_node 2 --no-python ./07_distributed_finetune     does the same
//
// A process started without RANK in its environment is the launcher; with it, it is a rank.
#include <cstdlib>
#include <filesystem>
#include <fstream>
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
constexpr std::int64_t global_batch = 16;
constexpr int steps = 40;

// Four classes of 32x32 images, each a different mean colour plus noise; step `s`'s global
// batch is the same on every rank, and each rank takes its own rows of it.
std::pair<torch::Tensor, torch::Tensor> batch(int s, std::int64_t n = global_batch) {
  auto g = at::make_generator<at::CPUGeneratorImpl>(1000 + s);
  auto y = torch::randint(0, 4, {n}, g, torch::kLong);
  auto means = torch::tensor({{0.5, -0.5, 0.0}, {-0.5, 0.5, 0.0}, {0.0, 0.0, 0.5}, {0.0, 0.0, -0.5}});
  auto x = means.index_select(0, y).view({n, 3, 1, 1}) + 0.5 * torch::randn({n, 3, 32, 32}, g);
  return {x, y};
}

int run_rank() {
  // 1. Join the group: rank 0 serves a TCP store at MASTER_ADDR:MASTER_PORT. Collectives give
  //    up after the timeout, so a crashed rank makes the others fail instead of hang.
  auto pg = dist::gloo_group_from_env({.timeout = std::chrono::seconds(30)});
  int rank = pg->getRank(), world = pg->getSize();
  auto say = [rank]<class... A>(fmt::format_string<A...> f, A&&... a) {  // rank 0 speaks for all
    if (rank == 0) fmt::print(f, std::forward<A>(a)...);
  };
  if (global_batch % world != 0) throw graft::option_error(fmt::format("{} ranks cannot split a batch of {}", world, global_batch));

  // 2. Every rank builds the model; only rank 0 reads the checkpoint, then shares it. The
  //    file has Python DDP's "module." keys; load() strips them.
  torch::manual_seed(rank);  // deliberately different: the checkpoint must make them equal
  auto net = models::resnet(18, 4);
  auto report = dist::load(pg, *net, "pretrained.pt");
  if (report) say("rank 0 loaded {} tensors from pretrained.pt and shared them\n", report->loaded.size());
  dist::verify_identical(pg, *net);
  say("all {} ranks hold identical weights\n", world);

  // 3. The recipe, identical on every rank.
  graft::freeze(*net, "conv1.*"_glob | "bn1.*"_glob | "layer1.**"_glob);
  graft::freeze_norm_stats(*net, graft::of_type<torch::nn::BatchNorm2dImpl>);
  graft::train(*net);
  auto base = torch::optim::SGDOptions(0.005).momentum(0.9);
  auto groups = graft::param_groups(*net).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").build(base);
  auto opt = groups.make_optimizer<torch::optim::SGD>();

  // 4. Average exactly the trainable gradients; the selection is checked to agree on all ranks.
  dist::gradient_averager avg(pg, *net, graft::trainable, {.overlap = true});
  say("averaging {} trainable tensors ({:.1f} MB) in {} buckets per step\n", avg.tensors(),
      avg.bytes_per_step() / 1e6, avg.buckets());

  auto shard = global_batch / world;
  for (int s = 0; s < steps; ++s) {
    auto [x, y] = batch(s);
    opt.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x.narrow(0, rank * shard, shard)),
                                                     y.narrow(0, rank * shard, shard));
    loss.backward();
    avg.average();
    opt.step();
    // The global batch's loss: the mean of the ranks' shard losses, via c10d directly.
    std::vector<torch::Tensor> l{loss.detach().reshape({1})};
    pg->allreduce(l)->wait();
    if ((s + 1) % 5 == 0) say("step {} loss {:.4f}\n", s + 1, l[0].item<double>() / world);
  }

  // 5. Still identical everywhere; one writer saves, atomically, with DDP's keys so Python's
  //    DDP-wrapped model can load_state_dict it as is.
  dist::verify_identical(pg, *net);
  dist::save(pg, *net, "finetuned.pt", {.key_prefix = "module."});
  auto saved = dist::read_checkpoint("finetuned.pt");
  say("rank 0 wrote finetuned.pt: {} tensors, first key '{}'\n", saved.size(), saved.entries().front().key);

  net->eval();
  torch::NoGradGuard no_grad;
  auto [x, y] = batch(99, 256);
  auto acc = net->forward(x).argmax(1).eq(y).to(torch::kFloat).mean().item<double>();
  say("held-out accuracy {:.2f}\n", acc);
  return 0;
}

int launch(int nproc, const char* self) {
  // A "pretrained" model, saved as Python DDP would: every key under "module.".
  torch::manual_seed(0);
  auto pretrained = models::resnet(18, 4);
  graft::from(*pretrained) | graft::add_prefix("module.") | graft::save("pretrained.pt");

  fmt::print("launching {} ranks on 127.0.0.1\n", nproc);
  auto exe = std::filesystem::canonical(self).string();
  auto r = dist::launch_local({exe}, {.nproc = nproc, .timeout = std::chrono::minutes(10)});
  if (r.exit_code != 0) {
    fmt::print(stderr, "rank {} failed (exit {}){}\n", r.failed_rank, r.exit_code, r.timed_out ? ", timed out" : "");
    return 1;
  }
  fmt::print("all {} ranks finished\n", nproc);
  return 0;
}
} // namespace

int main(int argc, char** argv) {
  if (dist::rendezvous_from_env()) return run_rank();
  int nproc = 2;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--nproc") nproc = std::stoi(argv[i + 1]);
  return launch(nproc, "/proc/self/exe");
}
