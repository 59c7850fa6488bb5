#include <catch2/catch.hpp>

#include <regex>
#include <string>
#include <vector>

#include <graft/select.hpp>

#include "resnet.hpp"

using namespace graft::literals;
using Catch::Matchers::Contains;

namespace {
template <class S>
std::vector<std::string> picked(const torch::nn::Module& m, const S& s, graft::walk_options o = {}) {
  return graft::select(m, s, o).paths();
}
template <class S>
std::vector<std::string> by_hand(const torch::nn::Module& m, const S& pred) {
  std::vector<std::string> out;
  for (auto& p : m.named_parameters())
    if (pred(p.key())) out.push_back(p.key());
  return out;
}
} // namespace

TEST_CASE("glob: * within a segment, ** across segments, ?, classes, braces", "[select][glob]") {
  auto net = models::resnet(18);
  CHECK(picked(*net, "layer4.**"_glob) == by_hand(*net, [](const std::string& k) { return k.starts_with("layer4."); }));
  CHECK(picked(*net, "fc.*"_glob) == std::vector<std::string>{"fc.weight", "fc.bias"});
  CHECK(picked(*net, "*.weight"_glob) == std::vector<std::string>{"conv1.weight", "bn1.weight", "fc.weight"});
  CHECK(picked(*net, "**.bias"_glob).size() == 21);  // 20 batch norms and fc
  CHECK(picked(*net, "layer?.0.downsample.*.weight"_glob) ==
        std::vector<std::string>{"layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight",
                                 "layer3.0.downsample.0.weight", "layer3.0.downsample.1.weight",
                                 "layer4.0.downsample.0.weight", "layer4.0.downsample.1.weight"});
  CHECK(picked(*net, "layer[34].1.bn[!1].weight"_glob) ==
        std::vector<std::string>{"layer3.1.bn2.weight", "layer4.1.bn2.weight"});
  CHECK(picked(*net, "{conv1,fc}.weight"_glob) == std::vector<std::string>{"conv1.weight", "fc.weight"});
  CHECK(picked(*net, "layer{3,4.1}.**.bn1.bias"_glob) ==
        std::vector<std::string>{"layer3.0.bn1.bias", "layer3.1.bn1.bias", "layer4.1.bn1.bias"});
  CHECK(picked(*net, "**"_glob).size() == 62);
  CHECK(picked(*net, "layer1.**.conv2.weight"_glob) == std::vector<std::string>{"layer1.0.conv2.weight", "layer1.1.conv2.weight"});
  // ** matches zero segments too
  CHECK(picked(*net, "**.fc.**.bias"_glob) == std::vector<std::string>{"fc.bias"});
}

TEST_CASE("glob matching agrees with a direct check on paths", "[select][glob]") {
  graft::glob g("a.*.c");
  CHECK(g.matches_path("a.b.c"));
  CHECK_FALSE(g.matches_path("a.b.x.c"));
  CHECK_FALSE(g.matches_path("a.c"));
  CHECK(graft::glob("bn*").matches_path("bn"));  // '*' may match nothing
  graft::glob esc(graft::runtime(R"(a\*b.c)"));
  CHECK(esc.matches_path("a*b.c"));
  CHECK_FALSE(esc.matches_path("axb.c"));
  graft::glob cls("x[a-c]y");
  CHECK(cls.matches_path("xby"));
  CHECK_FALSE(cls.matches_path("xdy"));
  graft::glob star("*ab*ab");
  CHECK(star.matches_path("xabyabab"));
  CHECK_FALSE(star.matches_path("xabyab.ab"));
  CHECK(g.could_match_under("a.q."));
  CHECK_FALSE(g.could_match_under("b."));
  CHECK_FALSE(g.could_match_under("a.b.c."));
  CHECK(graft::glob("a.**").could_match_under("a.b.c."));
}

TEST_CASE("runtime globs are checked and say what is wrong and where", "[select][glob]") {
  auto bad = [](const std::string& p) -> std::string {
    try {
      graft::glob g(graft::runtime(p));
    } catch (const graft::pattern_error& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK(bad("layer{3,4.**") == "[graft.pattern] invalid glob 'layer{3,4.**' at position 5: '{' is never closed\n  layer{3,4.**\n       ^");
  CHECK_THAT(bad("a.[bc"), Contains("position 2: '[' is never closed"));
  CHECK_THAT(bad("a**.b"), Contains("position 1: '**' must be a whole segment"));
  CHECK_THAT(bad("a..b"), Contains("position 2: empty segment"));
  CHECK_THAT(bad(".a"), Contains("position 0: empty segment"));
  CHECK_THAT(bad("a.b}"), Contains("position 3: '}' closes nothing"));
  CHECK_THAT(bad(""), Contains("the pattern is empty"));
  CHECK_THAT(bad("a\\"), Contains("escapes nothing"));
  // Every issue of the table: its example fails at run time with the table's words.
  for (const auto& row : graft::detail::glob_issue_table) {
    INFO(row.function);
    CHECK_THAT(bad(std::string(row.example)), Contains(std::string(row.text)));
  }
  static_assert(!graft::detail::check_glob("layer4.**").has_value());
  static_assert(graft::detail::check_glob("layer{4").has_value());
  static_assert(graft::detail::check_glob("layer{4")->position == 5);
}

TEST_CASE("regex selects by full match of the path", "[select][regex]") {
  auto net = models::resnet(18);
  CHECK(picked(*net, graft::regex(R"(layer[34]\.\d+\.conv\d\.weight)")).size() == 8);
  CHECK_THROWS_WITH(graft::select(*net, graft::regex("fc")), Contains("'regex 'fc'' matched none"));
  CHECK_THROWS_WITH(graft::regex("layer(4"), Contains("[graft.pattern] invalid regex 'layer(4': missing )"));
}

TEST_CASE("names, prefix, local names and user predicates", "[select]") {
  auto net = models::resnet(18);
  CHECK(picked(*net, graft::names{"fc.bias", "conv1.weight"}) == std::vector<std::string>{"conv1.weight", "fc.bias"});
  CHECK(picked(*net, graft::prefix("layer4.1.")).size() == 6);
  CHECK(picked(*net, graft::bias).size() == 21);
  CHECK(picked(*net, graft::where([](std::string_view p) { return p.ends_with("bn2.weight"); }, "bn2 weights")).size() == 8);
  CHECK(graft::where([](const graft::tensor_view& t) { return t.is_buffer(); }, "buffers").requirement == graft::needs::module);
}

TEST_CASE("module-type, kind and tensor predicates", "[select]") {
  auto net = models::resnet(18);
  auto bn = graft::select(*net, graft::of_type<torch::nn::BatchNorm2dImpl>);
  CHECK(bn.size() == 40);
  CHECK(picked(*net, graft::of_type<torch::nn::LinearImpl, torch::nn::BatchNorm2dImpl>).size() == 42);
  CHECK(picked(*net, graft::of_type<torch::nn::BatchNorm2dImpl> & graft::is_buffer, {.buffers = true}).size() == 60);
  CHECK(picked(*net, graft::norm_layers, {.parameters = true, .buffers = true}).size() == 100);
  CHECK(picked(*net, graft::ndim <= 1).size() == 41);
  CHECK(picked(*net, graft::ndim == 4).size() == 20);
  CHECK(picked(*net, graft::dtype == torch::kFloat).size() == 62);
  CHECK(picked(*net, graft::is_buffer & (graft::dtype == torch::kLong), {.buffers = true}).size() == 20);
  net->fc->weight.requires_grad_(false);
  CHECK(picked(*net, graft::requires_grad).size() == 61);
}

TEST_CASE("composition: and, or, not, except; descriptions in words", "[select]") {
  auto net = models::resnet(18);
  auto sel = "layer4.**"_glob - graft::of_type<torch::nn::BatchNorm2dImpl>;
  CHECK(sel.describe() == "layer4.** except of_type<BatchNorm2d>");
  CHECK(picked(*net, sel).size() == 5);  // 4 convs + downsample conv
  auto both = ("layer4.**"_glob & !graft::bias) | "fc.*"_glob;
  CHECK(both.describe() == "layer4.** and not *.bias or fc.*");
  CHECK(picked(*net, both).size() == 12);
  auto nested = "layer4.**"_glob & ("fc.*"_glob | graft::bias);
  CHECK(nested.describe() == "layer4.** and (fc.* or *.bias)");
  CHECK((!("a"_glob | "b"_glob)).describe() == "not (a or b)");
  CHECK(("x.**"_glob - ("a"_glob - "b"_glob)).describe() == "x.** except (a except b)");
  CHECK(picked(*net, nested) == by_hand(*net, [](const std::string& k) { return k.starts_with("layer4.") && k.ends_with(".bias"); }));
}

TEST_CASE("an empty selection is an error offering the nearest names", "[select]") {
  auto net = models::resnet(18);
  CHECK_THROWS_WITH(graft::select(*net, "layer5.**"_glob),
                    "[graft.selection] 'layer5.**' matched none of the 62 parameters of models::ResNetImpl; did you "
                    "mean 'layer1.**', 'layer2.**' or 'layer3.**'? (wrap the selector in graft::optional(...) if "
                    "matching nothing is fine)");
  CHECK_THROWS_WITH(graft::select(*net, "fc.weights"_glob), Contains("did you mean 'fc.weight'"));
  CHECK_THROWS_AS(graft::select(*net, "nothing.here"_glob), graft::selection_error);
  CHECK(graft::select(*net, graft::optional("layer5.**"_glob)).empty());
}

TEST_CASE("explain lists what matched", "[select]") {
  auto net = models::resnet(18);
  auto ex = graft::explain(*net, "fc.*"_glob);
  CHECK(ex.matched_count() == 2);
  auto text = fmt::format("{}", ex);
  CHECK_THAT(text, Contains("fc.*: matched 2 of 62 tensors (513000 of 11689512 elements)"));
  CHECK_THAT(text, Contains("  + fc.weight [1000, 512]"));
  CHECK_THAT(text, Contains("  - conv1.weight [64, 3, 7, 7]"));
}

TEST_CASE("selection pruning visits only the subtrees a glob can match", "[select]") {
  auto net = models::resnet(18);
  std::size_t visited = 0;
  auto g = "layer4.**"_glob;
  graft::detail::for_each_match(*net, graft::where([&](std::string_view) { ++visited; return true; }, "count") & g,
                                {}, [](const graft::tensor_view&) {});
  CHECK(visited == 15);  // only layer4's tensors were reached
}

TEST_CASE("regex pruning never drops a match std::regex finds", "[select][regex]") {
  auto net = models::resnet(18);
  for (const char* p : {R"(layer4\.\d+\.conv\d\.weight)", R"(layer[34]\..*)", R"(.*\.conv2\.weight)", R"((?i)LAYER2\..*bias)",
                        R"(fc\.(weight|bias)|conv1\.weight)", R"(layer1\.0\.bn1\.(weight|bias|running_mean))", R"(l.*)"}) {
    INFO(p);
    bool icase = std::string_view(p).starts_with("(?i)");  // std::regex spells it as a flag
    std::regex re(icase ? p + 4 : p, icase ? std::regex::icase : std::regex::ECMAScript);
    auto expected = by_hand(*net, [&](const std::string& k) { return std::regex_match(k, re); });
    CHECK(picked(*net, graft::optional(graft::regex(p))) == expected);
    std::vector<std::string> with_buffers;
    for (auto t : graft::walk(*net, graft::walk_options::state()))
      if (std::regex_match(std::string(t.path()), re)) with_buffers.emplace_back(t.path());
    CHECK(picked(*net, graft::optional(graft::regex(p)), graft::walk_options::state()) == with_buffers);
  }
  // A literal prefix lets the walk skip every other subtree.
  graft::regex r(R"(layer4\.\d+\.conv\d\.weight)");
  CHECK(r.could_match_under("layer4.1."));
  CHECK_FALSE(r.could_match_under("layer3."));
  CHECK_FALSE(r.could_match_under("fc."));
  CHECK(graft::regex(".*weight").could_match_under("fc."));
}

TEST_CASE("glob matches as the equivalent regex does, and prunes only subtrees without matches", "[select][glob]") {
  auto net = models::resnet(18);
  std::vector<std::string> paths, prefixes;
  for (auto t : graft::walk(*net, graft::walk_options::state())) paths.emplace_back(t.path());
  for (auto& m : net->named_modules("", false)) prefixes.push_back(m.key() + ".");
  const std::pair<const char*, const char*> cases[] = {
      {"layer4.**", R"(layer4(\.[^.]+)*)"},
      {"layer4.0.**", R"(layer4\.0(\.[^.]+)*)"},
      {"layer1.0.bn1.weight", R"(layer1\.0\.bn1\.weight)"},
      {"layer1.0.bn1", R"(layer1\.0\.bn1)"},
      {"layer2.*.downsample.**", R"(layer2\.[^.]*\.downsample(\.[^.]+)*)"},
      {"layer3.**.bias", R"(layer3(\.[^.]+)*\.bias)"},
      {"**.bn?.running_*", R"(([^.]+\.)*bn.\.running_[^.]*)"},
      {"layer{1,4}.1.**.weight", R"(layer[14]\.1(\.[^.]+)*\.weight)"},
      {"fc.**", R"(fc(\.[^.]+)*)"},
      {"l*.0.conv1.weight", R"(l[^.]*\.0\.conv1\.weight)"},
      {R"(layer1\.0.**)", R"(NEVER)"},  // an escaped dot is part of a segment: it never matches
  };
  for (auto [g, r] : cases) {
    INFO(g);
    graft::glob glob(graft::runtime(g));
    std::regex re(r);
    for (auto& p : paths) {
      INFO(p);
      CHECK(glob.matches_path(p) == std::regex_match(p, re));
    }
    std::vector<std::string> wrongly_pruned;
    for (auto& pre : prefixes)
      if (!glob.could_match_under(pre))
        for (auto& p : paths)
          if (p.starts_with(pre) && std::regex_match(p, re)) wrongly_pruned.push_back(p);
    CHECK(wrongly_pruned.empty());
  }
}
