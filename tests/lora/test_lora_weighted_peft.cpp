// Weighted adapter merging against the real peft package: for each combination type PEFT makes
// without randomness, graft's combine_adapters writes a folder whose delta weights (scale·B·A,
// products, not factors: SVD signs differ between LAPACK builds) equal those of PEFT's
// add_weighted_adapter on the same two adapters; PEFT loads graft's folders to compare them.
#include <catch2/catch.hpp>

#include <map>
#include <sstream>

#include "lora_net.hpp"

using namespace graft::literals;
using graft::test::lora_fixture;

TEST_CASE("lora/weighted/peft: combine_adapters gives PEFT's add_weighted_adapter delta weights", "[lora][weighted][peft]") {
  lora_fixture fx;
  // Two adapters on one model: different targets (emb and conv1 only in the first), scales
  // (the second rsLoRA) and weights, one of them negative.
  {
    auto net = fx.fresh();
    auto ad = graft::lora::attach(*net, "{emb,conv3,conv1,lin1}.weight"_glob, {.r = 4, .alpha = 8, .init = graft::lora::init_mode::none});
    graft::lora::save(ad, fx.dir.file("in_a"));
  }
  {
    auto net = fx.fresh();
    auto ad = graft::lora::attach(*net, "{conv3,lin1}.weight"_glob, {.r = 4, .alpha = 6, .rslora = true, .init = graft::lora::init_mode::none});
    graft::lora::save(ad, fx.dir.file("in_b"));
  }
  using C = graft::lora::adapter_combination;
  struct case_t {
    const char* name;
    graft::lora::weighted_options o;
    const char* peft_kwargs;
  };
  const std::vector<case_t> cases = {
      {"svd", {.combination = C::svd}, "combination_type='svd'"},
      // (PEFT fails on an svd_rank above a layer's smaller dimension, conv1's 4; graft pads with zeros.)
      // (svd_clamp is tested in test_lora_weighted.cpp: it clamps the factors' values, which
      // depend on the signs the LAPACK build gives the singular vectors.)
      {"svd_rank3", {.combination = C::svd, .svd_rank = 3}, "combination_type='svd', svd_rank=3"},
      {"linear", {.combination = C::linear}, "combination_type='linear'"},
      {"cat", {.combination = C::cat}, "combination_type='cat'"},
      {"ties", {.combination = C::ties, .density = 0.5}, "combination_type='ties', density=0.5"},
      {"ties_frequency", {.combination = C::ties, .density = 0.6, .majority = graft::lora::majority_sign::frequency},
       "combination_type='ties', density=0.6, majority_sign_method='frequency'"},
      {"ties_svd", {.combination = C::ties_svd, .density = 0.5}, "combination_type='ties_svd', density=0.5"},
      {"magnitude_prune", {.combination = C::magnitude_prune, .density = 0.3}, "combination_type='magnitude_prune', density=0.3"},
      {"magnitude_prune_svd", {.combination = C::magnitude_prune_svd, .density = 0.7}, "combination_type='magnitude_prune_svd', density=0.7"},
  };
  std::string peft_cases;
  for (auto& c : cases) {
    INFO(c.name);
    auto rep = graft::lora::combine_adapters({fx.dir.file("in_a"), fx.dir.file("in_b")}, {0.7, -0.4}, fx.dir.file(std::string("out_") + c.name), c.o);
    CHECK(rep.layers == std::vector<std::string>{"conv1", "conv3", "emb", "lin1"});
    CHECK(rep.partial == std::vector<std::string>{"conv1", "emb"});
    CHECK(rep.r == (c.o.combination == C::cat ? 8 : c.o.svd_rank.value_or(4)));
    peft_cases += fmt::format("    ('{}', dict({})),\n", c.name, c.peft_kwargs);
    // graft loads its own output onto the model.
    auto net = fx.fresh();
    CHECK(graft::lora::load(*net, fx.dir.file(std::string("out_") + c.name)).layers().size() == 4);
  }
  auto out = graft::test::run_python_with(GRAFT_PYTHON_PEFT, graft::test::lora_net_python + fmt::format(R"(
from peft import PeftModel
d = '{}'
pm = PeftModel.from_pretrained(base_net(d), d + '/in_a', adapter_name='a')
pm.load_adapter(d + '/in_b', adapter_name='b')
cases = [
{}]
for name, kwargs in cases:
    pm.add_weighted_adapter(['a', 'b'], [0.7, -0.4], 'peft_' + name, **kwargs)
    pm.load_adapter(d + '/out_' + name, adapter_name='graft_' + name)
    worst, layers = 0.0, 0
    for path, m in pm.named_modules():
        names = set(getattr(m, 'lora_A', {{}}).keys()) | set(getattr(m, 'lora_embedding_A', {{}}).keys())
        if 'peft_' + name in names:
            want, got = m.get_delta_weight('peft_' + name), m.get_delta_weight('graft_' + name)
            worst = max(worst, (want - got).abs().max().item())
            layers += 1
    print('case', name, layers, worst)
)",
                                                                                                        fx.path(), peft_cases));
  std::map<std::string, std::pair<int, double>> got;
  std::istringstream lines(out);
  for (std::string word, name; lines >> word;)
    if (word == "case") {
      int layers = 0;
      double worst = 1;
      lines >> name >> layers >> worst;
      got[name] = {layers, worst};
    }
  INFO(out);
  for (auto& c : cases) {
    INFO(c.name);
    REQUIRE(got.count(c.name));
    CHECK(got[c.name].first == 4);
    CHECK(got[c.name].second <= 1e-5);
  }
}
