// graft's own LoRA layer types (graft/lora/layers.hpp): the same function, gradients, files
// and merges as the weight route on libtorch's layers, computed on the activations.
#include <catch2/catch.hpp>

#include "lora_net.hpp"

using namespace graft::literals;
using graft::test::lora_fixture;
using graft::test::max_diff;
using graft::test::OwnLoraNet;
namespace F = torch::nn::functional;

namespace {

const auto own_targets = "{emb,conv3,conv1,lin1}.weight"_glob;

// The model's output and each adapter factor's gradient, for a loss with a fixed weighting.
template <class Net>
std::pair<torch::Tensor, std::vector<torch::Tensor>> output_and_grads(const lora_fixture& fx, Net& net, graft::lora::adapters& ad) {
  ad.refresh();
  auto y = net->forward(fx.img, fx.tok);
  (y * torch::arange(y.numel(), y.options()).view(y.sizes())).sum().backward();
  std::vector<torch::Tensor> grads;
  for (auto& l : ad.layers()) {
    grads.push_back(l.A.grad().clone());
    grads.push_back(l.B.grad().clone());
  }
  for (auto& p : ad.parameters()) p.mutable_grad() = torch::Tensor();
  return {y.detach(), grads};
}

} // namespace

TEST_CASE("lora: graft's own layer types give the weight route's outputs and gradients, and keep W0 as their weight", "[lora]") {
  lora_fixture fx;
  auto plain = fx.fresh();
  auto own = fx.fresh<OwnLoraNet>();
  auto y0 = fx.run(plain);
  CHECK(torch::equal(fx.run(own), y0));  // before attach: libtorch's layers exactly
  CHECK(graft::state_dict(*own).keys() == graft::state_dict(*plain).keys());

  graft::lora::options o{.r = 3, .alpha = 6, .rslora = true, .init = graft::lora::init_mode::none, .bias = graft::lora::bias_mode::lora_only};
  torch::manual_seed(11);
  auto a = graft::lora::attach(*plain, own_targets, o, "fc.**"_glob);
  torch::manual_seed(11);
  auto b = graft::lora::attach(*own, own_targets, o, "fc.**"_glob);
  REQUIRE(a.layers().size() == 4);
  REQUIRE(b.layers().size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    INFO(b.layers()[i].path);
    CHECK(torch::equal(a.layers()[i].A, b.layers()[i].A));
    CHECK(torch::equal(a.layers()[i].B, b.layers()[i].B));
    CHECK(a.layers()[i].own_layer == nullptr);
    CHECK(b.layers()[i].own_layer != nullptr);
    // The weight member the forward reads stays the registered W0.
    CHECK(b.layers()[i].weight->unsafeGetTensorImpl() == b.layers()[i].base.unsafeGetTensorImpl());
    CHECK(a.layers()[i].weight->unsafeGetTensorImpl() != a.layers()[i].base.unsafeGetTensorImpl());
  }
  CHECK(graft::state_dict(*own).keys() == graft::state_dict(*plain).keys());

  auto [ya, ga] = output_and_grads(fx, plain, a);
  auto [yb, gb] = output_and_grads(fx, own, b);
  CHECK(max_diff(ya, yb) <= 1e-5);
  CHECK(max_diff(yb, y0) > 1e-2);  // the adapters do change the output
  REQUIRE(ga.size() == gb.size());
  for (std::size_t i = 0; i < ga.size(); ++i) {
    INFO(i);
    CHECK(max_diff(ga[i], gb[i]) <= 1e-4 * std::max(1.0, ga[i].abs().max().item<double>()));
  }

  // Merged, the forward skips the adapter (else it would count twice); unmerged, it is back.
  b.merge();
  CHECK(max_diff(fx.run(own), yb) <= 1e-5);
  b.unmerge();
  CHECK(max_diff(fx.run(own), yb) <= 1e-5);
  // unload() without merging: libtorch's layers again, bit for bit.
  auto own2 = fx.fresh<OwnLoraNet>();
  auto c = graft::lora::attach(*own2, own_targets, o);
  c.unload();
  CHECK(torch::equal(fx.run(own2), y0));
  // merge_and_unload(): the merged function, the original keys, and attach works again.
  b.merge_and_unload();
  CHECK(max_diff(fx.run(own), yb) <= 1e-5);
  CHECK(graft::state_dict(*own).keys() == graft::state_dict(*fx.fresh()).keys());
  auto again = graft::lora::attach(*own, "lin1.weight"_glob, {.r = 2, .init = graft::lora::init_mode::none});
  CHECK(max_diff(fx.run(own), yb) > 1e-4);
}

TEST_CASE("lora: graft's own layers drop the adapter's input while training, as PEFT does, and work inside Sequential", "[lora]") {
  torch::manual_seed(2);
  torch::nn::Sequential seq(graft::lora::Linear(8, 6), torch::nn::ReLU(), graft::lora::Linear(6, 3));
  auto ad = graft::lora::attach(*seq, "{0,2}.weight"_glob, {.r = 4, .alpha = 8, .dropout = 0.5, .init = graft::lora::init_mode::none});
  REQUIRE(ad.layers().size() == 2);
  auto& l = ad.layers()[0];
  auto x = torch::randn({5, 8});
  auto bias = seq->ptr(0)->named_parameters(false)["bias"];
  auto expect = [&](const torch::Tensor& in) { return F::linear(x, l.base, bias) + l.scale * F::linear(F::linear(in, l.A), l.B); };
  auto first = seq->ptr(0)->as<graft::lora::Linear>();
  REQUIRE(first != nullptr);
  first->train();
  torch::manual_seed(5);
  auto y = first->forward(x);
  torch::manual_seed(5);
  auto dropped = torch::dropout(x, 0.5, true);
  CHECK(max_diff(y, expect(dropped)) <= 1e-6);
  CHECK(max_diff(y, expect(x)) > 1e-3);
  first->eval();
  CHECK(max_diff(first->forward(x), expect(x)) <= 1e-6);
  // Sequential calls graft's forward(): the whole model's output has both adapters.
  seq->eval();
  auto with = seq->forward(x);
  ad.merge();
  CHECK(max_diff(seq->forward(x), with) <= 1e-5);
  ad.unload();
  CHECK(max_diff(seq->forward(x), with) <= 1e-5);  // merged weights kept
}

TEST_CASE("lora: graft's own convolutions match their merged weights for any padding mode, dilation and stride", "[lora]") {
  torch::manual_seed(4);
  torch::nn::Sequential seq(graft::lora::Conv1d(torch::nn::Conv1dOptions(3, 4, 3).padding(2).dilation(2).padding_mode(torch::kCircular)),
                            graft::lora::Conv2d(torch::nn::Conv2dOptions(4, 5, 3).stride(2).padding(1).padding_mode(torch::kReflect)),
                            graft::lora::Conv3d(torch::nn::Conv3dOptions(5, 2, {1, 3, 3}).padding({0, 1, 1}).padding_mode(torch::kReplicate)));
  auto x = torch::randn({2, 3, 10});
  auto run = [&] {
    torch::NoGradGuard no_grad;
    auto y1 = seq->ptr(0)->as<graft::lora::Conv1d>()->forward(x);
    auto y2 = seq->ptr(1)->as<graft::lora::Conv2d>()->forward(y1.unsqueeze(-1).expand({-1, -1, -1, 6}).contiguous());
    return seq->ptr(2)->as<graft::lora::Conv3d>()->forward(y2.unsqueeze(2));
  };
  auto before = run();
  auto ad = graft::lora::attach(*seq, "**.weight"_glob, {.r = 2, .alpha = 3, .init = graft::lora::init_mode::none});
  REQUIRE(ad.layers().size() == 3);
  auto unmerged = run();
  CHECK(max_diff(unmerged, before) > 1e-3);
  ad.merge();
  CHECK(max_diff(run(), unmerged) <= 1e-5);
}
