#include <catch2/catch.hpp>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <graft/select.hpp>
#include <graft/state_dict.hpp>

#include "oracle.hpp"
#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Contains;

namespace {

struct smallImpl : torch::nn::Module {
  torch::nn::Conv2d conv{register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)))};
  torch::nn::BatchNorm2d bn{register_module("bn", torch::nn::BatchNorm2d(4))};
  torch::nn::Linear fc{register_module("fc", torch::nn::Linear(4, 5))};
};
TORCH_MODULE(small);

// A checksum of every tensor of a model (values and buffers), to prove "unchanged".
double checksum(const torch::nn::Module& m) {
  double s = 0;
  int i = 1;
  for (auto t : graft::walk(m, graft::walk_options::state())) s += (i++) * t.tensor().to(torch::kDouble).sum().item<double>();
  return s;
}

graft::state_dict snapshot(const torch::nn::Module& m) {
  graft::state_dict sd;
  for (auto& e : graft::state_dict(m)) sd.insert(e.key, e.tensor.detach().clone());
  return sd;
}

graft::state_dict with_prefix(const graft::state_dict& sd, const std::string& p) {
  graft::state_dict out;
  for (auto& e : sd) out.insert(p + e.key, e.tensor);
  return out;
}

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

} // namespace

TEST_CASE("state_dict(module) has Python's keys, with BatchNorm buffers", "[state_dict]") {
  small net;
  auto sd = graft::state_dict(*net);
  CHECK(sd.keys() == std::vector<std::string>{"conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
                                              "bn.running_var", "bn.num_batches_tracked", "fc.weight", "fc.bias"});
  CHECK(sd.at("fc.weight").is_same(net->fc->weight));  // the live tensors, not copies
  CHECK_THROWS_WITH(sd.at("fc.weights"), "[graft.key] no tensor 'fc.weights' in this state dict of 9 entries");
}

TEST_CASE("from_value flattens nested checkpoints and keeps extras", "[state_dict]") {
  graft::dict model;
  model.append("fc.weight", torch::ones({2, 2}));
  graft::dict ckpt;
  ckpt.append("model", model);
  ckpt.append("epoch", 7);
  graft::dict args;
  args.append("lr", 0.1);
  ckpt.append("args", args);
  auto sd = graft::state_dict::from_value(ckpt);
  CHECK(sd.keys() == std::vector<std::string>{"model.fc.weight"});
  REQUIRE(sd.extra("epoch"));
  CHECK(sd.extra("epoch")->as_int() == 7);
  CHECK(sd.extra("args.lr")->as_number() == 0.1);
  auto inner = sd | graft::at("model") | graft::collect();
  CHECK(inner.keys() == std::vector<std::string>{"fc.weight"});
  CHECK(inner.extras().empty());
  CHECK_THROWS_WITH(sd | graft::at("state_dict") | graft::collect(),
                    "[graft.key] at(\"state_dict\"): no entry is under 'state_dict' among 1 tensors; the top-level keys are: 'model'");
}

TEST_CASE("filter keeps what a name or tensor selector picks; module selectors do not apply", "[state_dict]") {
  auto net = models::resnet(18);
  auto sd = graft::state_dict(*net);
  auto backbone = sd | graft::filter(!"fc.*"_glob & !"**.num_batches_tracked"_glob) | graft::collect();
  CHECK(backbone.size() == sd.size() - 2 - 20);
  auto vectors = sd | graft::filter(graft::ndim == 1) | graft::collect();
  CHECK(vectors.size() == 20 * 4 + 1);  // each norm's weight, bias, running mean and var; fc.bias
  CHECK_THROWS_WITH(sd | graft::filter("head.**"_glob) | graft::collect(),
                    "[graft.selection] filter('head.**') kept none of the 122 entries (wrap the selector in graft::optional(...) if that is fine)");
  CHECK((sd | graft::filter(graft::optional("head.**"_glob)) | graft::collect()).empty());
  static_assert(!graft::entry_selector<graft::of_type_t<torch::nn::BatchNorm2dImpl>>);
}

TEST_CASE("rename rules: prefixes, regex with captures, tables, functions", "[state_dict]") {
  small net;
  auto sd = with_prefix(graft::state_dict(*net), "module.");
  auto stripped = sd | graft::strip_prefix("module.") | graft::collect();
  CHECK(stripped.keys() == graft::state_dict(*net).keys());
  CHECK(stripped.entries()[0].source_key == "module.conv.weight");
  auto added = stripped | graft::add_prefix("backbone.") | graft::collect();
  CHECK(added.keys().front() == "backbone.conv.weight");
  auto replaced = stripped | graft::replace_prefix("fc.", "classifier.") | graft::collect();
  CHECK(replaced.keys().back() == "classifier.bias");
  auto rx = stripped | graft::regex_replace(R"(^(\w+)\.(weight|bias)$)", R"(\1.param_\2)") | graft::collect();
  CHECK(rx.keys().front() == "conv.param_weight");
  CHECK(rx.keys()[4] == "bn.running_mean");
  auto table = stripped | graft::rename_keys({{"fc.weight", "head.w"}}) | graft::collect();
  CHECK(table.keys()[7] == "head.w");
  auto fn = stripped | graft::rename([](std::string_view k) { return std::string(k) + "_x"; }) | graft::collect();
  CHECK(fn.keys()[0] == "conv.weight_x");
  CHECK_THROWS_WITH(graft::regex_replace("a(", "b"), Contains("invalid regex 'a('"));
  CHECK_THROWS_WITH(graft::regex_replace("(a)", "\\2"), Contains("invalid rewrite '\\2'"));
}

TEST_CASE("renames that collide name both sources", "[state_dict]") {
  graft::state_dict sd;
  sd.insert("a.weight", torch::zeros({1}));
  sd.insert("b.weight", torch::zeros({1}));
  CHECK_THROWS_WITH(sd | graft::replace_prefix("b.", "a.") | graft::collect(),
                    "[graft.key] two entries are named 'a.weight' (from 'a.weight' and 'b.weight')");
}

TEST_CASE("stages compose into one reusable chain that runs in one pass", "[state_dict]") {
  small net;
  auto chain = graft::strip_prefix("module.") | graft::filter(!"fc.*"_glob) | graft::cast(torch::kHalf);
  CHECK(chain.describe() == "strip_prefix(\"module.\") | filter(not fc.*) | cast(Half)");
  auto out = with_prefix(graft::state_dict(*net), "module.") | chain | graft::collect();
  CHECK(out.size() == 7);
  CHECK(out.at("conv.weight").scalar_type() == torch::kHalf);
  CHECK(out.at("bn.num_batches_tracked").scalar_type() == torch::kLong);  // cast leaves integers alone
  // No data was copied by renaming and filtering.
  auto kept = with_prefix(graft::state_dict(*net), "module.") | graft::strip_prefix("module.") | graft::collect();
  CHECK(kept.at("conv.weight").data_ptr() == net->conv->weight.data_ptr());
}

TEST_CASE("merge loads matching keys into the model's own tensors", "[state_dict][merge]") {
  torch::manual_seed(1);
  small a, b;
  a->bn->running_mean.fill_(3);
  auto before_ptr = b->conv->weight.data_ptr();
  auto report = graft::from(*a) | graft::merge(*b);
  CHECK(report.accepted());
  CHECK(report.loaded.size() == 9);
  CHECK(torch::equal(a->conv->weight, b->conv->weight));
  CHECK(torch::equal(b->bn->running_mean, torch::full({4}, 3.0)));
  CHECK(b->conv->weight.data_ptr() == before_ptr);  // copied in place: optimizers stay valid
  CHECK(b->conv->weight.requires_grad());
}

TEST_CASE("a refused merge throws with the report and changes nothing", "[state_dict][merge]") {
  torch::manual_seed(2);
  small src, dst;
  auto sd = snapshot(*src) | graft::filter(!"fc.*"_glob) | graft::collect();
  auto before = checksum(*dst);
  try {
    sd | graft::merge(*dst);
    FAIL("merge should refuse missing keys");
  } catch (const graft::load_error& e) {
    CHECK(e.kind() == graft::error_kind::key);
    CHECK(e.report().missing_keys() == std::vector<std::string>{"fc.weight", "fc.bias"});
    CHECK_THAT(e.what(), Contains("loaded 7 tensors (0 renamed, 0 converted), 2 missing, 0 unexpected, 0 mismatched: REFUSED"));
    CHECK_THAT(e.what(), Contains("missing fc.weight (not allowed)"));
  }
  CHECK(checksum(*dst) == before);
  auto ok = sd | graft::merge(*dst, {.missing = graft::allow("fc.*"_glob)});
  CHECK(ok.accepted());
  CHECK(torch::equal(dst->conv->weight, src->conv->weight));
}

TEST_CASE("policies are selective: unexpected, mismatched, adapted", "[state_dict][merge]") {
  torch::manual_seed(3);
  small src;
  auto sd = snapshot(*src);
  sd.insert("extra.weight", torch::zeros({2}));
  struct wide_impl : torch::nn::Module {
    torch::nn::Conv2d conv{register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)))};
    torch::nn::BatchNorm2d bn{register_module("bn", torch::nn::BatchNorm2d(4))};
    torch::nn::Linear fc{register_module("fc", torch::nn::Linear(4, 8))};
  } dst;
  auto fc_init = dst.fc->weight.detach().clone();
  auto before = checksum(dst);
  CHECK_THROWS_AS(sd | graft::merge(dst, {.unexpected = graft::allow_all}), graft::load_error);
  try {
    sd | graft::merge(dst, {.unexpected = graft::allow("extra.*"_glob)});
  } catch (const graft::load_error& e) {
    CHECK(e.kind() == graft::error_kind::shape);
    CHECK_THAT(e.what(), Contains("mismatched fc.weight: model [8, 4] Float, checkpoint [5, 4] Float (not allowed)"));
  }
  CHECK(checksum(dst) == before);
  auto skip = sd | graft::merge(dst, {.unexpected = graft::allow_all, .mismatched = graft::allow("fc.*"_glob)});
  CHECK(skip.mismatched.size() == 2);
  CHECK(torch::equal(dst.fc->weight, fc_init));  // skipped: keeps its own values
  CHECK(torch::equal(dst.conv->weight, src->conv->weight));
  auto grown = sd | graft::merge(dst, {.unexpected = graft::allow_all, .adapt = graft::allow("fc.*"_glob)});
  CHECK(grown.adapted_count() == 2);
  CHECK(torch::equal(dst.fc->weight.slice(0, 0, 5), src->fc->weight));  // the trained rows
  CHECK(torch::equal(dst.fc->weight.slice(0, 5), fc_init.slice(0, 5)));  // the new rows keep their init
  CHECK(torch::equal(dst.fc->bias.slice(0, 0, 5), src->fc->bias));
}

TEST_CASE("dtype conversion while copying, and refusal of lossy conversions", "[state_dict][merge]") {
  small src, dst;
  auto half = snapshot(*src) | graft::cast(torch::kHalf) | graft::collect();
  auto r = half | graft::merge(*dst);
  CHECK(r.converted_count() == 8);  // everything but num_batches_tracked
  CHECK(dst->conv->weight.scalar_type() == torch::kFloat);
  CHECK(torch::allclose(dst->conv->weight, src->conv->weight.to(torch::kHalf).to(torch::kFloat)));
  CHECK_THROWS_AS(half | graft::merge(*dst, {.convert_dtype = false}), graft::load_error);
  graft::state_dict cplx = snapshot(*src);
  graft::state_dict bad;
  for (auto& e : cplx) bad.insert(e.key, e.key == "fc.bias" ? torch::zeros({5}, torch::kComplexFloat) : e.tensor);
  CHECK_THROWS_WITH(bad | graft::merge(*dst), Contains("mismatched fc.bias: model [5] Float, checkpoint [5] ComplexFloat"));
}

TEST_CASE("a state dict for another model is reported, not loaded", "[state_dict][merge]") {
  struct tied_impl : torch::nn::Module {
    tied_impl() {
      emb = register_module("emb", torch::nn::Embedding(6, 3));
      head = register_module("head", torch::nn::Linear(3, 6));
      head->unregister_module("weight");
    }
    torch::nn::Embedding emb{nullptr};
    torch::nn::Linear head{nullptr};
  };
  graft::state_dict sd;
  auto w = torch::randn({6, 3});
  sd.insert("emb.weight", w);
  sd.insert("head.weight", torch::randn({6, 3}));
  sd.insert("head.bias", torch::zeros({6}));
  small net;  // unrelated model: merging must report everything as unexpected/missing
  auto r = graft::preview(*net, sd);
  CHECK(r.unexpected.size() == 3);
  // bn's num_batches_tracked is defaulted, not missing: a checkpoint without module versions
  // gets the counter inserted, as PyTorch's BatchNorm does.
  CHECK(r.missing.size() == 8);
  CHECK(r.defaulted == std::vector<std::string>{"bn.num_batches_tracked"});
  CHECK_FALSE(r.accepted());
}

TEST_CASE("hints name the rename that fixes a prefixed checkpoint", "[state_dict][merge]") {
  auto net = models::resnet(18);
  auto sd = with_prefix(graft::state_dict(*net), "module.");
  auto r = graft::preview(*net, sd);
  REQUIRE(!r.hints.empty());
  CHECK(r.hints[0] == "122 unexpected keys start with 'module.': strip_prefix(\"module.\") would match them to missing keys");
  graft::state_dict renamed;
  for (auto& e : graft::state_dict(*net))
    renamed.insert(e.key.starts_with("fc.") ? "classifier." + e.key.substr(3) : e.key, e.tensor);
  auto r2 = graft::preview(*net, renamed);
  CHECK(r2.missing_keys() == std::vector<std::string>{"fc.weight", "fc.bias"});
  CHECK(r2.missing[0].nearest == "classifier.weight");
  REQUIRE(!r2.hints.empty());
  CHECK_THAT(r2.hints[0], Contains("replace_prefix(\"classifier.\", \"fc.\")"));
}

TEST_CASE("validate passes a state dict on or stops the pipeline", "[state_dict][merge]") {
  small a, b;
  auto sd = graft::from(*a) | graft::validate(*b) | graft::collect();
  CHECK(sd.size() == 9);
  CHECK_THROWS_AS(graft::from(*a) | graft::filter("conv.*"_glob) | graft::validate(*b) | graft::collect(), graft::load_error);
}

TEST_CASE("missing and unexpected keys equal PyTorch's load_state_dict(strict=False)", "[state_dict][oracle]") {
  // Python edits torchvision's resnet18 state dict, prints the edited keys with shapes, then
  // what load_state_dict(strict=False) reports.
  auto out = split_lines(graft::test::run_python(R"(
import torch, torchvision
m = torchvision.models.resnet18()
sd = m.state_dict()
del sd['fc.weight']; del sd['layer2.0.bn1.running_var']
sd['layer1.0.convX.weight'] = sd.pop('layer1.0.conv1.weight')
sd['extra.bias'] = torch.zeros(3)
for k, v in sd.items(): print('K', k, ','.join(str(s) for s in v.shape))
r = m.load_state_dict(sd, strict=False)
for k in r.missing_keys: print('M', k)
for k in r.unexpected_keys: print('U', k)
)"));
  graft::state_dict sd;
  std::vector<std::string> missing, unexpected;
  for (auto& line : out) {
    std::istringstream in(line);
    std::string tag, key, shape;
    in >> tag >> key >> shape;
    if (tag == "K") {
      std::vector<int64_t> sizes;
      std::istringstream s(shape);
      for (std::string d; std::getline(s, d, ',');) sizes.push_back(std::stoll(d));
      sd.insert(key, torch::zeros(sizes));
    } else if (tag == "M") {
      missing.push_back(key);
    } else if (tag == "U") {
      unexpected.push_back(key);
    }
  }
  auto net = models::resnet(18);
  auto r = graft::preview(*net, sd, graft::load_policy::non_strict());
  CHECK(r.missing_keys() == missing);
  CHECK(r.unexpected_keys() == unexpected);
  CHECK(r.accepted());
  CHECK(missing.size() == 3);
}

template <class F>
constexpr bool pipeline_test_makes_stage = requires(F f) { graft::make_stage(f); };

TEST_CASE("make_stage: a user's own stage rewrites, drops, and runs fused with graft's stages", "[state_dict]") {
  graft::state_dict sd;
  sd.insert("model.a", torch::ones({2}));
  sd.insert("model.b", torch::full({3}, 2.0));
  sd.insert("model.skip", torch::zeros({1}));
  sd.extras().emplace_back("epoch", graft::value(4));
  // Drops one entry, doubles the others, and renames: with at() and strip_prefix around it.
  auto doubled = graft::make_stage(
      [](graft::state_entry& e) {
        if (e.key == "skip") return false;
        e.tensor = e.tensor * 2;
        e.key += "_x2";
        return true;
      },
      "double_all");
  auto chain = graft::at("model") | doubled | graft::add_prefix("net.");
  CHECK(chain.describe() == "at(\"model\") | double_all | add_prefix(\"net.\")");
  auto out = sd | chain | graft::collect();
  CHECK(out.keys() == std::vector<std::string>{"net.a_x2", "net.b_x2"});
  CHECK(torch::equal(out.at("net.b_x2"), torch::full({3}, 4.0)));
  CHECK(out.find("net.a_x2")->source_key == "model.a");
  // A void function keeps every entry; the default description names it.
  int seen = 0;
  auto counted = sd | graft::make_stage([&](graft::state_entry&) { ++seen; }) | graft::collect();
  CHECK(seen == 3);
  CHECK(counted.size() == 3);
  CHECK(graft::make_stage([](graft::state_entry&) {}).describe() == "make_stage(function)");
  // Not a stage: a function of something else does not compile.
  auto of_int = [](int) {};
  auto of_entry = [](graft::state_entry&) {};
  STATIC_REQUIRE_FALSE(pipeline_test_makes_stage<decltype(of_int)>);
  STATIC_REQUIRE(pipeline_test_makes_stage<decltype(of_entry)>);
}
