// LoRA adapters: the math against a hand-written torch reference, merge/unmerge, training,
// save/load round trips and every refused input, with the model left as it was.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <tuple>
#include <type_traits>

#include <graft/optim.hpp>

#include "lora_net.hpp"

using namespace graft::literals;
using graft::test::lora_fixture;
using graft::test::max_diff;

namespace {

const auto lora_targets = "{emb,conv3,conv1,lin1}.weight"_glob;

// Adapters with random A and B (init none), so that every layer's adapter changes the output.
graft::lora::adapters attach_random(graft::test::LoraNet& net, graft::lora::options o = {.r = 3, .alpha = 6, .init = graft::lora::init_mode::none}) {
  return graft::lora::attach(*net, lora_targets, o);
}

} // namespace

TEST_CASE("lora: outputs equal a hand-written torch reference of the LoRA math", "[lora]") {
  lora_fixture fx;
  for (bool rslora : {false, true}) {
    auto net = fx.fresh();
    auto ad = attach_random(net, {.r = 3, .alpha = 6, .rslora = rslora, .init = graft::lora::init_mode::none,
                                  .rank_pattern = {{"conv3", 2}}, .alpha_pattern = {{"l.n1", 5}}});
    REQUIRE(ad.layers().size() == 4);
    CHECK(ad.layers()[1].path == "conv3");
    CHECK(ad.layers()[1].r == 2);
    CHECK(ad.layers()[3].alpha == 5);
    auto y = fx.run(net);
    graft::lora::save(ad, fx.dir.file("adapter"));
    graft::write_safetensors(fx.dir.file("graft_out.safetensors"), {{"y", y}});
    // Two paths per layer, as PEFT computes them (never a merged weight); scales from the config.
    auto out = graft::test::run_python(graft::test::lora_net_python + R"(
d = ')" + fx.path() + R"('
m = base_net(d)
c = json.load(open(d + '/adapter/adapter_config.json'))
ad = load_file(d + '/adapter/adapter_model.safetensors')
P = 'base_model.model.'
def pattern(p, name, default):
    import re
    for k, v in p.items():
        if re.match(r'(.*\.)?(%s)$' % k, name): return v
    return default
def scale(name):
    r, a = pattern(c['rank_pattern'], name, c['r']), pattern(c['alpha_pattern'], name, c['lora_alpha'])
    assert ad[P + name + ('.lora_A.weight' if name != 'emb' else '.lora_embedding_A')].shape[0] == r
    return a / math.sqrt(r) if c['use_rslora'] else a / r
def lin(name, x):
    base = getattr(m, name)
    return base(x) + F.linear(F.linear(x, ad[P + name + '.lora_A.weight']), ad[P + name + '.lora_B.weight']) * scale(name)
def conv(name, x):
    base = getattr(m, name)
    a = F.conv2d(x, ad[P + name + '.lora_A.weight'], stride=base.stride, padding=base.padding, dilation=base.dilation)
    return base(x) + F.conv2d(a, ad[P + name + '.lora_B.weight']) * scale(name)
def emb(name, t):
    base = getattr(m, name)
    return base(t) + (F.embedding(t, ad[P + name + '.lora_embedding_A'].T) @ ad[P + name + '.lora_embedding_B'].T) * scale(name)
img, tok = inputs(d)
with torch.no_grad():
    x = m.bn(conv('conv1', torch.relu(conv('conv3', img)))).mean((2, 3))
    h = torch.relu(lin('lin1', emb('emb', tok).mean(1)))
    ref = m.fc(torch.cat([h, x], 1))
    base = m(img, tok)
y = load_file(d + '/graft_out.safetensors')['y']
print((y - ref).abs().max().item(), (y - base).abs().max().item())
)");
    double diff = 0, moved = 0;
    std::istringstream(out) >> diff >> moved;
    INFO(out);
    CHECK(diff <= 1e-5);
    CHECK(moved > 1e-2);  // the adapters do change the output
  }
}

TEST_CASE("lora: a new adapter with PEFT's default init changes nothing; attach freezes all else and reports it", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto before = fx.run(net);
  auto ad = graft::lora::attach(*net, lora_targets, {.r = 4, .alpha = 8});
  CHECK(torch::equal(fx.run(net), before));
  for (auto& l : ad.layers()) {
    CHECK(l.scale == 2.0);
    if (l.kind == graft::lora::layer_kind::embedding) {
      CHECK(l.A.abs().sum().item<double>() == 0);
      CHECK(l.B.abs().sum().item<double>() > 0);
    } else {
      CHECK(l.B.abs().sum().item<double>() == 0);
      // Kaiming-uniform with a = sqrt(5): bound 1/sqrt(fan_in).
      double fan_in = static_cast<double>(l.A[0].numel());
      CHECK(l.A.abs().max().item<double>() <= 1.0 / std::sqrt(fan_in) + 1e-6);
    }
  }
  // Only lora_A / lora_B train.
  std::vector<std::string> trainable;
  for (auto t : graft::walk(*net))
    if (t.tensor().requires_grad()) trainable.emplace_back(t.path());
  CHECK(trainable == std::vector<std::string>{"emb.lora_A.weight", "emb.lora_B.weight", "conv3.lora_A.weight", "conv3.lora_B.weight",
                                              "conv1.lora_A.weight", "conv1.lora_B.weight", "lin1.lora_A.weight", "lin1.lora_B.weight"});
  auto& r = ad.report();
  CHECK(r.trainable_before == graft::count_parameters(*fx.fresh()).elements);
  // emb (4x10 + 8x4), conv3 (4x27 + 6x4), conv1 (4x6 + 4x4), lin1 (4x8 + 16x4)
  CHECK(r.adapter_elements == 40 + 32 + 108 + 24 + 24 + 16 + 32 + 64);
  CHECK(r.trainable_after == r.adapter_elements);
  auto text = fmt::format("{}", r);
  CHECK_THAT(text, Catch::Contains("LoRA on 4 layers (340 adapter elements): trainable"));
  CHECK_THAT(text, Catch::Contains("\n  conv3 (Conv2d): r=4 scale=2"));
}

TEST_CASE("lora: bias modes and modules_to_save choose what trains and what is saved", "[lora]") {
  lora_fixture fx;
  auto trained = [](const graft::lora::adapters& a) {
    std::vector<std::string> p;
    for (auto& s : a.saved()) p.push_back(s.path);
    return p;
  };
  {
    auto net = fx.fresh();
    auto ad = graft::lora::attach(*net, "lin1.weight"_glob, {.bias = graft::lora::bias_mode::lora_only});
    CHECK(trained(ad) == std::vector<std::string>{"lin1.bias", "lin1.lora_A.weight", "lin1.lora_B.weight"});
    auto keys = graft::lora::peft_tensors(ad);
    CHECK(keys[0].first == "base_model.model.lin1.base_layer.bias");
  }
  {
    auto net = fx.fresh();
    auto ad = graft::lora::attach(*net, "lin1.weight"_glob, {.bias = graft::lora::bias_mode::all}, "fc.**"_glob);
    CHECK(trained(ad) == std::vector<std::string>{"conv3.bias", "conv1.bias", "bn.bias", "lin1.bias", "lin1.lora_A.weight",
                                                  "lin1.lora_B.weight", "fc.weight", "fc.bias"});
    CHECK(ad.report().modules_to_save == std::vector<std::string>{"fc"});
    CHECK(ad.parameters().size() == 8);
    CHECK_THAT(fmt::format("{}", ad.report()), Catch::Contains("; biases: all; trained and saved whole: fc"));
  }
}

TEST_CASE("lora: merged and unmerged outputs agree; unmerge restores the base; merge_and_unload leaves a plain model", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto base_keys = graft::state_dict(*net).keys();
  auto w0 = net->conv3->weight.detach().clone();
  auto ad = attach_random(net);
  auto y = fx.run(net);
  ad.merge();
  CHECK(ad.merged());
  CHECK(max_diff(fx.run(net), y) <= 1e-5);
  CHECK(max_diff(net->conv3->named_parameters(false)["weight"], w0) > 1e-3);  // folded in
  CHECK_THROWS_AS(ad.merge(), graft::state_error);
  ad.unmerge();
  CHECK(max_diff(net->conv3->named_parameters(false)["weight"], w0) <= 1e-6);
  CHECK(max_diff(fx.run(net), y) <= 1e-5);
  CHECK_THROWS_AS(ad.unmerge(), graft::state_error);
  ad.merge_and_unload();
  CHECK(graft::state_dict(*net).keys() == base_keys);
  CHECK(max_diff(fx.run(net), y) <= 1e-5);
  // The unloaded model takes new adapters again.
  CHECK_NOTHROW(graft::lora::attach(*net, lora_targets));
}

TEST_CASE("lora: training moves only the adapters; param groups and schedules work on them", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, lora_targets, {.r = 4, .alpha = 8}, "fc.**"_glob);
  auto frozen = graft::test::snapshot(*net);
  auto groups = graft::param_groups(*net)
                    .group("adapters", "**.lora_{A,B}.weight"_glob)
                    .group("head", "fc.**"_glob, {.lr_scale = 10})
                    .build(torch::optim::SGDOptions(0.05));
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  REQUIRE(opt.param_groups().size() == 2);
  CHECK(opt.param_groups()[0].params().size() == 8);
  CHECK(opt.param_groups()[1].params().size() == 2);
  auto target = torch::randint(0, 5, {4}, torch::kLong);
  double first = 0, last = 0;
  net->train();
  for (int step = 0; step < 30; ++step) {
    ad.refresh();
    auto loss = torch::nn::functional::cross_entropy(net->forward(fx.img, fx.tok), target);
    opt.zero_grad();
    loss.backward();
    opt.step();
    (step == 0 ? first : last) = loss.item<double>();
  }
  CHECK(last < first * 0.5);
  // The base weights did not move; the adapters and the head did.
  auto now = graft::test::snapshot(*net);
  for (std::size_t i = 0; i < now.size(); ++i) {
    INFO(now[i].first);
    if (!now[i].second.defined()) continue;
    bool trains = now[i].first.find("lora_") != std::string::npos || now[i].first.starts_with("fc.");
    bool buffer = now[i].first.starts_with("bn.running") || now[i].first.starts_with("bn.num_batches");
    if (!buffer) CHECK(torch::equal(now[i].second, frozen[i].second) == !trains);
  }
}

TEST_CASE("lora: save then load is bit-exact and gives the same outputs", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, lora_targets, {.r = 3, .alpha = 5, .rslora = true, .init = graft::lora::init_mode::none,
                                                     .bias = graft::lora::bias_mode::lora_only},
                                "fc.**"_glob);
  {
    torch::NoGradGuard no_grad;
    net->fc->weight.normal_();
    net->lin1->bias.normal_();
  }
  ad.refresh();
  auto y = fx.run(net);
  graft::lora::save(ad, fx.dir.file("adapter"), {.base_model_name_or_path = "lora-net"});
  auto config = graft::lora::read_adapter_config(fx.dir.file("adapter"));
  CHECK(config.target_names == std::vector<std::string>{"emb", "conv3", "conv1", "lin1"});
  CHECK(config.modules_to_save == std::vector<std::string>{"fc"});
  CHECK(config.base_model_name_or_path == "lora-net");
  // The file as written, as text: what peft_config_json gives, and what read_adapter_config keeps.
  CHECK(config.json == graft::lora::peft_config_json(ad, "lora-net"));
  CHECK(config.json.starts_with("{\n  \"peft_type\": \"LORA\",\n"));
  CHECK(config.json.ends_with("}\n"));
  // A name that is not UTF-8 cannot go into JSON: refused, naming the folder, nothing written.
  CHECK_THROWS_MATCHES(graft::lora::save(ad, fx.dir.file("bad-name"), {.base_model_name_or_path = "net\xff"}), graft::format_error,
                       Catch::Matchers::Message("[graft.format] cannot save to '" + fx.dir.file("bad-name") +
                                                "': base_model_name_or_path \"net\\xff\" is not valid UTF-8 (byte 3), and JSON text must be"));
  CHECK(!std::filesystem::exists(fx.dir.file("bad-name")));
  // So is a tensor-name prefix that is not UTF-8, before the folder is made.
  std::string refused = "no error";
  try {
    graft::lora::save(ad, fx.dir.file("bad-prefix"), {.prefix = "base\xc3."});
  } catch (const graft::format_error& e) {
    refused = e.what();
  }
  CHECK_THAT(refused, Catch::StartsWith("[graft.format] cannot save to '" + fx.dir.file("bad-prefix") + "': tensor name \"base\\xc3.") &&
                          Catch::EndsWith("is not valid UTF-8 (byte 4; the prefix is \"base\\xc3.\")"));
  CHECK(!std::filesystem::exists(fx.dir.file("bad-prefix")));
  CHECK(graft::read_safetensors_metadata(fx.dir.file("adapter/adapter_model.safetensors")) ==
        std::map<std::string, std::string>{{"format", "pt"}});

  auto other = fx.fresh();
  auto loaded = graft::lora::load(*other, fx.dir.file("adapter"));
  CHECK(torch::equal(fx.run(other), y));
  REQUIRE(loaded.layers().size() == ad.layers().size());
  for (std::size_t i = 0; i < ad.layers().size(); ++i) {
    CHECK(torch::equal(loaded.layers()[i].A, ad.layers()[i].A));
    CHECK(torch::equal(loaded.layers()[i].B, ad.layers()[i].B));
    CHECK(loaded.layers()[i].scale == ad.layers()[i].scale);
  }
  CHECK(torch::equal(other->fc->weight, net->fc->weight));
  CHECK(torch::equal(other->lin1->bias, net->lin1->bias));

  // merge_into folds the folder into a plain checkpoint: the merged model's own weights.
  auto sd = graft::read(fx.dir.file("base.safetensors")).load();
  auto rep = graft::lora::merge_into(sd, fx.dir.file("adapter"));
  CHECK(rep.merged == std::vector<std::string>{"conv1.weight", "conv3.weight", "emb.weight", "lin1.weight"});
  CHECK(rep.replaced == std::vector<std::string>{"conv3.bias", "conv1.bias", "lin1.bias", "fc.weight", "fc.bias"});
  ad.merge_and_unload();
  auto merged = graft::state_dict(*net);
  for (auto& e : merged) {
    INFO(e.key);
    CHECK(max_diff(sd.at(e.key), e.tensor) <= 1e-6);
  }
}

TEST_CASE("lora: refused inputs name what is wrong and change nothing", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto before = graft::test::snapshot(*net);
  auto unchanged = [&] { return graft::test::same_state(before, *net) && net->lin1->named_children().is_empty(); };

  SECTION("a layer type LoRA cannot wrap") {
    try {
      graft::lora::attach(*net, "{bn,lin1}.weight"_glob);
      FAIL("no error");
    } catch (const graft::selection_error& e) {
      CHECK_THAT(e.what(), Catch::Contains("LoRA cannot wrap 'bn' (BatchNorm2d)"));
      CHECK_THAT(e.what(), Catch::Contains("graft::lora::wrappable"));
    }
    CHECK(unchanged());
    CHECK_NOTHROW(graft::lora::attach(*net, "**"_glob & graft::lora::wrappable));
  }
  SECTION("an empty selection") {
    CHECK_THROWS_WITH(graft::lora::attach(*net, "lin2.weight"_glob), Catch::Contains("did you mean 'lin1.weight'"));
    CHECK(unchanged());
  }
  SECTION("a rank that is not positive, a bad pattern") {
    CHECK_THROWS_AS(graft::lora::attach(*net, lora_targets, {.r = 0}), graft::option_error);
    CHECK_THROWS_AS(graft::lora::attach(*net, lora_targets, {.rank_pattern = {{"lin(", 2}}}), graft::pattern_error);
    CHECK(unchanged());
  }
  SECTION("adapters on adapters") {
    graft::lora::attach(*net, "lin1.weight"_glob);
    auto after_first = graft::test::snapshot(*net);
    CHECK_THROWS_WITH(graft::lora::attach(*net, "lin1.weight"_glob), Catch::Contains("'lin1' has LoRA adapters already"));
    CHECK(graft::test::same_state(after_first, *net));
  }
  SECTION("a module both adapted and saved whole, the model itself") {
    CHECK_THROWS_WITH(graft::lora::attach(*net, "lin1.weight"_glob, {}, "lin1.**"_glob),
                      Catch::Contains("'lin1' is both a LoRA target and (through 'lin1.weight') a module to save"));
    CHECK(unchanged());
    auto lin = torch::nn::Linear(3, 4);
    CHECK_THROWS_WITH(graft::lora::attach(*lin, "weight"_glob), Catch::Contains("LoRA cannot wrap the model itself"));
  }
  SECTION("a grouped convolution") {
    auto seq = torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 4, 3).groups(2)));
    CHECK_THROWS_WITH(graft::lora::attach(*seq, "0.weight"_glob), Catch::Contains("'0' (Conv2d with groups=2)"));
  }
  SECTION("libtorch's Embedding with options PEFT applies to lora_A apart") {
    namespace nn = torch::nn;
    for (auto [opts, says] : {std::pair{nn::EmbeddingOptions(6, 4).max_norm(1.5), "'0' (torch::nn::Embedding with max_norm=1.5"},
                              std::pair{nn::EmbeddingOptions(6, 4).scale_grad_by_freq(true), "with scale_grad_by_freq: lora_B's gradient"},
                              std::pair{nn::EmbeddingOptions(6, 4).sparse(true), "with sparse: the gradient"}}) {
      auto seq = nn::Sequential(nn::Embedding(opts));
      auto seq_before = graft::test::snapshot(*seq);
      try {
        graft::lora::attach(*seq, "0.weight"_glob);
        FAIL("no error");
      } catch (const graft::option_error& e) {
        CHECK_THAT(e.what(), Catch::Contains(says) && Catch::Contains("make the layer a graft::lora::Embedding"));
      }
      CHECK(graft::test::same_state(seq_before, *seq));
      // graft's own Embedding takes the same options.
      auto own = nn::Sequential(graft::lora::Embedding(opts));
      CHECK(graft::lora::attach(*own, "0.weight"_glob).layers().size() == 1);
    }
  }
  SECTION("adapter folders that do not fit") {
    auto src = fx.fresh();
    graft::lora::save(graft::lora::attach(*src, lora_targets, {.r = 4}), fx.dir.file("good"));
    auto copy = [&](const std::string& name) {
      std::filesystem::copy(fx.dir.file("good"), fx.dir.file(name), std::filesystem::copy_options::recursive);
      return fx.dir.file(name);
    };
    auto edit_config = [&](const std::string& folder, const std::string& from, const std::string& to) {
      std::ifstream in(folder + "/adapter_config.json");
      std::string text((std::istreambuf_iterator<char>(in)), {});
      auto at = text.find(from);
      REQUIRE(at != std::string::npos);
      text.replace(at, from.size(), to);
      std::ofstream(folder + "/adapter_config.json") << text;
    };
    auto rewrite_weights = [&](const std::string& folder, auto change) {
      auto sd = graft::read(folder + "/adapter_model.safetensors").load();
      std::vector<std::pair<std::string, torch::Tensor>> t;
      for (auto& e : sd) t.emplace_back(e.key, e.tensor.clone());
      change(t);
      graft::write_safetensors(folder + "/adapter_model.safetensors", t);
    };

    CHECK_THROWS_WITH(graft::lora::load(*net, fx.dir.file("none")), Catch::Contains("no adapter_config.json in"));
    auto rank = copy("rank");
    edit_config(rank, "\"r\": 4", "\"r\": 2");
    try {
      graft::lora::load(*net, rank);
      FAIL("no error");
    } catch (const graft::shape_error& e) {
      CHECK(e.context().key == "base_model.model.emb.lora_embedding_A");
      CHECK_THAT(e.what(), Catch::Contains("has shape [4, 10] but the lora_A of 'emb' (Embedding of rank 2) has [2, 10]"));
    }
    auto stray = copy("stray");
    rewrite_weights(stray, [](auto& t) { t.emplace_back("base_model.model.lin2.lora_A.weight", torch::zeros({4, 8})); });
    CHECK_THROWS_WITH(graft::lora::load(*net, stray), Catch::Contains("'base_model.model.lin2.lora_A.weight' matches no LoRA layer"));
    auto missing = copy("missing");
    rewrite_weights(missing, [](auto& t) { t.pop_back(); });
    CHECK_THROWS_WITH(graft::lora::load(*net, missing), Catch::Contains("has no lora_B for 'lin1'"));
    auto dora = copy("dora");
    edit_config(dora, "\"use_dora\": false", "\"use_dora\": true");
    CHECK_THROWS_WITH(graft::lora::load(*net, dora), Catch::Contains("has no lora_magnitude_vector for 'emb', a layer target_modules picks (use_dora is true)"));
    // Initializations that change the base weights in a way no load can repeat: refused by name.
    for (std::string init : {"pissa_niter_4", "loftq", "corda"}) {
      auto changed = copy(init);
      edit_config(changed, "\"init_lora_weights\": true", "\"init_lora_weights\": \"" + init + "\"");
      CHECK_THROWS_WITH(graft::lora::load(*net, changed),
                        Catch::Contains("init_lora_weights is '" + init + "': PEFT changes the base weights") &&
                            Catch::Contains("convert_to_lora") && Catch::Contains("path_initial_model_for_weight_conversion"));
    }
    // PiSSA and OLoRA start Linear layers only (this folder also targets an Embedding).
    for (std::string init : {"pissa", "olora"}) {
      auto changed = copy(init);
      edit_config(changed, "\"init_lora_weights\": true", "\"init_lora_weights\": \"" + init + "\"");
      CHECK_THROWS_WITH(graft::lora::load(*net, changed), Catch::Contains("LoRA init '" + init + "' starts Linear layers only, as in PEFT; 'emb' is Embedding"));
    }
    auto unknown = copy("unknown_init");
    edit_config(unknown, "\"init_lora_weights\": true", "\"init_lora_weights\": \"spectral\"");
    CHECK_THROWS_WITH(graft::lora::load(*net, unknown), Catch::Contains("init_lora_weights is 'spectral', an initialization graft does not know"));
    // A config that is not the JSON it should be: refused naming the file, and the key or byte.
    auto typed = copy("typed");
    edit_config(typed, "\"r\": 4", "\"r\": \"4\"");
    CHECK_THROWS_WITH(graft::lora::load(*net, typed), Catch::Contains("adapter_config.json': r is a JSON string, not an integer"));
    auto targets = copy("targets");
    edit_config(targets, "\"target_modules\": [", "\"target_modules\": [1, ");
    CHECK_THROWS_WITH(graft::lora::load(*net, targets),
                      Catch::Contains("adapter_config.json': target_modules holds a JSON number, not only strings"));
    auto broken = copy("broken");
    edit_config(broken, "\"use_dora\": false", "\"use_dora\": fals");
    CHECK_THROWS_WITH(graft::lora::load(*net, broken), Catch::Contains("adapter_config.json': invalid JSON at byte") &&
                                                           Catch::Contains("',' where the rest of 'false' should be"));
    auto twice = copy("twice");
    edit_config(twice, "\"use_dora\": false", "\"use_dora\": false, \"use_dora\": false");
    CHECK_THROWS_WITH(graft::lora::load(*net, twice), Catch::Contains("adapter_config.json': key 'use_dora' appears twice in one JSON object"));
    auto bn = copy("bn");
    edit_config(bn, "\"lin1\"", "\"bn\"");
    CHECK_THROWS_WITH(graft::lora::load(*net, bn), Catch::Contains("LoRA cannot wrap 'bn' (BatchNorm2d), picked by 'target_modules'"));
    auto nothing = copy("nothing");
    edit_config(nothing, "\"target_modules\": [", "\"target_modules\": [\"x\"], \"unused\": [");
    rewrite_weights(nothing, [](auto& t) { t.clear(); });
    CHECK_THROWS_WITH(graft::lora::load(*net, nothing), Catch::Contains("match no module"));
    CHECK(unchanged());
  }
}

static_assert(!std::is_copy_constructible_v<graft::lora::adapters>, "a copy's merge() would not be seen by the original");
static_assert(std::is_move_constructible_v<graft::lora::adapters>);

TEST_CASE("lora: dropout drops A's input features while training, never in eval or without gradients", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, "lin1.weight"_glob, {.r = 4, .alpha = 4, .dropout = 0.5, .init = graft::lora::init_mode::none});
  auto exact = net->lin1->named_parameters(false)["weight"] + ad.layers()[0].delta();
  net->train();
  ad.refresh();
  auto w1 = net->lin1->weight.detach().clone();
  ad.refresh();
  auto w2 = net->lin1->weight.detach().clone();
  CHECK(!torch::equal(w1, w2));  // a new mask each step
  // Dropped columns of A: those columns of the weight equal W0's.
  auto base = net->lin1->named_parameters(false)["weight"];
  auto kept_columns = (w1 - base).abs().sum(0).gt(0).sum().item<std::int64_t>();
  CHECK(kept_columns > 0);
  CHECK(kept_columns < 8);
  net->eval();
  ad.refresh();
  CHECK(max_diff(net->lin1->weight, exact) <= 1e-6);
  net->train();
  {
    torch::NoGradGuard no_grad;
    ad.refresh();
  }
  CHECK(max_diff(net->lin1->weight, exact) <= 1e-6);
}

TEST_CASE("lora: a module to save keeps its statistics in the file; a list that would match more is written as a regex", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, "lin1.weight"_glob, {.init = graft::lora::init_mode::none}, "bn.**"_glob);
  {
    torch::NoGradGuard no_grad;
    net->bn->running_mean.add_(1.5);
  }
  graft::lora::save(ad, fx.dir.file("bn"));
  auto file = graft::read(fx.dir.file("bn/adapter_model.safetensors")).load();
  CHECK(file.contains("base_model.model.bn.running_mean"));
  CHECK(file.contains("base_model.model.bn.num_batches_tracked"));
  auto other = fx.fresh();
  graft::lora::load(*other, fx.dir.file("bn"));
  CHECK(torch::equal(other->bn->running_mean, net->bn->running_mean));

  // "0" as a list entry would also name "1.0": the file names exactly layer "0".
  auto nested = [] {
    torch::nn::ModuleList inner(torch::nn::Linear(3, 3));
    torch::nn::ModuleList outer(torch::nn::Linear(3, 3));
    outer->push_back(inner);
    return outer;
  };
  auto seq = nested();
  graft::lora::save(graft::lora::attach(*seq, "0.weight"_glob), fx.dir.file("seq"));
  auto config = graft::lora::read_adapter_config(fx.dir.file("seq"));
  REQUIRE(config.target_regex);
  CHECK(*config.target_regex == "(?:0)");
  auto again = nested();
  CHECK(graft::lora::peft_targets(*again, config) == std::vector<std::string>{"0"});
  CHECK(graft::lora::load(*again, fx.dir.file("seq")).layers().size() == 1);
}

TEST_CASE("lora: merge_into refuses factors that do not fit, naming them, and leaves the checkpoint alone", "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  graft::lora::save(graft::lora::attach(*net, "lin1.weight"_glob, {.r = 4}), fx.dir.file("ok"));
  auto folder = fx.dir.file("bad");
  std::filesystem::create_directories(folder);
  std::filesystem::copy_file(fx.dir.file("ok/adapter_config.json"), folder + "/adapter_config.json");
  auto base = graft::read(fx.dir.file("base.safetensors")).load();
  auto keys = base.keys();
  for (auto& [a, b, why] : std::vector<std::tuple<std::vector<std::int64_t>, std::vector<std::int64_t>, std::string>>{
           {{4, 8}, {16, 3}, "lora_B must be [out, r, 1...]"},
           {{0, 8}, {16, 0}, "the factors must be non-empty"},
           {{2, 8}, {16, 2}, "the config's rank for 'lin1' is 4"},
           {{4, 8}, {16, 4, 3, 3}, "lora_B must be [out, r, 1...]"}}) {
    graft::write_safetensors(folder + "/adapter_model.safetensors",
                             {{"base_model.model.lin1.lora_A.weight", torch::zeros(a)}, {"base_model.model.lin1.lora_B.weight", torch::zeros(b)}});
    auto sd = graft::read(fx.dir.file("base.safetensors")).load();
    CHECK_THROWS_WITH(graft::lora::merge_into(sd, folder), Catch::Contains(why) && Catch::Contains("base_model.model.lin1.lora_A.weight"));
    CHECK(sd.keys() == keys);
    CHECK(torch::equal(sd.at("lin1.weight"), base.at("lin1.weight")));
  }
}

// Evaluating after the optimizer's last step used to evaluate the weights of the step before,
// unless the user remembered refresh(). graft::lr_scheduler::step(), which follows the
// optimizer's step, now brings the merged weights up to date; merge() and save() read A and B
// themselves and never needed it.
TEST_CASE("lora: after an optimizer step, lr_scheduler::step updates the weights an evaluation reads; merge and save need no refresh",
          "[lora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = attach_random(net);
  torch::optim::SGD opt(ad.parameters(), torch::optim::SGDOptions(0.5));
  graft::lr_scheduler sched(opt, graft::step_lr{.step_size = 10});
  auto target = torch::randint(0, 5, {4}, torch::kLong);
  const auto train_step = [&] {
    ad.refresh();
    auto loss = torch::nn::functional::cross_entropy(net->forward(fx.img, fx.tok), target);
    opt.zero_grad();
    loss.backward();
    opt.step();
  };
  train_step();
  auto before_step = fx.run(net);  // the weights of the step before: what a stale evaluation sees
  sched.step();
  auto evaluated = fx.run(net);    // no refresh() in between
  ad.refresh();
  auto refreshed = fx.run(net);
  CHECK(max_diff(before_step, refreshed) > 1e-3);  // the step changed the function
  CHECK(max_diff(evaluated, refreshed) <= 1e-6);

  // A training forward still needs refresh(): without it, backward() fails loudly.
  train_step();
  sched.step();
  auto loss = torch::nn::functional::cross_entropy(net->forward(fx.img, fx.tok), target);
  CHECK_THROWS(loss.backward());

  // save() after a step, with no refresh() and no scheduler: the saved adapter is the stepped one.
  train_step();
  graft::lora::save(ad, fx.dir.file("after_step"));
  ad.refresh();
  auto stepped = fx.run(net);
  auto loaded = fx.fresh();
  auto loaded_ad = graft::lora::load(*loaded, fx.dir.file("after_step"));
  CHECK(max_diff(fx.run(loaded), stepped) <= 1e-5);

  // merge() after a step, likewise.
  train_step();
  ad.merge();
  auto after_merge = fx.run(net);
  ad.unmerge();  // refreshes
  CHECK(max_diff(after_merge, fx.run(net)) <= 1e-5);
}
