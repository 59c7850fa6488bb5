// Two ranks fine-tune with gradient_averager: they end bit-identical, equal to one process
// training on the same global batch, with frozen tensors exactly the checkpoint's.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>

#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/distributed.hpp>
#include <graft/graft.hpp>

#include "oracle.hpp"
#include "ranks.hpp"
#include "recipe.hpp"
#include "resnet.hpp"

using namespace graft::literals;
namespace dist = graft::dist;

TEST_CASE("rank: recipe training", "[.rank]") {
  auto pg = graft::test::rank_group();
  int rank = pg->getRank(), world = pg->getSize();
  auto dir = graft::test::rank_dir();
  bool overlap = std::getenv("GRAFT_DIST_OVERLAP") != nullptr;

  torch::manual_seed(100 + rank);  // different random inits: the shared checkpoint must win
  auto net = models::resnet(18, 4);
  auto report = dist::load(pg, *net, (dir / "pretrained.pt").string());
  CHECK(report.has_value() == (rank == 0));
  dist::verify_identical(pg, *net);

  auto opt = graft::test::recipe_optimizer(net);
  // A small bucket cap so the trainable set spans several buckets.
  dist::gradient_averager avg(pg, *net, graft::trainable, {.bucket_bytes = 4 << 20, .overlap = overlap});
  auto shard = graft::test::recipe_global_batch / world;
  for (int step = 0; step < graft::test::recipe_steps; ++step) {
    auto [x, y] = graft::test::recipe_batch(step);
    opt.zero_grad();
    auto out = net->forward(x.narrow(0, rank * shard, shard));
    torch::nn::functional::cross_entropy(out, y.narrow(0, rank * shard, shard)).backward();
    avg.average();
    opt.step();
  }
  dist::verify_identical(pg, *net);
  dist::save(pg, *net, (dir / "final.pt").string(), {.key_prefix = "module."});
  graft::test::write_tensors((dir / fmt::format("rank{}.pt", rank)).string(), graft::state_dict(*net));
  auto s = avg.stats();
  std::ofstream(dir / fmt::format("stats{}.txt", rank))
      << avg.tensors() << ' ' << avg.buckets() << ' ' << avg.bytes_per_step() << ' ' << s.steps << ' ' << s.calls
      << ' ' << s.bytes << '\n';
}

namespace {
graft::state_dict read(const std::filesystem::path& p) { return dist::read_checkpoint(p.string()); }
} // namespace

TEST_CASE("two ranks train as one process on the global batch, bit-identical to each other", "[distributed]") {
  graft::test::scratch_dir dir;
  torch::manual_seed(0);
  auto pretrained = models::resnet(18, 4);
  // As Python DDP saves it: every key under "module.".
  graft::test::write_tensors(dir.file("pretrained.pt"), graft::state_dict(*pretrained), "module.");

  // The reference: one process, the whole batch, no averaging.
  auto ref = models::resnet(18, 4);
  graft::merge(*ref, graft::state_dict(*pretrained));
  auto opt = graft::test::recipe_optimizer(ref);
  for (int step = 0; step < graft::test::recipe_steps; ++step) {
    auto [x, y] = graft::test::recipe_batch(step);
    opt.zero_grad();
    torch::nn::functional::cross_entropy(ref->forward(x), y).backward();
    opt.step();
  }
  std::int64_t trainable_bytes = 0, trainable = 0;
  for (auto& p : ref->parameters())
    if (p.requires_grad()) trainable_bytes += p.numel() * 4, ++trainable;

  bool overlap = GENERATE(false, true);
  INFO("overlap " << overlap);
  if (overlap) ::setenv("GRAFT_DIST_OVERLAP", "1", 1); else ::unsetenv("GRAFT_DIST_OVERLAP");
  auto res = graft::test::run_ranks("rank: recipe training", dir.path());
  ::unsetenv("GRAFT_DIST_OVERLAP");
  REQUIRE(res.exit_code == 0);
  REQUIRE_FALSE(res.timed_out);

  auto r0 = read(dir.path() / "rank0.pt"), r1 = read(dir.path() / "rank1.pt");
  auto final_file = read(dir.path() / "final.pt");
  auto ckpt = graft::state_dict(*pretrained);
  auto want = graft::state_dict(*ref);
  REQUIRE(r0.size() == want.size());
  REQUIRE(final_file.size() == want.size());
  auto trains = graft::select(*ref, graft::trainable).paths();
  std::size_t frozen_checked = 0, moved = 0;
  for (auto& e : want) {
    INFO(e.key);
    auto& a = r0.at(e.key);
    CHECK(torch::equal(a, r1.at(e.key)));                      // ranks bit-identical
    CHECK(torch::equal(a, final_file.at("module." + e.key)));  // the one writer wrote rank 0's state
    CHECK(torch::allclose(a, e.tensor, 1e-4, 1e-6));           // = one process on the global batch
    if (std::find(trains.begin(), trains.end(), e.key) == trains.end()) {
      CHECK(torch::equal(a, ckpt.at(e.key)));  // frozen weights and statistics: the checkpoint's bits
      ++frozen_checked;
    } else {
      moved += !torch::equal(a, ckpt.at(e.key));
    }
  }
  CHECK(frozen_checked == 75);  // 15 frozen parameters and the 60 BatchNorm buffers
  CHECK(moved == trains.size());
  // No temporary file left behind by the atomic save.
  for (auto& f : std::filesystem::directory_iterator(dir.path()))
    CHECK(f.path().filename().string().find(".tmp") == std::string::npos);

  // Traffic: exactly the trainable parameters' bytes, in a few buckets per step.
  for (int r = 0; r < 2; ++r) {
    std::ifstream in(dir.path() / fmt::format("stats{}.txt", r));
    std::int64_t tensors, buckets, bytes, steps, calls, total;
    in >> tensors >> buckets >> bytes >> steps >> calls >> total;
    CHECK(tensors == trainable);
    CHECK(bytes == trainable_bytes);
    CHECK(steps == graft::test::recipe_steps);
    CHECK(calls == steps * buckets);
    CHECK(total == steps * trainable_bytes);
    CHECK(buckets >= bytes / (4 << 20));  // the 4 MB cap holds
    CHECK(buckets < tensors / 3);         // yet far fewer calls than tensors
  }
}
