// DoRA (options::dora): the math against a hand-written torch reference of PEFT's formulas,
// merge/unmerge/unload, dropout, training and save/load round trips, on libtorch's layers and
// on graft's own. (tests/lora/test_lora_dora_peft.cpp checks it against the peft package.)
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include <graft/optim.hpp>

#include "lora_net.hpp"

using namespace graft::literals;
using graft::test::lora_fixture;
using graft::test::max_diff;

namespace {

const auto dora_targets = "{emb,conv3,conv1,lin1}.weight"_glob;
const graft::lora::options dora_random{.r = 3, .alpha = 6, .dora = true, .init = graft::lora::init_mode::none};

// Magnitudes moved away from their start, as training moves them.
void move_magnitudes(graft::lora::adapters& ad) {
  torch::NoGradGuard no_grad;
  for (auto& l : ad.layers()) l.magnitude.mul_(1 + 0.3 * torch::randn_like(l.magnitude));
  ad.refresh();
}

// PEFT's DoRA weight by hand: m / ‖W0 + scale·ΔW‖ · (W0 + scale·ΔW), per output row (per
// embedding dimension for an embedding).
torch::Tensor dora_reference(const graft::lora::layer& l) {
  torch::NoGradGuard no_grad;
  auto w = l.base + l.delta();
  if (l.kind == graft::lora::layer_kind::embedding) return w * (l.magnitude.view({1, -1}) / w.norm(2, {0}).view({1, -1}));
  auto rows = w.flatten(1).norm(2, {1});
  std::vector<std::int64_t> shape(static_cast<std::size_t>(w.dim()), 1);
  shape[0] = -1;
  return w * (l.magnitude.reshape(shape) / rows.view(shape));
}

} // namespace

TEST_CASE("lora/dora: a new adapter changes nothing; each layer's weight is PEFT's DoRA weight, on both routes", "[lora][dora]") {
  lora_fixture fx;
  auto y0 = fx.run(fx.net);
  {
    // PEFT's default init (B zero): m starts as the row norms of W0, so outputs do not move.
    auto net = fx.fresh();
    auto ad = graft::lora::attach(*net, dora_targets, {.r = 2, .dora = true});
    CHECK(max_diff(fx.run(net), y0) <= 1e-5);
    const auto& lin = ad.layers().back();
    REQUIRE(lin.path == "lin1");
    CHECK(lin.magnitude.sizes() == c10::IntArrayRef({16}));
    CHECK(max_diff(lin.magnitude, lin.base.norm(2, {1})) <= 1e-6);
    // Conv magnitudes have PEFT's shape [1, out, 1, 1]; an embedding's one entry per dimension.
    CHECK(ad.layers()[1].magnitude.sizes() == c10::IntArrayRef({1, 6, 1, 1}));
    CHECK(ad.layers()[0].magnitude.sizes() == c10::IntArrayRef({8}));
    // Magnitudes train and are saved with the factors; the report counts them.
    std::int64_t m_elements = 8 + 6 + 4 + 16;
    std::int64_t factors = 0;
    for (auto& l : ad.layers()) factors += l.A.numel() + l.B.numel();
    CHECK(ad.report().adapter_elements == factors + m_elements);
    CHECK(ad.parameters().size() == 12);
    CHECK(graft::state_dict(*net).contains("lin1.lora_magnitude_vector.weight"));
  }
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, dora_targets, dora_random);
  move_magnitudes(ad);
  for (auto& l : ad.layers()) {
    INFO(l.path);
    CHECK(max_diff(*l.weight, dora_reference(l)) <= 1e-6);
  }
  auto y = fx.run(net);
  CHECK(max_diff(y, y0) > 1e-3);
  // graft's own layers compute the same on the activations.
  auto own = fx.fresh<graft::test::OwnLoraNet>();
  auto own_ad = graft::lora::attach(*own, dora_targets, dora_random);
  {
    torch::NoGradGuard no_grad;
    for (std::size_t i = 0; i < ad.layers().size(); ++i) {
      own_ad.layers()[i].A.copy_(ad.layers()[i].A);
      own_ad.layers()[i].B.copy_(ad.layers()[i].B);
      own_ad.layers()[i].magnitude.copy_(ad.layers()[i].magnitude);
    }
  }
  CHECK(max_diff(fx.run(own), y) <= 1e-5);
}

TEST_CASE("lora/dora: merge, unmerge and unload keep the outputs and give back W0; save and load are bit-exact", "[lora][dora]") {
  lora_fixture fx;
  for (bool own_layers : {false, true}) {
    INFO((own_layers ? "graft's own layers" : "libtorch's layers"));
    auto run = [&](auto& net) {
      auto base_keys = graft::state_dict(*net).keys();
      auto w0 = net->conv3->named_parameters(false)["weight"].detach().clone();
      auto ad = graft::lora::attach(*net, dora_targets, dora_random);
      move_magnitudes(ad);
      auto y = fx.run(net);
      auto merged_conv3 = dora_reference(ad.layers()[1]);
      ad.merge();
      CHECK(max_diff(fx.run(net), y) <= 1e-5);
      CHECK(max_diff(net->conv3->named_parameters(false)["weight"], merged_conv3) <= 1e-6);
      ad.unmerge();
      CHECK(max_diff(net->conv3->named_parameters(false)["weight"], w0) <= 1e-5);
      CHECK(max_diff(fx.run(net), y) <= 1e-5);

      graft::lora::save(ad, fx.dir.file("dora"));
      auto again = fx.template fresh<std::decay_t<decltype(net)>>();
      auto loaded = graft::lora::load(*again, fx.dir.file("dora"));
      for (std::size_t i = 0; i < ad.layers().size(); ++i) CHECK(torch::equal(loaded.layers()[i].magnitude, ad.layers()[i].magnitude));
      CHECK(torch::equal(fx.run(again), y));

      ad.merge_and_unload();
      CHECK(graft::state_dict(*net).keys() == base_keys);
      CHECK(max_diff(fx.run(net), y) <= 1e-5);
    };
    if (own_layers) {
      auto net = fx.fresh<graft::test::OwnLoraNet>();
      run(net);
    } else {
      auto net = fx.fresh();
      run(net);
    }
  }
}

TEST_CASE("lora/dora: dropout, as PEFT: the base term is recomputed on the dropped input", "[lora][dora]") {
  lora_fixture fx;
  SECTION("libtorch's Linear: one mask over input features per step") {
    auto net = fx.fresh();
    auto ad = graft::lora::attach(*net, "lin1.weight"_glob, {.r = 4, .alpha = 4, .dropout = 0.5, .dora = true, .init = graft::lora::init_mode::none});
    move_magnitudes(ad);
    const auto& l = ad.layers()[0];
    net->train();
    ad.refresh();
    auto w = net->lin1->weight.detach();
    // A dropped input feature's column is W0's; a kept one is PEFT's
    // W0 + (m/‖·‖ - 1)·W0·2 + m/‖·‖·scale·B·A·2 (the mask scaled by 1/(1 - p)).
    torch::NoGradGuard no_grad;
    auto ratio = (l.magnitude / (l.base + l.delta()).norm(2, {1})).view({-1, 1});
    auto kept = l.base + (ratio - 1) * l.base * 2 + ratio * l.delta() * 2;
    int dropped = 0, kept_n = 0;
    for (std::int64_t c = 0; c < w.size(1); ++c) {
      INFO("column " << c);
      if (max_diff(w.select(1, c), l.base.select(1, c)) == 0) {
        ++dropped;
      } else {
        ++kept_n;
        CHECK(max_diff(w.select(1, c), kept.select(1, c)) <= 1e-5);
      }
    }
    CHECK(dropped > 0);
    CHECK(kept_n > 0);
  }
  SECTION("graft's own Linear: PEFT's formula with the same mask") {
    auto net = fx.fresh<graft::test::OwnLoraNet>();
    auto ad = graft::lora::attach(*net, "lin1.weight"_glob, {.r = 4, .alpha = 4, .dropout = 0.5, .dora = true, .init = graft::lora::init_mode::none});
    move_magnitudes(ad);
    const auto& l = ad.layers()[0];
    net->train();
    auto x = torch::randn({6, 8});
    torch::manual_seed(99);
    auto y = net->lin1->forward(x);
    torch::manual_seed(99);
    auto xd = torch::dropout(x, 0.5, true);
    torch::NoGradGuard no_grad;
    auto ratio = l.magnitude / (l.base + l.delta()).norm(2, {1});
    auto want = torch::nn::functional::linear(x, l.base, net->lin1->bias) + (ratio - 1) * torch::matmul(xd, l.base.t()) +
                ratio * torch::matmul(xd, l.delta().t());
    CHECK(max_diff(y, want) <= 1e-5);
    CHECK(!torch::equal(xd, x));
  }
}

TEST_CASE("lora/dora: the magnitudes train; after a step that moved only them an evaluation sees them", "[lora][dora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, dora_targets, dora_random);
  auto m0 = ad.layers().back().magnitude.detach().clone();
  auto a0 = ad.layers().back().A.detach().clone();
  // Only the magnitudes step: the weights must follow them alone.
  std::vector<torch::Tensor> magnitudes;
  for (auto& l : ad.layers()) magnitudes.push_back(l.magnitude);
  torch::optim::SGD opt(magnitudes, torch::optim::SGDOptions(0.1));
  graft::lr_scheduler sched(opt, graft::step_lr{.step_size = 10});
  net->train();
  ad.refresh();
  auto y = net->forward(fx.img, fx.tok);
  y.pow(2).mean().backward();
  CHECK(ad.layers().back().magnitude.grad().defined());
  opt.step();
  sched.step();
  CHECK(max_diff(ad.layers().back().magnitude, m0) > 1e-4);
  CHECK(torch::equal(ad.layers().back().A, a0));
  // The scheduler's step recomputed the weights from the new A, B and m.
  for (auto& l : ad.layers()) {
    INFO(l.path);
    CHECK(max_diff(*l.weight, dora_reference(l)) <= 1e-6);
  }
}

TEST_CASE("lora/dora: magnitudes that do not fit are refused by name, the model unchanged", "[lora][dora]") {
  lora_fixture fx;
  auto net = fx.fresh();
  auto ad = graft::lora::attach(*net, "{conv3,lin1}.weight"_glob, {.r = 2, .dora = true, .init = graft::lora::init_mode::none});
  graft::lora::save(ad, fx.dir.file("dora"));
  auto tensors = graft::read(fx.dir.file("dora/adapter_model.safetensors")).load();
  auto config_text = [&] {
    std::ifstream in(fx.dir.file("dora/adapter_config.json"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }();
  auto variant = [&](const std::string& name, auto edit_tensors, std::string config) {
    std::filesystem::create_directories(fx.dir.file(name));
    std::vector<std::pair<std::string, torch::Tensor>> file;
    for (auto& e : tensors) file.emplace_back(e.key, e.tensor);
    edit_tensors(file);
    graft::write_safetensors(fx.dir.file(name + "/adapter_model.safetensors"), file);
    std::ofstream(fx.dir.file(name + "/adapter_config.json")) << config;
    return fx.dir.file(name);
  };
  auto plain_config = config_text;
  plain_config.replace(plain_config.find("\"use_dora\": true"), 16, "\"use_dora\": false");
  auto fresh = fx.fresh();
  auto before = graft::test::snapshot(*fresh);
  const std::string m_key = "base_model.model.lin1.lora_magnitude_vector";
  auto wrong_shape = variant("wrong_shape", [&](auto& file) {
    for (auto& [k, t] : file)
      if (k == m_key) t = torch::ones({15});
  }, config_text);
  try {
    graft::lora::load(*fresh, wrong_shape);
    FAIL("no error");
  } catch (const graft::shape_error& e) {
    CHECK(e.context().key == m_key);
    CHECK_THAT(e.what(), Catch::Contains("has shape [15] but the DoRA magnitude of 'lin1' (Linear) has [16]"));
  }
  auto not_dora = variant("not_dora", [](auto&) {}, plain_config);
  CHECK_THROWS_WITH(graft::lora::load(*fresh, not_dora),
                    Catch::Contains("'base_model.model.conv3.lora_magnitude_vector' is a DoRA magnitude vector, but the folder's "
                                   "adapter_config.json has use_dora false"));
  CHECK(graft::test::same_state(before, *fresh));
  // merge_into likewise, the checkpoint unchanged.
  auto sd = graft::read(fx.dir.file("base.safetensors")).load();
  auto w = sd.at("lin1.weight").clone();
  CHECK_THROWS_WITH(graft::lora::merge_into(sd, wrong_shape), Catch::Contains("a DoRA magnitude has one entry per output row (16)"));
  CHECK_THROWS_WITH(graft::lora::merge_into(sd, not_dora), Catch::Contains("has use_dora false"));
  CHECK(torch::equal(sd.at("lin1.weight"), w));
}
