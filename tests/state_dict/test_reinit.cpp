#include <catch2/catch.hpp>

#include <graft/select.hpp>
#include <graft/state_dict.hpp>

using namespace graft::literals;
using Catch::Matchers::Contains;

namespace {
struct headImpl : torch::nn::Module {
  torch::nn::Linear body{register_module("body", torch::nn::Linear(4, 4))};
  torch::nn::BatchNorm1d bn{register_module("bn", torch::nn::BatchNorm1d(4))};
  torch::nn::Linear fc{register_module("fc", torch::nn::Linear(4, 3))};
};
TORCH_MODULE(head);

// A module sharing one weight between two registered names.
struct holderImpl : torch::nn::Module {
  explicit holderImpl(torch::Tensor w) { register_parameter("weight", w); }
};
TORCH_MODULE(holder);
struct tiedImpl : torch::nn::Module {
  tiedImpl() {
    auto w = torch::randn({6, 3});
    register_module("emb", holder(w));
    register_module("out", holder(w));
  }
};
TORCH_MODULE(tied);
} // namespace

TEST_CASE("reinit re-initializes exactly the selected tensors in place", "[state_dict][reinit]") {
  torch::manual_seed(0);
  head net;
  {
    torch::NoGradGuard g;
    for (auto& p : net->parameters()) p.fill_(7);
  }
  net->bn->running_mean.fill_(5);
  auto ptr = net->fc->weight.data_ptr();
  auto r = graft::reinit(*net, "fc.weight"_glob);
  CHECK(r.tensors == std::vector<std::string>{"fc.weight"});
  CHECK(r.elements == 12);
  CHECK(net->fc->weight.data_ptr() == ptr);
  CHECK_FALSE(torch::equal(net->fc->weight, torch::full({3, 4}, 7.0)));
  // kaiming-uniform bound of Linear's own reset_parameters: 1/sqrt(fan_in)
  CHECK(net->fc->weight.abs().max().item<float>() <= 0.5f);
  CHECK(torch::equal(net->fc->bias, torch::full({3}, 7.0)));  // same module, not selected: kept
  CHECK(torch::equal(net->body->weight, torch::full({4, 4}, 7.0)));
  graft::reinit(*net, graft::of_type<torch::nn::BatchNorm1dImpl>);
  CHECK(torch::equal(net->bn->weight, torch::ones({4})));
  CHECK(torch::equal(net->bn->running_mean, torch::zeros({4})));
  CHECK_THROWS_AS(graft::reinit(*net, "fcc.**"_glob), graft::selection_error);
}

TEST_CASE("reinit refuses modules whose initialization is unknown, changing nothing", "[state_dict][reinit]") {
  tied t;
  auto before = t->named_parameters()["emb.weight"].clone();
  CHECK_THROWS_WITH(graft::reinit(*t, "emb.weight"_glob),
                    Contains("[graft.option] reinit: 'emb' is a (anonymous namespace)::holderImpl, whose initialization graft does not know"));
  CHECK(torch::equal(t->named_parameters()["emb.weight"], before));
}

TEST_CASE("merging into tied weights keeps them tied", "[state_dict][merge]") {
  tied t;
  auto sd = graft::state_dict(*t);
  CHECK(sd.keys() == std::vector<std::string>{"emb.weight", "out.weight"});  // Python lists both names
  graft::state_dict ckpt;
  auto v = torch::arange(18, torch::kFloat).reshape({6, 3});
  ckpt.insert("emb.weight", v);
  ckpt.insert("out.weight", v);
  auto r = ckpt | graft::merge(*t);
  CHECK(r.loaded.size() == 2);
  auto params = t->named_parameters();
  CHECK(params["emb.weight"].is_same(params["out.weight"]));
  CHECK(torch::equal(params["out.weight"], v));
}
