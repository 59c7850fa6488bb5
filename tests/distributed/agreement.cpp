// Ranks that disagree fail with the same clear error on every rank, within the timeouts,
// instead of hanging: different selections, different tensors, a lost rank, a failed load.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <string>

#include <torch/torch.h>

#include <graft/distributed.hpp>
#include <graft/graft.hpp>

#include "oracle.hpp"
#include "ranks.hpp"
#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;
namespace dist = graft::dist;

TEST_CASE("rank: mismatched selection", "[.rank]") {
  auto pg = graft::test::rank_group();
  int rank = pg->getRank();
  torch::manual_seed(0);
  auto net = models::resnet(18, 4);
  graft::freeze(*net, (!"layer4.**"_glob) & (!"fc.*"_glob));
  if (rank == 1) graft::freeze(*net, "layer4.0.**"_glob);  // the bug: one rank freezes more
  std::string expected = fmt::format(
      "[graft.distributed] rank {} of 2: gradient_averager: ranks disagree on the selected tensors: at position 0, "
      "rank 0 has 'layer4.0.conv1.weight [512, 256, 3, 3] Float' and rank 1 has 'layer4.1.conv1.weight [512, 512, 3, 3] "
      "Float' (rank 0 selects 17 tensors, rank 1 selects 8); build the model and the selection identically on every rank",
      rank);
  REQUIRE_THROWS_WITH(dist::gradient_averager(pg, *net), Equals(expected));
  // The group is still usable afterwards: nothing was left half-done.
  dist::verify_identical(pg, *net, "fc.*"_glob);
}

TEST_CASE("a selection that differs on one rank fails on every rank, naming the first differing tensor", "[distributed]") {
  graft::test::scratch_dir dir;
  auto t0 = std::chrono::steady_clock::now();
  auto res = graft::test::run_ranks("rank: mismatched selection", dir.path());
  CHECK(res.exit_code == 0);
  CHECK_FALSE(res.timed_out);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30));
}

TEST_CASE("rank: broadcast and verify", "[.rank]") {
  auto pg = graft::test::rank_group();
  int rank = pg->getRank();
  torch::manual_seed(100 + rank);
  auto net = models::resnet(18, 4);
  auto differs = [&](auto sel, const std::string& key, std::size_t n, std::size_t of) {
    return Equals(fmt::format("[graft.distributed] rank {} of 2: verify_identical: rank 1's '{}' differs from rank 0's "
                              "({} of {} selected tensors differ between rank 0 and rank 1)",
                              rank, key, n, of));
  };
  // Different random inits: the 20 convolutions and the head differ (BatchNorm starts at 1 and 0).
  REQUIRE_THROWS_WITH(dist::verify_identical(pg, *net), differs(0, "conv1.weight", 22, 122));

  // Share the head only: it agrees, the rest does not.
  auto head = dist::broadcast(pg, *net, "fc.*"_glob);
  CHECK(head.tensors == 2);
  CHECK(head.bytes == (4 * 512 + 4) * 4);
  CHECK(head.calls == 1);
  dist::verify_identical(pg, *net, "fc.*"_glob);
  REQUIRE_THROWS_WITH(dist::verify_identical(pg, *net, "layer4.**"_glob),
                      differs(0, "layer4.0.conv1.weight", 5, 30));

  // Share everything from rank 1: identical, and equal to rank 1's own values.
  auto before = net->named_parameters()["layer2.0.conv1.weight"].clone();
  auto all = dist::broadcast(pg, *net, graft::everything, {.root = 1, .bucket_bytes = 8 << 20});
  CHECK(all.tensors == 122);
  CHECK(all.calls >= 5);  // 44.7 MB of float tensors in 8 MB buckets, plus the int64 counters
  dist::verify_identical(pg, *net);
  if (rank == 1) CHECK(torch::equal(net->named_parameters()["layer2.0.conv1.weight"], before));

  // One statistic drifts on one rank: named, and counted.
  if (rank == 1) net->named_buffers()["layer3.0.bn1.running_mean"].add_(1e-6);
  REQUIRE_THROWS_WITH(dist::verify_identical(pg, *net), differs(0, "layer3.0.bn1.running_mean", 1, 122));
}

TEST_CASE("broadcast shares selected tensors from one rank; verify_identical names the first that differs", "[distributed]") {
  graft::test::scratch_dir dir;
  auto res = graft::test::run_ranks("rank: broadcast and verify", dir.path());
  CHECK(res.exit_code == 0);
}

TEST_CASE("rank: lost peer", "[.rank]") {
  auto pg = graft::test::rank_group(std::chrono::milliseconds(4000));
  if (pg->getRank() == 1) std::_Exit(0);  // leaves without taking part
  torch::manual_seed(0);
  auto net = models::resnet(18, 4);
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE_THROWS_WITH(dist::verify_identical(pg, *net), Contains("[graft.distributed] rank 0 of 2: verify_identical failed:"));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10));
}

TEST_CASE("a rank that leaves makes the others fail within the timeout instead of hanging", "[distributed]") {
  graft::test::scratch_dir dir;
  auto res = graft::test::run_ranks("rank: lost peer", dir.path());
  CHECK(res.statuses == std::vector<int>{0, 0});
  CHECK_FALSE(res.timed_out);
}

TEST_CASE("rank: failed load and save", "[.rank]") {
  auto pg = graft::test::rank_group();
  int rank = pg->getRank();
  auto dir = graft::test::rank_dir();
  auto net = models::resnet(18, 4);
  auto missing = (dir / "missing.pt").string();
  if (rank == 0)
    REQUIRE_THROWS_WITH(dist::load(pg, *net, missing),
                        Equals(fmt::format("[graft.io] cannot open '{}': No such file or directory", missing)));
  else
    REQUIRE_THROWS_WITH(dist::load(pg, *net, missing),
                        Equals(fmt::format("[graft.io] rank 1 of 2: rank 0 could not load '{}': "
                                           "cannot open '{}': No such file or directory",
                                           missing, missing)));  // the root's kind, on every rank
  // A checkpoint the plan refuses: the head has 10 classes, the model 4.
  auto other = models::resnet(18, 10);
  auto wrong = (dir / "ten_classes.pt").string();
  dist::save(pg, *other, wrong);
  if (rank == 0)
    REQUIRE_THROWS_AS(dist::load(pg, *net, wrong), graft::load_error);
  else {
    // The root's kind on every rank: a refused plan of mismatched shapes is a shape_error.
    try {
      dist::load(pg, *net, wrong);
      FAIL("dist::load did not throw");
    } catch (const graft::shape_error& e) {
      CHECK_THAT(std::string(e.what()), Contains("rank 0 could not load") && Contains("fc.weight"));
    }
  }
  // Saving where the writer cannot write fails on every rank.
  auto nowhere = (dir / "no" / "such" / "dir.pt").string();
  REQUIRE_THROWS_WITH(dist::save(pg, *net, nowhere, {.writer = 1}),
                      Contains(rank == 1 ? "[graft.io] cannot write" : "rank 0 of 2: rank 1 could not save"));
}

TEST_CASE("a failure on the rank that loads or saves is reported on every rank", "[distributed]") {
  graft::test::scratch_dir dir;
  auto res = graft::test::run_ranks("rank: failed load and save", dir.path());
  CHECK(res.exit_code == 0);
}
