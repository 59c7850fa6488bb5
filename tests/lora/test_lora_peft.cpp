// LoRA against the real peft package: folders PEFT writes load in graft with PEFT's outputs,
// folders graft writes load in PEFT with graft's outputs, merges agree, and target_modules,
// exclude_modules, modules_to_save and rank/alpha patterns pick what PEFT picks.
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
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

// The model's modules as "path:Type" lines.
std::string module_list(torch::nn::Module& m) {
  std::string s;
  graft::for_each_module(m, [&](torch::nn::Module& x, std::string_view path) {
    if (!path.empty()) s += fmt::format("{}:{}\n", path, graft::detail::short_type_name(typeid(x)));
  });
  return s;
}

} // namespace

TEST_CASE("lora/peft: adapter folders PEFT writes load in graft and give PEFT's outputs", "[lora][peft]") {
  lora_fixture fx;
  struct config_case {
    const char* json;
    bool safetensors;
  };
  int n = 0;
  for (auto c : {config_case{R"({"r": 4, "lora_alpha": 8, "target_modules": ["emb", "conv3", "conv1", "lin1"]})", true},
                 config_case{R"j({"r": 4, "lora_alpha": 6, "use_rslora": true, "target_modules": ".*(conv\\d|lin1)", "bias": "lora_only", "modules_to_save": ["fc"]})j", true},
                 config_case{R"({"r": 2, "lora_alpha": 4, "rank_pattern": {"conv3": 3}, "alpha_pattern": {"lin1": 5}, "target_modules": ["conv3", "lin1", "emb"], "bias": "all"})", false}}) {
    INFO(c.json);
    auto folder = fmt::format("peft{}", n++);
    auto out = run_peft(fmt::format(R"(
d = '{}'
torch.manual_seed(3)
cfg = json.loads(r'''{}''')
pm = get_peft_model(base_net(d), LoraConfig(init_lora_weights=False, **cfg))
with torch.no_grad():
    for n, p in pm.named_parameters():
        if p.requires_grad and 'lora_' not in n:
            p.normal_()  # trained biases and modules_to_save: make them differ from the base
pm.save_pretrained(d + '/{}', safe_serialization={})
pm.eval()
img, tok = inputs(d)
with torch.no_grad():
    save_file({{'y': pm(img, tok)}}, d + '/peft_out.safetensors')
    save_file({{k: v.contiguous() for k, v in pm.merge_and_unload().state_dict().items()}}, d + '/peft_merged.safetensors')
)",
                                    fx.path(), c.json, folder, c.safetensors ? "True" : "False"));
    CHECK(std::filesystem::exists(fx.dir.file(folder + (c.safetensors ? "/adapter_model.safetensors" : "/adapter_model.bin"))));
    auto net = fx.fresh();
    auto ad = graft::lora::load(*net, fx.dir.file(folder));
    auto want = graft::read(fx.dir.file("peft_out.safetensors")).load().at("y");
    CHECK(max_diff(fx.run(net), want) <= 1e-5);
    CHECK(!ad.layers().empty());
    // graft's own layer types load the same folder and compute it on the activations.
    auto own = fx.fresh<graft::test::OwnLoraNet>();
    auto own_ad = graft::lora::load(*own, fx.dir.file(folder));
    CHECK(own_ad.layers().front().own_layer != nullptr);
    CHECK(max_diff(fx.run(own), want) <= 1e-5);
    // graft's merge_into on the base checkpoint equals PEFT's merge_and_unload.
    auto sd = graft::read(fx.dir.file("base.safetensors")).load();
    graft::lora::merge_into(sd, fx.dir.file(folder));
    auto peft_merged = graft::read(fx.dir.file("peft_merged.safetensors")).load();
    auto sorted = [](std::vector<std::string> k) {
      std::sort(k.begin(), k.end());
      return k;
    };
    REQUIRE(sorted(peft_merged.keys()) == sorted(sd.keys()));
    for (auto& e : peft_merged) {
      INFO(e.key);
      CHECK(max_diff(sd.at(e.key), e.tensor) <= 1e-5);
    }
  }
}

TEST_CASE("lora/peft: adapter folders graft writes load in PEFT and give graft's outputs", "[lora][peft]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, "{emb,conv3,conv1,lin1}.weight"_glob,
                                {.r = 3, .alpha = 7, .rslora = true, .init = graft::lora::init_mode::none, .bias = graft::lora::bias_mode::lora_only,
                                 .rank_pattern = {{"conv.", 2}}},
                                "fc.**"_glob);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : ad.parameters())
      if (!p.requires_grad() || p.dim() == 1 || p.size(0) == 5) p.normal_();  // biases and the head
  }
  ad.refresh();
  auto y = fx.run(net);
  auto [peft_y, merged_diff] = graft::test::peft_reads(fx, ad, *net, GRAFT_PYTHON_PEFT);
  CHECK(merged_diff <= 1e-5);
  CHECK(max_diff(peft_y, y) <= 1e-5);
}

TEST_CASE("lora/peft: graft's Embedding looks lora_A up with the layer's padding_idx, max_norm and scale_grad_by_freq, as PEFT does",
          "[lora][peft]") {
  struct Holder : torch::nn::Module {
    graft::lora::Embedding emb{nullptr};
    Holder() {
      emb = register_module(
          "emb", graft::lora::Embedding(torch::nn::EmbeddingOptions(10, 6).padding_idx(1).max_norm(1.5).scale_grad_by_freq(true)));
    }
  };
  graft::test::scratch_dir dir;
  torch::manual_seed(11);
  auto m = std::make_shared<Holder>();
  auto ad = graft::lora::attach(*m, "emb.weight"_glob, {.r = 3, .alpha = 6, .init = graft::lora::init_mode::none});
  const auto& l = ad.layers().front();
  {
    // Rows of W0 and columns of A longer than max_norm, so both lookups renormalize.
    torch::NoGradGuard no_grad;
    l.base.normal_(0, 1.5);
    l.A.mul_(2);
  }
  auto tok = torch::tensor({1, 3, 3, 7, 7, 7, 0, 1, 3, 9, 2, 7}, torch::kLong).view({2, 6});
  auto coef = torch::randn({2, 6, 6});
  graft::write_safetensors(dir.file("before.safetensors"),
                           {{"weight", l.base.clone()}, {"A", l.A.detach().clone()}, {"B", l.B.detach().clone()}, {"tok", tok}, {"coef", coef}});
  auto y = m->emb->forward(tok);
  (y * coef).sum().backward();

  graft::test::run_python_with(GRAFT_PYTHON_PEFT, fmt::format(R"(
import torch, torch.nn as nn
from safetensors.torch import load_file, save_file
from peft import LoraConfig, get_peft_model
d = '{}'
b = load_file(d + '/before.safetensors')
class Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6, padding_idx=1, max_norm=1.5, scale_grad_by_freq=True)
h = Holder()
with torch.no_grad():
    h.emb.weight.copy_(b['weight'])
pm = get_peft_model(h, LoraConfig(r=3, lora_alpha=6, target_modules=['emb'], init_lora_weights=False))
e = pm.base_model.model.emb
A, B = e.lora_embedding_A['default'], e.lora_embedding_B['default']
with torch.no_grad():
    A.copy_(b['A'])
    B.copy_(b['B'])
y = e(b['tok'])
(y * b['coef']).sum().backward()
save_file({{'y': y.detach(), 'weight': e.base_layer.weight.detach().clone(), 'A': A.detach().clone(), 'gA': A.grad, 'gB': B.grad}},
          d + '/peft.safetensors')
)",
                                                              dir.path().string()));
  auto peft = graft::read(dir.file("peft.safetensors")).load();
  auto before = graft::read(dir.file("before.safetensors")).load();
  // The lookups renormalized W0's and A's used rows and columns in place, as PEFT's did.
  CHECK(max_diff(before.at("A"), l.A) > 0.1);
  CHECK(max_diff(peft.at("weight"), l.base) <= 1e-5);
  CHECK(max_diff(peft.at("A"), l.A) <= 1e-5);
  CHECK(max_diff(peft.at("y"), y) <= 1e-5);
  // scale_grad_by_freq divides A's gradient by each token's count (padding_idx gets none), not B's.
  CHECK(max_diff(peft.at("gA"), l.A.grad()) <= 1e-5);
  CHECK(max_diff(peft.at("gB"), l.B.grad()) <= 1e-5);
  CHECK(l.A.grad().select(1, 1).abs().max().item<double>() == 0);
}

TEST_CASE("lora/peft: target_modules, exclude_modules, modules_to_save and rank/alpha patterns pick what PEFT picks", "[lora][peft]") {
  // A ResNet-shaped tree and a transformer-shaped one, as module paths and types.
  auto tree = std::make_shared<torch::nn::Module>("Tree");
  auto add = [](torch::nn::Module& parent, const std::string& path, std::shared_ptr<torch::nn::Module> leaf) {
    torch::nn::Module* at = &parent;
    std::string rest = path;
    for (auto dot = rest.find('.'); dot != std::string::npos; dot = rest.find('.')) {
      auto name = rest.substr(0, dot);
      auto kids = at->named_children();
      at = kids.contains(name) ? kids[name].get() : at->register_module(name, std::make_shared<torch::nn::Module>("Node")).get();
      rest = rest.substr(dot + 1);
    }
    at->register_module(rest, std::move(leaf));
  };
  for (auto* p : {"conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2", "layer2.0.conv1", "layer2.0.conv2",
                  "layer2.0.downsample.0"})
    add(*tree, p, torch::nn::Conv2d(2, 2, 1).ptr());
  add(*tree, "layer2.0.downsample.1", torch::nn::BatchNorm2d(2).ptr());
  add(*tree, "fc", torch::nn::Linear(2, 2).ptr());
  for (int i = 0; i < 3; ++i)
    for (auto* p : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj", "mlp.down_proj"})
      add(*tree, fmt::format("model.layers.{}.{}", i, p), torch::nn::Linear(2, 2).ptr());
  add(*tree, "model.embed_tokens", torch::nn::Embedding(4, 2).ptr());
  add(*tree, "lm_head", torch::nn::Linear(2, 4).ptr());

  const char* configs[] = {
      R"({"target_modules": ["q_proj", "v_proj", "conv1"]})",
      R"({"target_modules": ["layers.1.self_attn.q_proj", "1.conv2", "fc"]})",
      R"({"target_modules": "model\\.layers\\.[02]\\..*_proj"})",
      R"j({"target_modules": ".*(conv\\d|downsample\\.0)", "exclude_modules": ["layer1.1.conv1"]})j",
      R"({"target_modules": ["q_proj", "k_proj", "up_proj", "conv2"], "exclude_modules": ".*layers\\.2\\..*"})",
      R"({"target_modules": ["q_proj", "fc", "lm_head", "conv1"], "modules_to_save": ["lm_head", "fc"]})",
      R"({"target_modules": ["conv1", "conv2", "q_proj", "down_proj"], "r": 4, "lora_alpha": 8, "rank_pattern": {"layer1.0.conv2": 2, "q_proj": 6, "^model.*": 5}, "alpha_pattern": {"layers\\.\\d\\.self_attn.q_proj": 3, "conv.": 1}})",
  };
  for (auto* c : configs) {
    INFO(c);
    graft::test::scratch_dir dir;
    std::ofstream(dir.file("adapter_config.json")) << R"({"peft_type": "LORA", )" << (c + 1);
    auto config = graft::lora::read_adapter_config(dir.path().string());
    std::string mine;
    for (auto& path : graft::lora::peft_targets(*tree, config)) {
      auto r = graft::lora::detail::value_for(config.options.rank_pattern, path, config.options.r, "rank_pattern");
      auto alpha = graft::lora::detail::value_for(config.options.alpha_pattern, path, config.options.alpha, "alpha_pattern");
      mine += fmt::format("{} {} {:g}\n", path, r, alpha);
    }
    // PEFT's own functions on the same names (its matching does not look at types, except
    // all-linear, which is every Linear that is not an output layer of a transformers model).
    auto theirs = graft::test::run_python_with(GRAFT_PYTHON_PEFT, fmt::format(R"(
import json
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists, _ExcludedModule
from peft.utils.other import get_pattern_key
c = LoraConfig(**{{k: v for k, v in json.loads(r'''{}''').items() if k != 'peft_type'}})
mods = [l.split(':') for l in '''{}'''.split()]
for path, kind in mods:
    if isinstance(c.target_modules, str) and c.target_modules == 'all-linear':
        hit = kind == 'Linear' and not any(path == m or path.endswith('.' + m) for m in (c.modules_to_save or []))
    else:
        hit = check_target_module_exists(c, path)
        hit = bool(hit) and not isinstance(hit, _ExcludedModule)
    if hit:
        r = c.rank_pattern.get(get_pattern_key(c.rank_pattern.keys(), path), c.r)
        a = c.alpha_pattern.get(get_pattern_key(c.alpha_pattern.keys(), path), c.lora_alpha)
        print(path, r, '%g' % a)
)",
                                                                              config.json, module_list(*tree)));
    CHECK(mine == theirs);
    CHECK(!mine.empty());
  }
}

TEST_CASE("lora/peft: PiSSA and OLoRA start as PEFT's, and their folders load both ways, as they are or converted to plain LoRA",
          "[lora][peft]") {
  lora_fixture fx;
  // graft's adapters: started on lin1 and fc, "trained" (moved), saved as they are and converted.
  std::map<std::string, torch::Tensor> graft_y;
  for (std::string init : {"pissa", "olora"}) {
    auto net = fx.fresh();
    auto w0 = net->lin1->weight.detach().clone();
    const auto mode = init == "pissa" ? graft::lora::init_mode::pissa : graft::lora::init_mode::olora;
    auto ad = graft::lora::attach(*net, "{lin1,fc}.weight"_glob, {.r = 2, .alpha = 4, .init = mode});
    graft::save(graft::state_dict(*net), fx.dir.file("graft_" + init + "_start.safetensors"));
    {
      torch::NoGradGuard no_grad;
      for (auto& p : ad.parameters()) p.add_(0.05 * torch::randn_like(p));
    }
    ad.refresh();
    graft_y[init] = fx.run(net);
    graft::lora::save(ad, fx.dir.file("graft_" + init));
    graft::lora::save(ad, fx.dir.file("graft_" + init + "_converted"), {.convert_to_lora = true});
    // graft reads both back onto the original model, with the same outputs.
    for (auto suffix : {"", "_converted"}) {
      auto again = fx.fresh();
      graft::lora::load(*again, fx.dir.file("graft_" + init + suffix));
      CHECK(max_diff(fx.run(again), graft_y[init]) <= 1e-5);
    }
    // unload() gives the layer back the weight it had, not the residual.
    ad.unload();
    CHECK(max_diff(net->lin1->weight, w0) <= 1e-5);
  }
  auto out = run_peft(fmt::format(R"(
d = '{}'
img, tok = inputs(d)
for init in ('pissa', 'olora'):
    # PEFT's start on the same model: the residual base weights and the products scale·B·A.
    pm = get_peft_model(base_net(d), LoraConfig(r=2, lora_alpha=4, target_modules=['lin1', 'fc'], init_lora_weights=init))
    mine = load_file(d + '/graft_' + init + '_start.safetensors')
    worst = 0.0
    for layer in ('lin1', 'fc'):
        m = getattr(pm.base_model.model, layer)
        got = mine[layer + '.weight'] + 2 * mine[layer + '.lora_B.weight'] @ mine[layer + '.lora_A.weight']
        want = m.base_layer.weight + 2 * m.lora_B['default'].weight @ m.lora_A['default'].weight
        worst = max(worst, (mine[layer + '.weight'] - m.base_layer.weight).abs().max().item(), (got - want).abs().max().item())
    print('start', init, worst)
    # graft's folders, as they are and converted, loaded by PEFT onto the original model.
    for suffix in ('', '_converted'):
        with torch.no_grad():
            y = PeftModel.from_pretrained(base_net(d), d + '/graft_' + init + suffix).eval()(img, tok)
        save_file({{'y': y}}, d + '/peft_y_' + init + suffix + '.safetensors')
    # PEFT's own folder, trained a little, as it is and converted.
    torch.manual_seed(5)
    pm = get_peft_model(base_net(d), LoraConfig(r=2, lora_alpha=4, target_modules=['lin1'], init_lora_weights=init))
    pm.peft_config['default'].init_lora_weights = True
    pm.save_pretrained(d + '/' + init + '_initial')
    pm.peft_config['default'].init_lora_weights = init
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if 'lora_' in n:
                p.add_(0.05 * torch.randn_like(p))
    pm.save_pretrained(d + '/' + init)
    pm.save_pretrained(d + '/' + init + '_converted', path_initial_model_for_weight_conversion=d + '/' + init + '_initial')
    pm.eval()
    with torch.no_grad():
        save_file({{'y': pm(img, tok)}}, d + '/' + init + '_out.safetensors')
)",
                                  fx.path()));
  INFO(out);
  for (std::string init : {"pissa", "olora"}) {
    INFO(init);
    // The start: residual and product equal PEFT's (not the factors: the signs of singular
    // vectors and of QR's columns differ between LAPACK builds).
    auto at = out.find("start " + init + " ");
    REQUIRE(at != std::string::npos);
    CHECK(std::stod(out.substr(at + 7 + init.size())) <= 1e-5);
    for (std::string suffix : {"", "_converted"}) {
      INFO(suffix);
      CHECK(max_diff(graft::read(fx.dir.file("peft_y_" + init + suffix + ".safetensors")).load().at("y"), graft_y[init]) <= 1e-5);
      // PEFT's folder in graft: the base becomes the residual again, as in PEFT.
      auto net = fx.fresh();
      graft::lora::load(*net, fx.dir.file(init + suffix));
      CHECK(max_diff(fx.run(net), graft::read(fx.dir.file(init + "_out.safetensors")).load().at("y")) <= 1e-4);
      // merge_into on the original checkpoint: the same merged weights.
      auto sd = graft::read(fx.dir.file("base.safetensors")).load();
      graft::lora::merge_into(sd, fx.dir.file(init + suffix));
      auto merged = fx.fresh();
      graft::merge(*merged, sd);
      CHECK(max_diff(fx.run(merged), graft::read(fx.dir.file(init + "_out.safetensors")).load().at("y")) <= 1e-4);
    }
  }
}

TEST_CASE("lora: PiSSA's randomized SVD (pissa_niter) reconstructs the weight and comes near the best rank-r error", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto w = net->lin1->weight.detach().clone();  // 16 x 8
  const std::int64_t r = 3;
  auto ad = graft::lora::attach(*net, "lin1.weight"_glob, {.r = r, .alpha = 6, .init = graft::lora::init_mode::pissa, .pissa_niter = 4});
  const auto& l = ad.layers()[0];
  auto product = l.delta();
  // Residual + product is the weight (the model's outputs do not change).
  CHECK(max_diff(l.base + product, w) <= 1e-5);
  // The product's error against the weight is within 15% of the best rank-3 error (the tail of
  // the singular values): a randomized SVD without oversampling, as torch.svd_lowrank with q = r
  // (PEFT's call), comes near, not to, the best.
  auto sv = torch::linalg_svdvals(w);
  auto best = sv.slice(0, r).pow(2).sum().sqrt().item<double>();
  auto err = torch::linalg_norm(w - product, "fro", c10::nullopt, false, c10::nullopt).item<double>();
  CHECK(err >= best * (1 - 1e-5));
  CHECK(err <= best * 1.15);
  // Such an adapter is saved converted: no load could repeat its random draw.
  CHECK_THROWS_WITH(graft::lora::save(ad, fx.dir.file("niter")), Catch::Contains("as 'pissa_niter_4': a load would draw another random SVD"));
  graft::lora::save(ad, fx.dir.file("niter"), {.convert_to_lora = true});
  auto again = fx.fresh();
  auto loaded = graft::lora::load(*again, fx.dir.file("niter"));
  CHECK(loaded.layers()[0].r == 2 * r);
  CHECK(max_diff(fx.run(again), fx.run(net)) <= 1e-5);
  // PiSSA and OLoRA start Linear layers only, as in PEFT; nothing changes on a refusal.
  auto other = fx.fresh();
  auto before = graft::test::snapshot(*other);
  CHECK_THROWS_WITH(graft::lora::attach(*other, "{lin1,conv1}.weight"_glob, {.r = 2, .init = graft::lora::init_mode::olora}),
                    Catch::Contains("LoRA init 'olora' starts Linear layers only, as in PEFT; 'conv1' is Conv2d"));
  CHECK_THROWS_WITH(graft::lora::attach(*other, "lin1.weight"_glob, {.r = 9, .init = graft::lora::init_mode::pissa}),
                    Catch::Contains("rank 9 exceeds the weight's smaller dimension"));
  CHECK(graft::test::same_state(before, *other));
}

namespace {
// A Linear, a LayerNorm and a head, for LoRA+'s no-decay rule (LayerNorm tensors).
struct NormNetImpl : torch::nn::Module {
  torch::nn::Linear lin{register_module("lin", torch::nn::Linear(4, 6))};
  torch::nn::LayerNorm norm{register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({6})))};
  torch::nn::Linear head{register_module("head", torch::nn::Linear(6, 3))};
};
TORCH_MODULE(NormNet);
} // namespace

TEST_CASE("lora/peft: LoRA+ param groups are those of PEFT's create_loraplus_optimizer", "[lora][peft]") {
  lora_fixture fx;
  // PEFT's groups, each as (lr, weight_decay, parameter names in graft's spelling).
  auto out = run_peft(fmt::format(R"(
from peft.optimizers import create_loraplus_optimizer
class NormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.norm, self.head = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)
def graft_name(n):
    n = n.removeprefix('base_model.model.').replace('.base_layer.', '.').replace('.modules_to_save.default.', '.')
    for f in ('A', 'B'):
        n = n.replace(f'lora_{{f}}.default.weight', f'lora_{{f}}.weight').replace(f'lora_embedding_{{f}}.default', f'lora_{{f}}.weight')
    return n
result = []
for model, cfg in ((base_net('{}'), dict(r=2, target_modules=['emb', 'conv3', 'lin1'], bias='lora_only', modules_to_save=['fc'])),
                   (NormNet(), dict(r=2, target_modules=['lin'], modules_to_save=['norm', 'head']))):
    pm = get_peft_model(model, LoraConfig(**cfg))
    names = {{id(p): n for n, p in pm.named_parameters()}}
    opt = create_loraplus_optimizer(pm, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=8, loraplus_weight_decay=0.01,
                                    loraplus_lr_embedding=1e-5)
    result.append([[g['lr'], g['weight_decay'], [graft_name(names[id(p)]) for p in g['params']]] for g in opt.param_groups if g['params']])
print(json.dumps(result))
)",
                                  fx.path()));
  std::istringstream lines(out);
  std::string last;
  for (std::string l; std::getline(lines, l);)
    if (!l.empty() && l.front() == '[') last = l;
  auto want = nlohmann::json::parse(last);
  const graft::lora::loraplus_options plus{.lr_ratio = 8, .lr_embedding = 1e-5, .weight_decay = 0.01};
  const auto adamw = torch::optim::AdamWOptions(1e-3).weight_decay(0.05);  // its weight decay is replaced, as in PEFT
  auto compare = [&](const graft::named_param_groups& groups, const nlohmann::json& peft) {
    REQUIRE(groups.size() == peft.size());
    for (std::size_t g = 0; g < groups.size(); ++g) {
      INFO(groups.names()[g]);
      CHECK(groups.info()[g].lr == Approx(peft[g][0].get<double>()).epsilon(1e-12));
      CHECK(groups.info()[g].weight_decay.value() == Approx(peft[g][1].get<double>()).epsilon(1e-12));
      std::vector<std::string> mine;
      for (const auto& p : groups.parameters())
        if (p.group == g) mine.emplace_back(p.path);
      auto theirs = peft[g][2].get<std::vector<std::string>>();
      std::sort(mine.begin(), mine.end());
      std::sort(theirs.begin(), theirs.end());
      CHECK(mine == theirs);
    }
  };
  for (bool own : {false, true}) {
    INFO((own ? "graft's own layer types" : "libtorch's layers"));
    std::shared_ptr<torch::nn::Module> net = own ? std::shared_ptr<torch::nn::Module>(fx.fresh<graft::test::OwnLoraNet>().ptr())
                                                 : std::shared_ptr<torch::nn::Module>(fx.fresh().ptr());
    graft::lora::attach(*net, "{emb,conv3,lin1}.weight"_glob, {.r = 2, .bias = graft::lora::bias_mode::lora_only}, "fc.**"_glob);
    auto groups = graft::lora::loraplus_param_groups(*net, adamw, plus);
    CHECK(groups.names() == std::vector<std::string>{"lora_A", "embedding", "lora_B", "lora_B.no_decay"});
    compare(groups, want[0]);
    auto opt = groups.make_optimizer<torch::optim::AdamW>();
    CHECK(opt.param_groups().size() == 4);
  }
  NormNet norm;
  graft::lora::attach(*norm, "lin.weight"_glob, {.r = 2}, "{norm,head}.**"_glob);
  auto groups = graft::lora::loraplus_param_groups(*norm, adamw, plus);
  CHECK(groups.names() == std::vector<std::string>{"lora_A", "lora_B", "lora_B.no_decay"});
  compare(groups, want[1]);
  CHECK_THROWS_AS(graft::lora::loraplus_param_groups(*norm, adamw, {.lr_ratio = 0}), graft::option_error);
}
