// A training run started in Python and continued in C++ (model, optimizer, scheduler from a
// torch.save'd training checkpoint), against the same run continued in Python; and back: a
// checkpoint C++ writes that Python's load_state_dict takes and continues equally. SGD
// (momentum, nesterov, weight decay) with StepLR, Adam (amsgrad, weight decay) with
// CosineAnnealingLR, AdamW with a warm-up then cosine (SequentialLR), SGD with OneCycleLR (its
// momentum cycling too); the last two from Python to C++ only.
// The oracle is the torch the build uses.

#include <catch2/catch.hpp>

#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include <graft/formats.hpp>
#include <graft/graft.hpp>
#include <graft/train.hpp>

#include "oracle.hpp"

namespace pytorch_state_test {

using namespace graft::literals;

const char* const prelude_py = R"(
import sys, warnings, torch
warnings.filterwarnings("ignore")
from torch.optim import lr_scheduler as L
torch.set_num_threads(1)
X = ((torch.arange(24).reshape(6, 4) * 7) % 11 - 5).float() * 0.25
Y = ((torch.arange(18).reshape(6, 3) * 5) % 7 - 3).float() * 0.5
def make(kind):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    groups = [{"params": [model[0].weight, model[0].bias]}, {"params": [model[2].weight, model[2].bias], "lr": 0.02}]
    if kind == "sgd":
        opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
        sched = L.StepLR(opt, step_size=3, gamma=0.5)
    elif kind == "adam":
        opt = torch.optim.Adam(groups, lr=0.01, betas=(0.8, 0.95), weight_decay=1e-2, amsgrad=True)
        sched = L.CosineAnnealingLR(opt, T_max=30, eta_min=1e-4)
    elif kind == "onecycle":
        opt = torch.optim.SGD(groups, lr=0.05, momentum=0.9)
        sched = L.OneCycleLR(opt, max_lr=[0.05, 0.02], total_steps=40)
    else:
        opt = torch.optim.AdamW(groups, lr=0.01, weight_decay=0.1)
        sched = L.SequentialLR(opt, [L.LinearLR(opt, start_factor=0.1, total_iters=4), L.CosineAnnealingLR(opt, T_max=20)], milestones=[4])
    return model, opt, sched
def step(model, opt, sched):
    opt.zero_grad()
    ((model(X) - Y) ** 2).mean().backward()
    opt.step()
    sched.step()
def show(tag, model):
    print(tag, *[repr(v) for p in model.parameters() for v in p.detach().flatten().tolist()])
)";

// Python: 5 steps, a training checkpoint, then 20 and 10 more steps.
std::string start_script(const std::string& dir) {
  return std::string(prelude_py) + "dir = '" + dir + R"('
for kind in ["sgd", "adam", "adamw", "onecycle"]:
    model, opt, sched = make(kind)
    for _ in range(5): step(model, opt, sched)
    sched_state = sched.state_dict()
    # torch 1.13's OneCycleLR keeps its annealing function as a bound method, which no safe
    # loader reads (2.x keeps its name); it is code, not state.
    sched_state.pop("anneal_func", None)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched_state, "epoch": 5},
               dir + "/" + kind + ".pt")
    for _ in range(20): step(model, opt, sched)
    show(kind + " p25", model)
    for _ in range(10): step(model, opt, sched)
    show(kind + " p35", model)
)";
}

// Python again: C++'s checkpoints after step 25, loaded into a fresh run and continued 10 steps.
std::string resume_script(const std::string& dir) {
  return std::string(prelude_py) + "dir = '" + dir + R"('
for kind in ["sgd", "adam"]:
    model, opt, sched = make(kind)
    ck = torch.load(dir + "/" + kind + "_cpp.pt")
    model.load_state_dict(ck["model"]); opt.load_state_dict(ck["optimizer"]); sched.load_state_dict(ck["lr_scheduler"])
    for _ in range(10): step(model, opt, sched)
    show(kind + " py35", model)
    print(kind, "epoch", ck["epoch"], sched.last_epoch)
)";
}

std::map<std::string, std::vector<double>> parse(const std::string& out) {
  std::map<std::string, std::vector<double>> rows;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::string kind, tag;
    if (!(words >> kind >> tag) || (tag != "p25" && tag != "p35" && tag != "py35" && tag != "epoch")) continue;
    auto& row = rows[kind + " " + tag];
    for (std::string w; words >> w;) row.push_back(std::stod(w));
  }
  return rows;
}

torch::Tensor X() {
  return (torch::arange(24, torch::kInt64).reshape({6, 4}) * 7).remainder(11).sub(5).to(torch::kFloat32) * 0.25;
}
torch::Tensor Y() {
  return (torch::arange(18, torch::kInt64).reshape({6, 3}) * 5).remainder(7).sub(3).to(torch::kFloat32) * 0.5;
}

struct run {
  torch::nn::Sequential model{torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 3)};
  graft::named_param_groups groups;
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::unique_ptr<graft::lr_scheduler> sched;

  explicit run(const std::string& kind) {
    auto builder = graft::param_groups(*model).group("body", "0.**"_glob).group("head", "2.**"_glob, {.lr = 0.02});
    if (kind == "sgd") {
      groups = builder.build(torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true).weight_decay(1e-3));
      opt = std::make_unique<torch::optim::SGD>(groups.make_optimizer<torch::optim::SGD>());
      sched = std::make_unique<graft::lr_scheduler>(*opt, graft::step_lr{.step_size = 3, .gamma = 0.5});
    } else if (kind == "adam") {
      groups = builder.build(torch::optim::AdamOptions(0.01).betas({0.8, 0.95}).weight_decay(1e-2).amsgrad(true));
      opt = std::make_unique<torch::optim::Adam>(groups.make_optimizer<torch::optim::Adam>());
      sched = std::make_unique<graft::lr_scheduler>(*opt, graft::cosine_annealing{.t_max = 30, .eta_min = 1e-4});
    } else if (kind == "onecycle") {
      groups = builder.build(torch::optim::SGDOptions(0.05).momentum(0.9));
      opt = std::make_unique<torch::optim::SGD>(groups.make_optimizer<torch::optim::SGD>());
      sched = std::make_unique<graft::lr_scheduler>(*opt, graft::one_cycle{.total_steps = 40});
    } else {
      groups = builder.build(torch::optim::AdamWOptions(0.01).weight_decay(0.1));
      opt = std::make_unique<torch::optim::AdamW>(groups.make_optimizer<torch::optim::AdamW>());
      sched = std::make_unique<graft::lr_scheduler>(
          *opt, graft::warmup(graft::linear_warmup{.start_factor = 0.1, .steps = 4}, graft::cosine_annealing{.t_max = 20}));
    }
  }
  void step(const torch::Tensor& x, const torch::Tensor& y) {
    opt->zero_grad();
    (model->forward(x) - y).pow(2).mean().backward();
    opt->step();
    sched->step();
  }
  std::vector<double> params() const {
    std::vector<double> out;
    for (const auto& p : model->parameters()) {
      auto flat = p.detach().to(torch::kFloat64).flatten();
      for (std::int64_t i = 0; i < flat.numel(); ++i) out.push_back(flat[i].item<double>());
    }
    return out;
  }
};

void check_close(const std::vector<double>& got, const std::vector<double>& want, const std::string& what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == Approx(want[i]).epsilon(1e-6).margin(1e-6));
}

} // namespace pytorch_state_test

TEST_CASE("a Python training run continues in C++ and a C++ one in Python, equal to the run continued in Python") {
  using namespace pytorch_state_test;
  graft::test::scratch_dir dir;
  const auto expected = parse(graft::test::run_python_with(GRAFT_PYTHON, start_script(dir.path().string())));
  const auto x = X(), y = Y();
  for (const std::string kind : {"sgd", "adam", "adamw", "onecycle"}) {
    INFO(kind);
    const graft::value ck = graft::read_value(dir.file(kind + ".pt"));
    run r(kind);
    graft::merge(*r.model, graft::state_dict::from_value(ck.as_dict().at("model")));
    graft::load_optimizer_state(*r.opt, ck.as_dict().at("optimizer"), r.model.ptr().get());
    graft::load_scheduler_state(*r.sched, ck.as_dict().at("lr_scheduler"), &ck.as_dict().at("optimizer"));
    CHECK(r.sched->epoch() == 5);
    for (int k = 0; k < 20; ++k) r.step(x, y);
    check_close(r.params(), expected.at(kind + " p25"), "C++ steps 6-25 against Python's");
    if (kind == "sgd" || kind == "adam") {
      graft::dict out;
      out.set("model", graft::state_dict(*r.model).to_value());
      out.set("optimizer", graft::optimizer_state(*r.opt));
      out.set("lr_scheduler", graft::scheduler_state(*r.sched));
      out.set("epoch", std::int64_t{25});
      graft::write_torch_save(dir.file(kind + "_cpp.pt"), graft::value(std::move(out)));
    }
    for (int k = 0; k < 10; ++k) r.step(x, y);
    check_close(r.params(), expected.at(kind + " p35"), "C++ steps 26-35 against Python's");
  }
  const auto back = parse(graft::test::run_python_with(GRAFT_PYTHON, resume_script(dir.path().string())));
  for (const std::string kind : {"sgd", "adam"}) {
    check_close(back.at(kind + " py35"), expected.at(kind + " p35"), kind + ": Python continuing C++'s checkpoint");
    CHECK(back.at(kind + " epoch") == std::vector<double>{25, 35});
  }
}

TEST_CASE("optimizer_state writes PyTorch's layout: indices across groups, a float32 step, the groups' settings") {
  using namespace pytorch_state_test;
  run r("adam");
  r.step(X(), Y());
  const auto state = graft::optimizer_state(*r.opt);
  const auto& groups = state.as_dict().at("param_groups").as_sequence().items;
  REQUIRE(groups.size() == 2);
  const auto& head = groups[1].as_dict();
  CHECK(head.at("lr").as_number() == r.opt->param_groups()[1].options().get_lr());
  CHECK(head.at("betas").as_sequence().is_tuple);
  CHECK(head.at("amsgrad").as_bool());
  const auto& indices = head.at("params").as_sequence().items;
  REQUIRE(indices.size() == 2);
  CHECK(indices[0].as_int() == 2);  // group 0 holds 0 and 1
  CHECK(indices[1].as_int() == 3);
  const auto& s = state.as_dict().at("state").as_dict();
  CHECK(s.size() == 4);
  for (const auto& [key, entry] : s) {
    const auto& step = entry.as_dict().at("step").as_tensor();
    CHECK(step.scalar_type() == torch::kFloat32);
    CHECK(step.item<double>() == 1.0);
    CHECK(entry.as_dict().find("max_exp_avg_sq") != nullptr);
  }
}

TEST_CASE("load_optimizer_state and load_scheduler_state refuse what does not fit, changing nothing") {
  using namespace pytorch_state_test;
  run source("sgd");
  source.step(X(), Y());
  const auto saved = graft::optimizer_state(*source.opt);
  const auto message_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const graft::error& e) {
      return e.what();
    }
    return "(no graft::error)";
  };

  // Another optimizer's state: Adam needs betas.
  run adam("adam");
  CHECK_THROWS_WITH(graft::load_optimizer_state(*adam.opt, saved), Catch::Contains("param_groups[0] has no 'betas'"));

  // Groups that differ: one group holding everything.
  torch::nn::Sequential one{torch::nn::Linear(4, 8), torch::nn::Tanh(), torch::nn::Linear(8, 3)};
  torch::optim::SGD flat(one->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  CHECK_THROWS_WITH(graft::load_optimizer_state(flat, saved), Catch::Contains("2 param groups, the optimizer 1"));

  // A momentum buffer of another shape: named by index and, with the model, by name.
  run target("sgd");
  graft::value bad = saved;
  auto& entries = bad.as_dict().find("state")->as_dict();
  for (auto& [key, entry] : entries)
    if (key.as_int() == 2) entry.as_dict().set("momentum_buffer", torch::zeros({3, 7}));
  const auto lr_before = target.opt->param_groups()[0].options().get_lr();
  const auto msg = message_of([&] { graft::load_optimizer_state(*target.opt, bad, target.model.ptr().get()); });
  CHECK_THAT(msg, Catch::Contains("state[2].momentum_buffer has shape [3, 7]") && Catch::Contains("'2.weight'") &&
                      Catch::Contains("[3, 8]"));
  CHECK(target.opt->state().empty());
  CHECK(target.opt->param_groups()[0].options().get_lr() == lr_before);

  // maximize, which libtorch's SGD lacks.
  graft::value maximize = saved;
  maximize.as_dict().find("param_groups")->as_sequence().items[1].as_dict().set("maximize", true);
  CHECK_THROWS_AS(graft::load_optimizer_state(*target.opt, maximize), graft::option_error);

  // A scheduler whose schedule is not the saved one's, and a LambdaLR.
  graft::dict step_state;
  graft::sequence bases, last;
  bases.items = {graft::value(0.05), graft::value(0.02)};
  last.items = {graft::value(0.025), graft::value(0.01)};
  step_state.set("base_lrs", bases);
  step_state.set("last_epoch", std::int64_t{3});
  step_state.set("_last_lr", last);
  graft::load_scheduler_state(*target.sched, graft::value(step_state));  // StepLR(3, 0.5) at epoch 3: halved
  CHECK(target.sched->epoch() == 3);
  CHECK(target.opt->param_groups()[1].options().get_lr() == Approx(0.01));
  graft::dict other = step_state;
  other.set("last_epoch", std::int64_t{2});  // the same lrs two epochs in: not StepLR(3, 0.5)
  CHECK_THROWS_WITH(graft::load_scheduler_state(*target.sched, graft::value(other)),
                    Catch::Contains("the schedules differ") && Catch::Contains("step_lr"));
  CHECK(target.sched->epoch() == 3);
  graft::dict lambda = step_state;
  lambda.set("lr_lambdas", graft::sequence{{graft::value(nullptr)}, false});
  CHECK_THROWS_WITH(graft::load_scheduler_state(*target.sched, graft::value(lambda)), Catch::Contains("LambdaLR"));
}

TEST_CASE("scaler_state and load_scaler_state use torch.amp.GradScaler's keys") {
  graft::amp::grad_scaler a({.init_scale = 256.0, .growth_interval = 7});
  const auto state = graft::scaler_state(a);
  CHECK(state.as_dict().at("scale").as_number() == 256.0);
  CHECK(state.as_dict().at("growth_interval").as_int() == 7);
  CHECK(state.as_dict().at("_growth_tracker").as_int() == 0);
  graft::amp::grad_scaler b;
  graft::load_scaler_state(b, state);
  CHECK(b.get_scale() == 256.0);
  CHECK(b.state_dict()->growth_interval == 7);
  CHECK_THROWS_AS(graft::load_scaler_state(b, graft::value(graft::dict{})), graft::state_error);
  graft::amp::grad_scaler off({.enabled = false});
  CHECK(graft::scaler_state(off).as_dict().empty());
}
