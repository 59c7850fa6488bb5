// The "Your own selector" example of docs/selectors.md, compiled and used: the code between
// the markers must appear in the docs verbatim.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>

#include <graft/select.hpp>
#include <graft/state_dict.hpp>

#include "resnet.hpp"

// [own-selector]
#include <cstdint>
#include <string>

#include <fmt/format.h>
#include <graft/select/protocol.hpp>

// Tensors with more than `n` elements: the big weights, on a model or in a checkpoint.
struct larger_than : graft::selector_base {
  static constexpr graft::needs requirement = graft::needs::tensor;  // decides on the tensor
  std::int64_t n;
  explicit larger_than(std::int64_t n) : n(n) {}
  bool matches(const graft::tensor_view& t) const { return t.tensor().numel() > n; }
  bool matches(const graft::entry_view& e) const { return e.has_tensor() && e.tensor().numel() > n; }
  std::string describe() const { return fmt::format("larger_than({})", n); }
};
static_assert(graft::entry_selector<larger_than>);  // usable on models and on checkpoints
// [own-selector end]

using namespace graft::literals;

TEST_CASE("a selector of one's own: select, compose, filter a checkpoint", "[select][protocol]") {
  auto net = models::resnet(18);
  auto big = graft::select(*net, larger_than(100000) & "layer4.**"_glob);
  REQUIRE(big.size() > 0);
  for (auto& t : big) CHECK(t.tensor.numel() > 100000);
  CHECK((larger_than(10) - graft::bias).describe() == "larger_than(10) except *.bias");
  CHECK_THROWS_AS(graft::select(*net, larger_than(int64_t{1} << 40)), graft::selection_error);
  CHECK(graft::select(*net, graft::optional(larger_than(int64_t{1} << 40))).size() == 0);

  graft::state_dict sd;
  sd.insert("small", torch::zeros({3}));
  sd.insert("large", torch::zeros({30, 30}));
  auto kept = sd | graft::filter(larger_than(100)) | graft::collect();
  CHECK(kept.keys() == std::vector<std::string>{"large"});
}

TEST_CASE("docs/selectors.md shows the example this file compiles", "[select][protocol]") {
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  std::string self = read(__FILE__);
  std::string dir = std::string(__FILE__).substr(0, std::string(__FILE__).rfind("/tests/"));
  std::string doc = read(dir + "/docs/selectors.md");
  auto from = self.find("// [own-selector]\n"), to = self.find("// [own-selector end]");
  REQUIRE(from != std::string::npos);
  REQUIRE(to != std::string::npos);
  from += std::string("// [own-selector]\n").size();
  REQUIRE_FALSE(doc.empty());
  CHECK(doc.find(self.substr(from, to - from)) != std::string::npos);
}
