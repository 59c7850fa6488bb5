// DoRA against the real peft package: a DoRA folder PEFT writes gives PEFT's outputs, gradients
// and merged weights in graft (libtorch's layers and graft's own), merge_into equals PEFT's
// merge_and_unload, LoRA+ groups the magnitudes as PEFT does; and a folder graft writes gives
// graft's outputs in PEFT.
#include <catch2/catch.hpp>

#include <algorithm>
#include <sstream>

#include <nlohmann/json.hpp>

#include "lora_net.hpp"

using namespace graft::literals;
using graft::test::lora_fixture;
using graft::test::max_diff;

namespace {

std::string run_peft(const std::string& code) {
  return graft::test::run_python_with(GRAFT_PYTHON_PEFT, graft::test::lora_net_python + "\nfrom peft import LoraConfig, PeftModel, get_peft_model\n" + code);
}

// The model's keys sorted, to compare with a file's.
std::vector<std::string> sorted_keys(const graft::state_dict& sd) {
  auto k = sd.keys();
  std::sort(k.begin(), k.end());
  return k;
}

} // namespace

TEST_CASE("lora/dora/peft: a DoRA folder PEFT writes gives PEFT's outputs, gradients and merged weights", "[lora][dora][peft]") {
  lora_fixture fx;
  torch::manual_seed(21);
  auto coef = torch::randn({4, 5});
  graft::write_safetensors(fx.dir.file("coef.safetensors"), {{"coef", coef}});
  // PEFT's outputs and gradients in eval mode (no dropout, BatchNorm's running statistics),
  // its merged weights, and its LoRA+ groups for a DoRA model, from one Python process.
  auto out = run_peft(fmt::format(R"(
from peft.optimizers import create_loraplus_optimizer
d = '{}'
def graft_name(n):
    n = n.removeprefix('base_model.model.').replace('.base_layer.', '.')
    n = n.replace('lora_magnitude_vector.default.weight', 'lora_magnitude_vector.weight')
    for f in ('A', 'B'):
        n = n.replace(f'lora_{{f}}.default.weight', f'lora_{{f}}.weight').replace(f'lora_embedding_{{f}}.default', f'lora_{{f}}.weight')
    return n
torch.manual_seed(3)
cfg = dict(r=4, lora_alpha=6, use_dora=True, target_modules=['emb', 'conv3', 'conv1', 'lin1'])
pm = get_peft_model(base_net(d), LoraConfig(init_lora_weights=False, **cfg))
with torch.no_grad():
    for n, p in pm.named_parameters():
        if 'lora_magnitude_vector' in n:
            p.mul_(1 + 0.3 * torch.randn_like(p))  # "trained" away from the row norms
pm.save_pretrained(d + '/dora')
pm.eval()
img, tok = inputs(d)
y = pm(img, tok)
(y * load_file(d + '/coef.safetensors')['coef']).sum().backward()
grads = {{'grad.' + graft_name(n): p.grad for n, p in pm.named_parameters() if p.requires_grad}}
save_file({{'y': y.detach(), **grads}}, d + '/peft_out.safetensors')
with torch.no_grad():
    save_file({{k: v.contiguous() for k, v in pm.merge_and_unload().state_dict().items()}}, d + '/peft_merged.safetensors')
pm = get_peft_model(base_net(d), LoraConfig(**cfg))
names = {{id(p): n for n, p in pm.named_parameters()}}
opt = create_loraplus_optimizer(pm, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=8, loraplus_lr_embedding=1e-5)
print(json.dumps([[g['lr'], sorted(graft_name(names[id(p)]) for p in g['params'])] for g in opt.param_groups if g['params']]))
)",
                                  fx.path()));
  auto peft = graft::read(fx.dir.file("peft_out.safetensors")).load();
  auto peft_merged = graft::read(fx.dir.file("peft_merged.safetensors")).load();

  auto check_model = [&](auto net) {
    auto ad = graft::lora::load(*net, fx.dir.file("dora"));
    REQUIRE(ad.options().dora);
    auto y = net->forward(fx.img, fx.tok);
    CHECK(max_diff(y, peft.at("y")) <= 1e-5);
    (y * coef).sum().backward();
    int compared = 0;
    for (auto& s : ad.saved()) {
      INFO(s.path);
      REQUIRE(peft.contains("grad." + s.path));
      CHECK(max_diff(s.tensor.grad(), peft.at("grad." + s.path)) <= 1e-5);
      ++compared;
    }
    CHECK(compared == 12);  // A, B and m of four layers
    ad.merge_and_unload();
    auto merged = graft::state_dict(*net);
    REQUIRE(sorted_keys(merged) == sorted_keys(peft_merged));
    for (auto& e : peft_merged) {
      INFO(e.key);
      CHECK(max_diff(merged.at(e.key), e.tensor) <= 1e-5);
    }
  };
  SECTION("libtorch's layers") { check_model(fx.fresh()); }
  SECTION("graft's own layers") { check_model(fx.fresh<graft::test::OwnLoraNet>()); }
  SECTION("merge_into a checkpoint, without a model") {
    auto sd = graft::read(fx.dir.file("base.safetensors")).load();
    auto rep = graft::lora::merge_into(sd, fx.dir.file("dora"));
    CHECK(rep.merged.size() == 4);
    for (auto& e : peft_merged) {
      INFO(e.key);
      CHECK(max_diff(sd.at(e.key), e.tensor) <= 1e-5);
    }
  }
  SECTION("LoRA+ groups") {
    std::istringstream lines(out);
    std::string last;
    for (std::string l; std::getline(lines, l);)
      if (!l.empty() && l.front() == '[') last = l;
    auto want = nlohmann::json::parse(last);
    auto net = fx.fresh();
    graft::lora::attach(*net, "{emb,conv3,conv1,lin1}.weight"_glob, {.r = 4, .alpha = 6, .dora = true});
    auto groups = graft::lora::loraplus_param_groups(*net, torch::optim::AdamWOptions(1e-3), {.lr_ratio = 8, .lr_embedding = 1e-5});
    REQUIRE(groups.size() == want.size());
    for (std::size_t g = 0; g < groups.size(); ++g) {
      INFO(groups.names()[g]);
      CHECK(groups.info()[g].lr == Approx(want[g][0].get<double>()).epsilon(1e-12));
      std::vector<std::string> mine;
      for (const auto& p : groups.parameters())
        if (p.group == g) mine.emplace_back(p.path);
      std::sort(mine.begin(), mine.end());
      CHECK(mine == want[g][1].get<std::vector<std::string>>());
    }
  }
}

TEST_CASE("lora/dora/peft: a DoRA folder graft writes gives graft's outputs and merged weights in PEFT", "[lora][dora][peft]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, "{emb,conv3,conv1,lin1}.weight"_glob,
                                {.r = 3, .alpha = 5, .rslora = true, .dora = true, .init = graft::lora::init_mode::none,
                                 .rank_pattern = {{"conv.", 2}}});
  {
    torch::NoGradGuard no_grad;
    for (auto& l : ad.layers()) l.magnitude.mul_(1 + 0.3 * torch::randn_like(l.magnitude));
  }
  ad.refresh();
  auto y = fx.run(net);
  auto [peft_y, merged_diff] = graft::test::peft_reads(fx, ad, *net, GRAFT_PYTHON_PEFT, "assert pm.peft_config['default'].use_dora");
  CHECK(merged_diff <= 1e-5);
  CHECK(max_diff(peft_y, y) <= 1e-5);
}
