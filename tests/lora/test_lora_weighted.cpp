// Weighted adapter merging without PEFT: DARE's random masks (density, rescale, seeds) with the
// deterministic parts exact, and every refused input named with nothing written.
// (tests/lora/test_lora_weighted_peft.cpp checks the other types against the peft package.)
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "lora_net.hpp"

namespace {

// An adapter folder written by hand: one Linear layer "big" with lora_A [r, in] and lora_B
// [out, r], or any extra tensors and config text.
void write_adapter(const std::string& folder, const std::string& config,
                   std::vector<std::pair<std::string, torch::Tensor>> tensors) {
  std::filesystem::create_directories(folder);
  std::ofstream(folder + "/adapter_config.json") << config;
  graft::write_safetensors(folder + "/adapter_model.safetensors", tensors);
}
std::string lora_config(int r, double alpha, const std::string& extra = "") {
  return fmt::format(R"({{"peft_type": "LORA", "r": {}, "lora_alpha": {}, "target_modules": ["big"]{}}})", r, alpha, extra);
}

graft::state_dict read_out(const std::string& folder) { return graft::read(folder + "/adapter_model.safetensors").load(); }

} // namespace

TEST_CASE("lora/weighted: DARE keeps each element with probability density, rescaled by 1/density, from its seed", "[lora][weighted]") {
  graft::test::scratch_dir dir;
  torch::manual_seed(4);
  const std::int64_t r = 8, in = 1024, out = 512;
  auto a1 = torch::randn({r, in}), b1 = torch::randn({out, r});
  auto a2 = torch::randn({r, in}), b2 = torch::randn({out, r});
  write_adapter(dir.file("one"), lora_config(8, 16), {{"base_model.model.big.lora_A.weight", a1}, {"base_model.model.big.lora_B.weight", b1}});
  write_adapter(dir.file("two"), lora_config(8, 4), {{"base_model.model.big.lora_A.weight", a2}, {"base_model.model.big.lora_B.weight", b2}});
  const std::vector<std::string> inputs{dir.file("one"), dir.file("two")};
  const std::vector<double> w{0.8, -0.5};
  const double density = 0.3;
  // Each factor's weight, as PEFT's: √|w·scale|, the sign on lora_A's side.
  const double c1 = std::sqrt(0.8 * 2.0), c2 = -std::sqrt(0.5 * 0.5);

  using C = graft::lora::adapter_combination;
  graft::lora::combine_adapters(inputs, w, dir.file("linear"), {.combination = C::dare_linear, .density = density, .seed = 7});
  auto got = read_out(dir.file("linear")).at("base_model.model.big.lora_A.weight");
  // Every element is one of: nothing kept, the first kept, the second, both (each /density).
  auto t1 = a1 * c1 / density, t2 = a2 * c2 / density;
  auto none = got.abs() <= 1e-6, first = (got - t1).abs() <= 1e-5, second = (got - t2).abs() <= 1e-5,
       both = (got - t1 - t2).abs() <= 1e-5;
  CHECK((none | first | second | both).all().item<bool>());
  const double n = static_cast<double>(got.numel());
  const double kept1 = (first | both).sum().item<double>() / n, kept2 = (second | both).sum().item<double>() / n;
  // 8192 draws: the standard deviation of the kept fraction is 0.005.
  CHECK(kept1 == Approx(density).margin(0.03));
  CHECK(kept2 == Approx(density).margin(0.03));
  CHECK(both.sum().item<double>() / n == Approx(density * density).margin(0.03));

  // dare_ties: the kept values, a sign elected by their unweighted sum, the agreeing weighted
  // ones averaged by their count.
  graft::lora::combine_adapters(inputs, w, dir.file("ties"), {.combination = C::dare_ties, .density = density, .seed = 7});
  auto ties = read_out(dir.file("ties")).at("base_model.model.big.lora_A.weight");
  auto expect = [&](bool k1, bool k2) {
    auto u1 = k1 ? a1 / density : torch::zeros_like(a1), u2 = k2 ? a2 / density : torch::zeros_like(a2);
    auto elected = ((u1 + u2) >= 0).to(torch::kFloat) * 2 - 1;
    auto g1 = (u1.sign() == elected).to(torch::kFloat), g2 = (u2.sign() == elected).to(torch::kFloat);
    return (u1 * c1 * g1 + u2 * c2 * g2) / (g1 + g2).clamp_min(1);
  };
  auto matches = torch::zeros_like(ties, torch::kBool);
  for (bool k1 : {false, true})
    for (bool k2 : {false, true}) matches |= (ties - expect(k1, k2)).abs() <= 1e-5;
  CHECK(matches.all().item<bool>());
  CHECK(ties.ne(0).sum().item<double>() / n == Approx(1 - (1 - density) * (1 - density)).margin(0.03));

  // Density 0 drops everything: zeros, not PEFT's 0/0.
  graft::lora::combine_adapters(inputs, w, dir.file("none"), {.combination = C::dare_ties, .density = 0.0});
  CHECK(read_out(dir.file("none")).at("base_model.model.big.lora_A.weight").eq(0).all().item<bool>());

  // One seed, one result; another seed, other masks; lora_A and lora_B drawn apart.
  graft::lora::combine_adapters(inputs, w, dir.file("again"), {.combination = C::dare_linear, .density = density, .seed = 7});
  graft::lora::combine_adapters(inputs, w, dir.file("other"), {.combination = C::dare_linear, .density = density, .seed = 8});
  CHECK(torch::equal(read_out(dir.file("again")).at("base_model.model.big.lora_A.weight"), got));
  CHECK(!torch::equal(read_out(dir.file("other")).at("base_model.model.big.lora_A.weight"), got));

  // The SVD forms factor the combined delta to the output rank: its product has that rank.
  auto rep = graft::lora::combine_adapters(inputs, w, dir.file("svd"), {.combination = C::dare_linear_svd, .density = density, .svd_rank = 5});
  CHECK(rep.r == 5);
  auto sd = read_out(dir.file("svd"));
  auto product = torch::matmul(sd.at("base_model.model.big.lora_B.weight"), sd.at("base_model.model.big.lora_A.weight"));
  auto singular = torch::linalg_svdvals(product);
  CHECK((singular > singular[0] * 1e-5).sum().item<std::int64_t>() == 5);

  // svd_clamp: the factors' values clamped to ±(that quantile of them all), as PEFT's.
  graft::lora::combine_adapters(inputs, w, dir.file("unclamped"), {.combination = C::svd, .svd_rank = 5});
  graft::lora::combine_adapters(inputs, w, dir.file("clamped"), {.combination = C::svd, .svd_rank = 5, .svd_clamp = 0.9});
  auto u = read_out(dir.file("unclamped")), c = read_out(dir.file("clamped"));
  const auto ka = "base_model.model.big.lora_A.weight", kb = "base_model.model.big.lora_B.weight";
  auto hi = torch::quantile(torch::cat({u.at(kb).flatten(), u.at(ka).flatten()}), 0.9).item<double>();
  CHECK(torch::equal(c.at(ka), u.at(ka).clamp(-hi, hi)));
  CHECK(torch::equal(c.at(kb), u.at(kb).clamp(-hi, hi)));
  CHECK(!torch::equal(c.at(kb), u.at(kb)));
}

TEST_CASE("lora/weighted: refused inputs are named and nothing is written", "[lora][weighted]") {
  graft::test::scratch_dir dir;
  auto a = torch::randn({2, 6}), b = torch::randn({3, 2});
  auto plain = [&](const std::string& name, int r = 2, std::int64_t in = 6) {
    write_adapter(dir.file(name), lora_config(r, 4),
                  {{"base_model.model.big.lora_A.weight", torch::randn({r, in})}, {"base_model.model.big.lora_B.weight", torch::randn({3, r})}});
    return dir.file(name);
  };
  auto one = plain("one"), two = plain("two");
  auto four = plain("four", 4);
  auto wide = plain("wide", 2, 7);
  write_adapter(dir.file("dora"), lora_config(2, 4, R"(, "use_dora": true)"),
                {{"base_model.model.big.lora_A.weight", a}, {"base_model.model.big.lora_B.weight", b},
                 {"base_model.model.big.lora_magnitude_vector", torch::ones({3})}});
  write_adapter(dir.file("head"), lora_config(2, 4, R"(, "modules_to_save": ["fc"])"),
                {{"base_model.model.big.lora_A.weight", a}, {"base_model.model.big.lora_B.weight", b},
                 {"base_model.model.fc.weight", torch::ones({3, 3})}});
  using C = graft::lora::adapter_combination;
  auto refused = [&](std::vector<std::string> inputs, graft::lora::weighted_options o, const std::string& text) {
    INFO(text);
    auto target = dir.file("never");
    CHECK_THROWS_WITH(graft::lora::combine_adapters(inputs, std::vector<double>(inputs.size(), 0.5), target, o), Catch::Contains(text));
    CHECK(!std::filesystem::exists(target));
  };
  refused({one, dir.file("dora")}, {}, "is a DoRA adapter (use_dora)");
  refused({one, dir.file("head")}, {}, "'base_model.model.fc.weight', a bias or modules_to_save tensor");
  refused({one, four}, {.combination = C::linear}, "combination 'linear' needs one rank in every adapter");
  refused({one, wide}, {.combination = C::svd}, "the adapters differ for 'big'");
  refused({one, two}, {.combination = C::ties}, "combination 'ties' needs a density");
  refused({one, two}, {.combination = C::dare_linear, .density = 1.5}, "density must be in [0, 1], not 1.5");
  refused({one, two}, {.svd_clamp = -0.1}, "svd_clamp must be in [0, 1]");
  write_adapter(dir.file("pissa"), lora_config(2, 4, R"(, "init_lora_weights": "pissa")"),
                {{"base_model.model.big.lora_A.weight", a}, {"base_model.model.big.lora_B.weight", b}});
  refused({one, dir.file("pissa")}, {}, "is a PiSSA or OLoRA adapter, trained against residual base weights");
  CHECK_THROWS_WITH(graft::lora::combine_adapters({one, two}, {1.0}, dir.file("never"), {}), Catch::Contains("1 weights for 2 input adapters"));
  CHECK_THROWS_WITH(graft::lora::adapter_combination_from_string("soup"), Catch::Contains("unknown combination type 'soup'; PEFT's are svd, linear, cat"));
  CHECK(graft::lora::adapter_combination_from_string("dare_ties_svd") == C::dare_ties_svd);
  // cat and the SVD types combine different ranks.
  CHECK(graft::lora::combine_adapters({one, four}, {1, 1}, dir.file("cat"), {.combination = C::cat}).r == 6);
  CHECK(graft::lora::combine_adapters({one, four}, {1, 1}, dir.file("svd"), {}).r == 4);
  // One input: linear, as PEFT; the product is weight·scale·B·A.
  auto rep = graft::lora::combine_adapters({one}, {0.5}, dir.file("single"), {.combination = C::ties});
  CHECK(rep.combination == C::linear);
  auto in = read_out(one), single = read_out(dir.file("single"));
  auto want = torch::matmul(in.at("base_model.model.big.lora_B.weight"), in.at("base_model.model.big.lora_A.weight")) * (0.5 * 2.0);
  auto got = torch::matmul(single.at("base_model.model.big.lora_B.weight"), single.at("base_model.model.big.lora_A.weight"));
  CHECK((got - want).abs().max().item<double>() <= 1e-5);
}
