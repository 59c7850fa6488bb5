#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <graft/combine.hpp>
#include <graft/graft.hpp>

#include "oracle.hpp"

using Catch::Matchers::Contains;
using json = nlohmann::json;

namespace {

// A base checkpoint and three fine-tunes of it: float32 weights and buffers, a bfloat16 and a
// float64 tensor, an empty one and an integer counter equal in all.
graft::state_dict base_checkpoint() {
  torch::manual_seed(11);
  graft::state_dict sd;
  sd.insert("backbone.0.weight", torch::randn({16, 12}));
  sd.insert("backbone.0.bias", torch::randn({16}));
  sd.insert("bn.running_mean", torch::randn({16}));
  sd.insert("bn.num_batches_tracked", torch::tensor(int64_t{7}));
  sd.insert("head.weight", torch::randn({4, 16}));
  sd.insert("head.bias", torch::randn({4}));
  sd.insert("emb.weight", torch::randn({10, 6}).to(torch::kBFloat16));
  sd.insert("scale", torch::randn({5}, torch::kDouble));
  sd.insert("empty", torch::zeros({0, 3}));
  return sd;
}

graft::state_dict fine_tune(const graft::state_dict& base, int seed, double step) {
  torch::manual_seed(seed);
  graft::state_dict sd;
  for (const auto& e : base) {
    auto t = e.tensor.is_floating_point() ? (e.tensor.to(torch::kDouble) + step * torch::randn(e.tensor.sizes(), torch::kDouble)).to(e.tensor.scalar_type())
                                          : e.tensor.clone();
    sd.insert(e.key, t);
  }
  return sd;
}

// Every key, dtype and shape equal, and values within 1e-6 (bfloat16: within its rounding).
void require_close(const graft::state_dict& actual, const graft::state_dict& expected, const std::string& what) {
  INFO(what);
  REQUIRE(actual.keys() == expected.keys());
  for (const auto& e : expected) {
    INFO(e.key);
    const auto& a = actual.at(e.key);
    REQUIRE(a.scalar_type() == e.tensor.scalar_type());
    REQUIRE(a.sizes() == e.tensor.sizes());
    if (!e.tensor.is_floating_point()) {
      CHECK(torch::equal(a, e.tensor));
      continue;
    }
    if (a.numel() == 0) continue;
    auto x = a.to(torch::kDouble), y = e.tensor.to(torch::kDouble);
    const double rtol = e.tensor.scalar_type() == torch::kBFloat16 ? 1.0 / 128 : 1e-6;
    const double err = ((x - y).abs() - rtol * y.abs()).max().item<double>();
    CHECK(err <= 1e-6);
  }
}

graft::state_dict read_all(const std::string& path) { return graft::read(path) | graft::collect(); }

// Runs combine_formulas.py over `specs` (each writes its "out").
void run_oracle(const graft::test::scratch_dir& dir, const json& specs) {
  auto spec_file = dir.file("specs.json");
  std::ofstream(spec_file) << specs.dump();
  const std::string script = std::string(GRAFT_TEST_SOURCE_DIR) + "/state_dict/combine_formulas.py";
  graft::test::run_python("import runpy, sys\nsys.argv = ['combine_formulas.py', '" + spec_file +
                          "']\nrunpy.run_path('" + script + "', run_name='__main__')\n");
}

struct files {
  graft::test::scratch_dir dir;
  std::string base_pt, base_st;
  std::vector<std::string> pt, st;  // the fine-tunes as torch.save (the oracle's) and safetensors (graft's, mapped)
  files() {
    auto base = base_checkpoint();
    base_pt = dir.file("base.pt"), base_st = dir.file("base.safetensors");
    graft::save(base, base_pt);
    graft::save(base, base_st);
    const double steps[] = {0.1, 0.2, 0.15};
    for (int i = 0; i < 3; ++i) {
      auto ft = fine_tune(base, 100 + i, steps[i]);
      pt.push_back(dir.file("ft" + std::to_string(i) + ".pt"));
      st.push_back(dir.file("ft" + std::to_string(i) + ".safetensors"));
      graft::save(ft, pt.back());
      graft::save(ft, st.back());
    }
  }
  std::vector<graft::combine_input> inputs(std::size_t n = 3) const { return {st.begin(), st.begin() + static_cast<long>(n)}; }
};

// The masks DARE drew for each input, read back from combinations that keep one input's
// dropped task vector alone (weight 1 for it, 0 for the others, no rescaling).
json dare_masks(const files& f, double density, std::uint64_t seed, const std::string& out) {
  graft::dict masks;
  std::vector<graft::state_dict> per_input;
  for (std::size_t i = 0; i < 3; ++i) {
    std::vector<double> w(3, 0.0);
    w[i] = 1.0;
    per_input.push_back(graft::dare(f.base_st, f.inputs(), density, seed).weights(w).rescale(graft::dare_rescale::none).load());
  }
  auto base = read_all(f.base_pt);
  for (const auto& e : base) {
    if (!e.tensor.is_floating_point()) continue;
    graft::sequence l;
    for (std::size_t i = 0; i < 3; ++i) {
      auto kept = per_input[i].at(e.key).to(torch::kDouble) - e.tensor.to(torch::kDouble);
      l.items.emplace_back(torch::Tensor(kept != 0));
    }
    masks.append(e.key, graft::value(std::move(l)));
  }
  graft::write_torch_save(out, graft::value(std::move(masks)));
  return out;
}

} // namespace

TEST_CASE("combinations equal mergekit's formulas, streamed to either format and in memory", "[combine]") {
  files f;
  json specs = json::array();
  struct made {
    std::string name;
    graft::combination c;
  };
  std::vector<made> cases;
  auto add = [&](std::string name, graft::combination c, json spec) {
    spec["out"] = f.dir.file(name + ".expected.pt");
    if (!spec.contains("inputs")) spec["inputs"] = f.pt;
    specs.push_back(spec);
    cases.push_back({std::move(name), std::move(c)});
  };
  // WiSE-FT, the head taken whole from the fine-tune (alpha 1).
  add("interpolate", graft::interpolate(f.base_st, f.st[0], 0.3).where(graft::glob("head.**"), {.t = 1.0}),
      {{"method", "interpolate"}, {"inputs", {f.base_pt, f.pt[0]}}, {"t", 0.3},
       {"per_key", {{"head.weight", {{"t", 1.0}}}, {"head.bias", {{"t", 1.0}}}}}});
  add("soup", graft::average(f.inputs()), {{"method", "linear"}});
  add("weighted", graft::average(f.inputs(), {1, 2, 3}), {{"method", "linear"}, {"weights", {1, 2, 3}}});
  add("weighted_sum", graft::average(f.inputs(), {0.5, 0.25, 0.25}).normalize(false),
      {{"method", "linear"}, {"weights", {0.5, 0.25, 0.25}}, {"normalize", false}});
  add("task_arithmetic", graft::task_arithmetic(f.base_st, f.inputs(), 0.8).weights({0.5, 1, -0.3}),
      {{"method", "task_arithmetic"}, {"base", f.base_pt}, {"weights", {0.5, 1, -0.3}}, {"lambda", 0.8}});
  add("ties", graft::ties(f.base_st, f.inputs(), 0.3).weights({1, 0.7, 1.2}),
      {{"method", "ties"}, {"base", f.base_pt}, {"weights", {1, 0.7, 1.2}}, {"density", 0.3}});
  add("ties_sum", graft::ties(f.base_st, f.inputs(), 0.5).normalize(false).lambda(0.5),
      {{"method", "ties"}, {"base", f.base_pt}, {"density", 0.5}, {"normalize", false}, {"lambda", 0.5}});
  // The buffers taken from the base by a rule; the rest trimmed harder where a second rule says.
  add("ties_rules",
      graft::ties(f.base_st, f.inputs(), 0.4)
          .where(graft::glob("bn.*"), {.take = graft::from_base})
          .where(graft::glob("backbone.**"), {.density = 0.1}),
      {{"method", "ties"}, {"base", f.base_pt}, {"density", 0.4},
       {"per_key", {{"bn.running_mean", {{"take", "base"}}}, {"bn.num_batches_tracked", {{"take", "base"}}},
                    {"backbone.0.weight", {{"density", 0.1}}}, {"backbone.0.bias", {{"density", 0.1}}}}}});
  add("slerp", graft::slerp(f.base_st, f.st[1], 0.4), {{"method", "slerp"}, {"base", f.base_pt}, {"inputs", {f.pt[1]}}, {"t", 0.4}});
  add("slerp_take", graft::slerp(f.base_st, f.st[2], 0.9).where(graft::glob("scale"), {.take = 0}),
      {{"method", "slerp"}, {"base", f.base_pt}, {"inputs", {f.pt[2]}}, {"t", 0.9}, {"per_key", {{"scale", {{"take", 0}}}}}});
  for (auto rescale : {graft::dare_rescale::l1, graft::dare_rescale::inverse_density}) {
    for (bool with_ties : {false, true}) {
      const std::string r = rescale == graft::dare_rescale::l1 ? "l1" : "inverse_density";
      const std::string m = with_ties ? "dare_ties" : "dare_linear";
      const std::uint64_t seed = with_ties ? 5 : 6;
      auto masks = dare_masks(f, 0.6, seed, f.dir.file(m + r + ".masks.pt"));
      add(m + "_" + r, graft::dare(f.base_st, f.inputs(), 0.6, seed, with_ties).weights({1, 0.5, 0.8}).rescale(rescale),
          {{"method", m}, {"base", f.base_pt}, {"weights", {1, 0.5, 0.8}}, {"density", 0.6}, {"rescale", r}, {"masks", masks}});
    }
  }
  run_oracle(f.dir, specs);

  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& [name, c] = cases[i];
    auto expected = read_all(specs[i]["out"]);
    auto st = f.dir.file(name + ".safetensors"), pt = f.dir.file(name + ".pt");
    auto report = c.save(st);
    CHECK(report.file == st);
    CHECK(report.tensors == expected.size());
    c | graft::save(pt);
    require_close(read_all(st), expected, name + " as safetensors");
    require_close(read_all(pt), expected, name + " as torch.save");
    require_close(c.load(), expected, name + " in memory");
  }
}

TEST_CASE("combine: integers are taken when equal, reports say what was combined how", "[combine]") {
  files f;
  auto [sd, report] = graft::average(f.inputs()).compute();
  CHECK(report.combined == sd.size() - 1);
  REQUIRE(report.taken.size() == 1);
  CHECK(report.taken[0].first == "bn.num_batches_tracked");
  CHECK_THAT(report.taken[0].second, Contains(f.st[0]) && Contains("equal in every input"));
  CHECK(report.inputs == std::vector<std::string>(f.st.begin(), f.st.end()));
  CHECK(report.bytes == read_all(f.base_pt).nbytes());
  CHECK(sd.at("bn.num_batches_tracked").item<int64_t>() == 7);

  // Counters that differ are never averaged: an error naming the key, or a rule that takes one.
  auto other = read_all(f.pt[1]);
  graft::state_dict changed;
  for (const auto& e : other) changed.insert(e.key, e.key == "bn.num_batches_tracked" ? torch::tensor(int64_t{9}) : e.tensor);
  std::vector<graft::combine_input> in{f.st[0], graft::combine_input(changed, "changed")};
  try {
    graft::average(in).check();
    FAIL("differing integers were combined");
  } catch (const graft::option_error& e) {
    CHECK_THAT(e.what(), Contains("'bn.num_batches_tracked' is a Long tensor that differs between") && Contains("changed"));
    CHECK(e.context().key == "bn.num_batches_tracked");
  }
  auto taken = graft::average(in).where(graft::glob("bn.num_batches_tracked"), {.take = 1}).load();
  CHECK(taken.at("bn.num_batches_tracked").item<int64_t>() == 9);

  // Progress: once per tensor, bytes adding up to the output's.
  std::vector<std::size_t> done;
  std::int64_t last = 0, total = 0;
  graft::average(f.inputs())
      .on_progress([&](const graft::combine_progress& p) {
        done.push_back(p.done);
        last = p.bytes_done, total = p.bytes_total;
      })
      .save(f.dir.file("progress.safetensors"));
  CHECK(done.size() == sd.size());
  CHECK(done.back() == sd.size());
  CHECK(last == total);
  CHECK(total == sd.nbytes());
}

TEST_CASE("combine: a combination is a pipeline source, and inputs may be pipelines", "[combine]") {
  files f;
  auto head = graft::average(f.inputs(2)) | graft::filter(graft::glob("head.**")) | graft::collect();
  CHECK(head.keys() == std::vector<std::string>{"head.weight", "head.bias"});
  auto a = read_all(f.pt[0]), b = read_all(f.pt[1]);
  CHECK(torch::allclose(head.at("head.weight"), (a.at("head.weight") + b.at("head.weight")) / 2, 1e-6, 1e-6));

  // Inputs under another prefix, brought to one layout by their own pipelines.
  graft::test::scratch_dir dir;
  auto nested = dir.file("nested.pt");
  graft::dict top;
  top.append("model", read_all(f.pt[1]).to_value());
  top.append("epoch", 3);
  graft::write_torch_save(nested, graft::value(std::move(top)));
  auto sd = graft::average({f.st[0], graft::read(nested) | graft::at("model")}).load();
  CHECK(torch::allclose(sd.at("head.bias"), (a.at("head.bias") + b.at("head.bias")) / 2, 1e-6, 1e-6));
}

TEST_CASE("combine: inputs that differ are reported together, before anything is written", "[combine]") {
  files f;
  auto base = read_all(f.pt[0]);
  graft::state_dict bad;
  for (const auto& e : base) {
    if (e.key == "head.bias") continue;  // missing
    if (e.key == "head.weight") bad.insert(e.key, torch::zeros({5, 16}));  // another shape
    else if (e.key == "scale") bad.insert(e.key, e.tensor.to(torch::kFloat));  // another dtype
    else bad.insert(e.key, e.tensor);
  }
  bad.insert("extra.weight", torch::zeros(2));
  auto out = f.dir.file("out.safetensors");
  std::ofstream(out) << "old";
  try {
    graft::average({f.st[0], graft::combine_input(bad, "bad")}).save(out);
    FAIL("differing inputs were combined");
  } catch (const graft::error& e) {
    const std::string what = e.what();
    CHECK_THAT(what, Contains("the inputs differ (4 problems)"));
    CHECK_THAT(what, Contains("'head.bias' is in " + f.st[0] + " but not in bad"));
    CHECK_THAT(what, Contains("'extra.weight' is in bad but not in " + f.st[0]));
    CHECK_THAT(what, Contains("'head.weight' is [4, 16] in " + f.st[0] + " but [5, 16] in bad"));
    CHECK_THAT(what, Contains("'scale' is Double in " + f.st[0] + " but Float in bad"));
    CHECK(e.kind() == graft::error_kind::key);
    CHECK(e.context().key == "head.bias");
    CHECK(e.context().file == "bad");
  }
  CHECK(std::filesystem::file_size(out) == 3);  // untouched

  auto option = [&](auto&& make, const std::string& text) {
    INFO(text);
    try {
      make().check();
      FAIL("accepted");
    } catch (const graft::error& e) {
      CHECK_THAT(std::string(e.what()), Contains(text));
    }
  };
  option([&] { return graft::average(f.inputs(), {1, 2}); }, "2 weights for 3 inputs");
  option([&] { return graft::average(f.inputs(2), {1, -1}); }, "the weights sum to 0");
  option([&] { return graft::ties(f.base_st, f.inputs(), 0.0); }, "density = 0 is not in (0, 1]");
  option([&] { return graft::ties(f.base_st, f.inputs(), 1.5); }, "density = 1.5 is not in (0, 1]");
  option([&] { return graft::combination(graft::combine_method::ties, f.inputs()); }, "this method needs a base");
  option([&] { return graft::combination(graft::combine_method::slerp, f.inputs(), f.base_st); }, "slerp takes exactly two");
  option([&] { return graft::average(f.inputs()).where(graft::glob("head.**"), {.take = 3}); }, "take = 3, but there are 3 inputs");
  option([&] { return graft::interpolate(f.st[0], f.st[1], 0.5).weights({1, 2}); }, "interpolate mixes by t, not by weights");
  option([&] { return graft::average(f.inputs()).where(graft::glob("head.**"), {.take = graft::from_base}); }, "there is no base");
  option([&] { return graft::average(f.inputs()).where(graft::glob("neck.**"), {.t = 1.0}); }, "where neck.** picks none of the 9 keys");
  option([&] { return graft::average({f.st[0], f.dir.file("missing.safetensors")}); }, "missing.safetensors");
}

TEST_CASE("combine: DARE's drops are seeded, independent of the output, and keep about `density`", "[combine]") {
  files f;
  auto one = [&](std::uint64_t seed, std::vector<graft::combine_input> in) {
    return graft::dare(f.base_st, std::move(in), 0.3, seed).rescale(graft::dare_rescale::none).load();
  };
  auto a = one(1, f.inputs(1)), b = one(1, f.inputs(1)), c = one(2, f.inputs(1));
  CHECK(torch::equal(a.at("backbone.0.weight"), b.at("backbone.0.weight")));
  CHECK_FALSE(torch::equal(a.at("backbone.0.weight"), c.at("backbone.0.weight")));
  // The mask of a key depends on the seed, the key and the input's place, not on other keys.
  auto head_only = graft::dare(graft::read(f.base_st) | graft::filter(graft::glob("head.**")),
                               {graft::read(f.st[0]) | graft::filter(graft::glob("head.**"))}, 0.3, 1)
                       .rescale(graft::dare_rescale::none)
                       .load();
  CHECK(torch::equal(head_only.at("head.weight"), a.at("head.weight")));

  // The fraction kept, over every float element: binomial, within 5 standard deviations.
  auto base = read_all(f.base_pt);
  double kept = 0, n = 0;
  for (const auto& e : base) {
    if (!e.tensor.is_floating_point() || e.tensor.numel() == 0) continue;
    kept += (a.at(e.key).to(torch::kDouble) != e.tensor.to(torch::kDouble)).sum().item<double>();
    n += static_cast<double>(e.tensor.numel());
  }
  CHECK(std::abs(kept / n - 0.3) < 5 * std::sqrt(0.3 * 0.7 / n));
}

TEST_CASE("greedy_soup keeps what does not lower the score, as the Python loop does", "[combine]") {
  graft::test::scratch_dir dir;
  torch::manual_seed(3);
  auto x = torch::randn({64, 6});
  auto target = torch::randn({6, 2});
  auto y = x.matmul(target);
  torch::nn::Linear net(6, 2);
  std::vector<graft::combine_input> candidates;
  std::vector<std::string> paths;
  for (int i = 0; i < 5; ++i) {
    graft::state_dict sd;
    // Near the target, at different distances; candidate 3 is far off.
    const double noise = i == 3 ? 2.0 : 0.1 * (i + 1);
    sd.insert("weight", (target.t() + noise * torch::randn({2, 6})).contiguous());
    sd.insert("bias", noise * torch::randn({2}));
    paths.push_back(dir.file("c" + std::to_string(i) + ".pt"));
    graft::save(sd, paths.back());
    candidates.emplace_back(paths.back());
  }
  auto evaluate = [&](torch::nn::Module&) {
    torch::NoGradGuard ng;
    return -torch::mse_loss(net->forward(x), y).item<double>();
  };
  auto r = graft::greedy_soup(*net, candidates, evaluate);

  auto data = dir.file("data.pt");
  graft::dict xy;
  xy.append("x", x);
  xy.append("y", y);
  graft::write_torch_save(data, graft::value(std::move(xy)));
  json j = {{"data", data}, {"candidates", paths}};
  const auto out = graft::test::run_python(R"(
import json, torch
spec = json.loads(')" + j.dump() + R"(')
d = torch.load(spec["data"])
cands = [torch.load(p) for p in spec["candidates"]]
net = torch.nn.Linear(6, 2)
def score(sd):
    net.load_state_dict(sd)
    with torch.no_grad():
        return -torch.nn.functional.mse_loss(net(d["x"]), d["y"]).item()
alone = [score(c) for c in cands]
order = sorted(range(len(cands)), key=lambda i: -alone[i])
soup, best = [order[0]], alone[order[0]]
avg = lambda idx: {k: sum(cands[i][k] for i in idx) / len(idx) for k in cands[0]}
for i in order[1:]:
    s = score(avg(soup + [i]))
    if s >= best:
        soup, best = soup + [i], s
final = avg(soup)
print(json.dumps({"kept": soup, "order": order, "score": best, "weight": final["weight"].flatten().tolist(), "bias": final["bias"].tolist()}))
)");
  auto expected = json::parse(out.substr(out.find('{')));
  CHECK(r.kept == expected["kept"].get<std::vector<std::size_t>>());
  CHECK(r.order == expected["order"].get<std::vector<std::size_t>>());
  CHECK(std::find(r.kept.begin(), r.kept.end(), 3u) == r.kept.end());
  CHECK(r.score == Approx(expected["score"].get<double>()).epsilon(1e-6));
  auto w = torch::tensor(expected["weight"].get<std::vector<float>>()).reshape({2, 6});
  auto b = torch::tensor(expected["bias"].get<std::vector<float>>());
  CHECK(torch::allclose(net->weight, w, 1e-6, 1e-6));
  CHECK(torch::allclose(net->bias, b, 1e-6, 1e-6));
  CHECK(r.tried.size() == 5);
  CHECK(r.tried[0] == r.alone[r.order[0]]);

  // A candidate that does not fit the model: an error, and the model as it was.
  auto before = net->weight.clone();
  graft::state_dict wrong;
  wrong.insert("weight", torch::zeros({3, 6}));
  wrong.insert("bias", torch::zeros({3}));
  std::vector<graft::combine_input> bad{candidates[0], graft::combine_input(wrong, "wrong")};
  CHECK_THROWS_AS(graft::greedy_soup(*net, bad, evaluate), graft::shape_error);
  CHECK(torch::equal(net->weight, before));
}

TEST_CASE("streamed writers check what is produced against what was announced, atomically", "[combine]") {
  graft::test::scratch_dir dir;
  std::vector<graft::tensor_spec> specs{{"a", torch::kFloat, {2, 3}}, {"b", torch::kBFloat16, {4}}, {"c", torch::kLong, {}}};
  std::vector<torch::Tensor> data{torch::randn({2, 3}), torch::randn({4}).to(torch::kBFloat16), torch::tensor(int64_t{5})};
  for (auto format : {graft::checkpoint_format::safetensors, graft::checkpoint_format::torch_save}) {
    const auto path = dir.file(format == graft::checkpoint_format::safetensors ? "s.safetensors" : "s.pt");
    std::vector<std::size_t> asked;
    graft::save(specs, [&](std::size_t i) { asked.push_back(i); return data[i]; }, path, format);
    CHECK(asked.size() == 3);  // each once, in the format's own order
    auto back = read_all(path);
    REQUIRE(back.keys() == std::vector<std::string>{"a", "b", "c"});
    for (std::size_t i = 0; i < 3; ++i) CHECK(torch::equal(back.at(specs[i].name), data[i]));

    // A tensor that is not what was announced: a shape_error naming it, and the file as it was.
    const auto before = std::filesystem::file_size(path);
    try {
      graft::save(specs, [&](std::size_t i) { return i == 1 ? torch::zeros({5}, torch::kBFloat16) : data[i]; }, path, format);
      FAIL("a wrong tensor was written");
    } catch (const graft::shape_error& e) {
      CHECK_THAT(e.what(), Contains("tensor 'b' was announced as BFloat16 [4] but produced as BFloat16 [5]"));
      CHECK(e.context().key == "b");
      CHECK(e.context().file == path);
    }
    CHECK_THROWS_WITH(graft::save(specs, [&](std::size_t) -> torch::Tensor { throw std::runtime_error("stop"); }, path, format), "stop");
    CHECK(std::filesystem::file_size(path) == before);
    CHECK(torch::equal(read_all(path).at("a"), data[0]));
  }
  CHECK_THROWS_AS(graft::save(specs, [&](std::size_t i) { return data[i]; }, dir.file("x.pt"), graft::checkpoint_format::torch_save_legacy),
                  graft::option_error);
}
