// Turning adapters off for a scope, and hot-swapping another folder's weights into them in
// place (as peft.utils.hotswap), on libtorch's layers and graft's own.
#include <catch2/catch.hpp>

#include "lora_net.hpp"

using namespace graft::literals;
using graft::test::lora_fixture;
using graft::test::max_diff;

namespace {
const auto targets = "{emb,conv3,conv1,lin1}.weight"_glob;

// Adapters of one shape with random factors, saved to `folder`.
void save_random(const lora_fixture& fx, const std::string& folder, graft::lora::options o, const std::string& glob = "") {
  auto net = fx.fresh();
  auto ad = glob.empty() ? graft::lora::attach(*net, targets, o) : graft::lora::attach(*net, graft::glob(graft::runtime(glob)), o);
  {
    torch::NoGradGuard no_grad;
    for (auto& l : ad.layers())
      if (l.magnitude.defined()) l.magnitude.mul_(1 + 0.3 * torch::randn_like(l.magnitude));
  }
  graft::lora::save(ad, fx.dir.file(folder));
}
} // namespace

TEST_CASE("lora: disabled() gives the base model's outputs for its scope, on both routes", "[lora]") {
  lora_fixture fx;
  auto base = fx.run(fx.net);
  for (bool own : {false, true})
    for (auto init : {graft::lora::init_mode::none, graft::lora::init_mode::pissa}) {
      INFO((own ? "graft's own layers" : "libtorch's layers") << (init == graft::lora::init_mode::pissa ? ", PiSSA on lin1" : ""));
      auto check = [&](auto net) {
        auto ad = init == graft::lora::init_mode::pissa
                      ? graft::lora::attach(*net, "lin1.weight"_glob, {.r = 2, .dora = true, .init = init})
                      : graft::lora::attach(*net, targets, {.r = 3, .alpha = 6, .dora = true, .init = init});
        {
          torch::NoGradGuard no_grad;
          for (auto& p : ad.parameters()) p.add_(0.1 * torch::randn_like(p));
        }
        ad.refresh();
        auto y = fx.run(net);
        CHECK(max_diff(y, base) > 1e-3);
        {
          auto off = ad.disabled();
          CHECK(!ad.enabled());
          CHECK(max_diff(fx.run(net), base) <= 1e-5);
          CHECK_THROWS_AS(ad.merge(), graft::state_error);
        }
        CHECK(ad.enabled());
        CHECK(max_diff(fx.run(net), y) <= 1e-6);
        ad.merge();
        CHECK_THROWS_WITH(ad.disabled(), Catch::Contains("unmerge() them before disabling them"));
      };
      if (own) check(fx.fresh<graft::test::OwnLoraNet>());
      else check(fx.fresh());
    }
}

TEST_CASE("lora: hot_swap replaces the adapters' weights in place with another folder's, as loading it would", "[lora]") {
  lora_fixture fx;
  save_random(fx, "a", {.r = 4, .alpha = 8, .init = graft::lora::init_mode::none});
  save_random(fx, "b", {.r = 4, .alpha = 3, .rslora = true, .init = graft::lora::init_mode::none});
  save_random(fx, "small", {.r = 2, .alpha = 5, .init = graft::lora::init_mode::none});
  save_random(fx, "fewer", {.r = 4, .alpha = 8, .init = graft::lora::init_mode::none}, "{conv3,lin1}.weight");
  save_random(fx, "dora", {.r = 4, .alpha = 8, .dora = true, .init = graft::lora::init_mode::none});
  save_random(fx, "dora_b", {.r = 4, .alpha = 2, .dora = true, .init = graft::lora::init_mode::none});
  save_random(fx, "big", {.r = 5, .init = graft::lora::init_mode::none});
  save_random(fx, "more", {.r = 4, .init = graft::lora::init_mode::none}, "{emb,conv3,conv1,lin1,fc}.weight");
  auto loaded_output = [&](const std::string& folder) {
    auto net = fx.fresh();
    graft::lora::load(*net, fx.dir.file(folder));
    return fx.run(net);
  };
  for (bool own : {false, true}) {
    INFO((own ? "graft's own layers" : "libtorch's layers"));
    auto check = [&](auto net) {
      auto ad = graft::lora::load(*net, fx.dir.file("a"));
      auto a_ptr = ad.layers()[0].A.data_ptr();
      torch::optim::SGD opt(ad.parameters(), 0.1);
      auto rep = graft::lora::hot_swap(ad, fx.dir.file("b"));
      CHECK(rep.swapped.size() == 4);
      CHECK(ad.layers()[0].A.data_ptr() == a_ptr);  // the same tensors: the optimizer holds them still
      CHECK(opt.param_groups()[0].params()[0].data_ptr() == a_ptr);
      CHECK(max_diff(fx.run(net), loaded_output("b")) <= 1e-5);
      // A smaller rank is padded with zeros; fewer layers zero the others.
      rep = graft::lora::hot_swap(ad, fx.dir.file("small"));
      CHECK(rep.padded.size() == 4);
      CHECK(max_diff(fx.run(net), loaded_output("small")) <= 1e-5);
      rep = graft::lora::hot_swap(ad, fx.dir.file("fewer"));
      CHECK(rep.zeroed == std::vector<std::string>{"emb", "conv1"});
      CHECK(max_diff(fx.run(net), loaded_output("fewer")) <= 1e-5);
      // Refused, with nothing changed.
      auto before = fx.run(net);
      CHECK_THROWS_WITH(graft::lora::hot_swap(ad, fx.dir.file("big")), Catch::Contains("hot-swap cannot grow a rank"));
      CHECK_THROWS_WITH(graft::lora::hot_swap(ad, fx.dir.file("more")),
                        Catch::Contains("adapts 'fc', a layer these adapters do not wrap: hot-swap cannot add layers"));
      CHECK_THROWS_WITH(graft::lora::hot_swap(ad, fx.dir.file("dora")), Catch::Contains("its use_dora is true, these adapters' false"));
      CHECK(torch::equal(fx.run(net), before));
      ad.merge();
      CHECK_THROWS_WITH(graft::lora::hot_swap(ad, fx.dir.file("b")), Catch::Contains("into merged adapters: unmerge() them first"));
      // PiSSA adapters hold residual base weights: nothing swaps into them.
      auto pissa_net = fx.fresh();
      auto pissa = graft::lora::attach(*pissa_net, "lin1.weight"_glob, {.r = 4, .init = graft::lora::init_mode::pissa});
      CHECK_THROWS_WITH(graft::lora::hot_swap(pissa, fx.dir.file("fewer")), Catch::Contains("into PiSSA or OLoRA adapters"));
      // DoRA into DoRA: the magnitudes too.
      auto dora_net = fx.fresh();
      auto dora = graft::lora::load(*dora_net, fx.dir.file("dora"));
      graft::lora::hot_swap(dora, fx.dir.file("dora_b"));
      CHECK(max_diff(fx.run(dora_net), loaded_output("dora_b")) <= 1e-5);
    };
    if (own) check(fx.fresh<graft::test::OwnLoraNet>());
    else check(fx.fresh());
  }
}
