// Every schedule against torch.optim.lr_scheduler: the values come from PyTorch at test time.

#include "test_schedule_support.hpp"

#include <cmath>
#include <functional>

using namespace graft::test;

TEST_CASE("step_lr reproduces StepLR for SGD with two groups, and SGD trains with those lrs") {
  auto out = run_python(std::string(python_prelude) + R"(
a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
o = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}], lr=0.1)
s = L.StepLR(o, step_size=1, gamma=0.1)
for e in range(9):
    print("lr", "step", e, *[repr(g["lr"]) for g in o.param_groups])
    for p in (a, b):
        p.grad = torch.ones(1)
    o.step()
    print("param", "step", e, repr(a.item()), repr(b.item()))
    s.step()
)");
  auto opt = make_optimizer(opt_kind::sgd_plain, {0.1, 0.01});
  graft::lr_scheduler sched(*opt, graft::step_lr{.step_size = 1, .gamma = 0.1});
  std::vector<std::vector<double>> lrs, params;
  for (int e = 0; e < 9; ++e) {
    CHECK(sched.epoch() == e);
    CHECK(sched.last_lrs() == group_lrs(*opt)); // the optimizer holds what the scheduler reports
    lrs.push_back(group_lrs(*opt));
    for (auto& g : opt->param_groups()) g.params()[0].mutable_grad() = torch::ones({1});
    opt->step();
    params.push_back({});
    for (auto& g : opt->param_groups()) params.back().push_back(g.params()[0].item<float>());
    sched.step();
  }
  check_traces(lrs, parse_traces(out, "lr").at("step"), "lrs");
  // The parameters moved by exactly those lrs: SGD used them.
  check_traces(params, parse_traces(out, "param").at("step"), "parameters after each SGD step");
  CHECK(sched.base_lrs() == std::vector<double>{0.1, 0.01});
}

namespace {

/// One comparison: the PyTorch scheduler (a Python expression of the optimizer `o`) and the graft
/// schedule that must produce the same values.
struct schedule_case {
  std::string tag;
  std::vector<double> lrs;
  int epochs;
  opt_kind kind;
  std::string python;
  std::function<graft::lr_scheduler(torch::optim::Optimizer&)> attach;
};

template <class S>
std::function<graft::lr_scheduler(torch::optim::Optimizer&)> with(S s) {
  return [s](torch::optim::Optimizer& opt) { return graft::lr_scheduler(opt, s); };
}

// Runs every case in one Python process and compares lrs and momenta, group by group.
void check_cases(const std::vector<schedule_case>& cases) {
  std::string script = python_prelude;
  for (auto& c : cases) {
    script += "run('" + c.tag + "', [";
    for (double lr : c.lrs) script += fmt::format("{}, ", lr);
    script += fmt::format("], lambda o: {}, {}, '{}')\n", c.python, c.epochs, python_kind(c.kind));
  }
  auto out = run_python(script);
  auto lrs = parse_traces(out, "lr"), momenta = parse_traces(out, "mom");
  for (auto& c : cases) {
    auto opt = make_optimizer(c.kind, c.lrs);
    auto sched = c.attach(*opt);
    std::vector<std::vector<double>> got_lrs, got_momenta;
    for (int e = 0; e < c.epochs; ++e) {
      CHECK(sched.last_lrs() == group_lrs(*opt));
      got_lrs.push_back(group_lrs(*opt));
      got_momenta.push_back(group_momenta(*opt));
      if (e + 1 < c.epochs) sched.step();
    }
    check_traces(got_lrs, lrs.at(c.tag), c.tag + " lrs");
    if (momenta.count(c.tag)) check_traces(got_momenta, momenta.at(c.tag), c.tag + " momenta");
  }
}

} // namespace

TEST_CASE("multiplicative decays match StepLR, MultiStepLR, ExponentialLR and ConstantLR") {
  check_cases({
      {"step_3", {0.1, 0.01, 1.0}, 12, opt_kind::sgd, "L.StepLR(o, step_size=3, gamma=0.5)",
       with(graft::step_lr{.step_size = 3, .gamma = 0.5})},
      {"step_adam", {1e-3, 3e-4}, 7, opt_kind::adam, "L.StepLR(o, step_size=2)",
       with(graft::step_lr{.step_size = 2})},
      {"multi_step", {0.1, 0.01}, 9, opt_kind::sgd, "L.MultiStepLR(o, milestones=[2, 5], gamma=0.1)",
       with(graft::multi_step_lr{.milestones = {2, 5}, .gamma = 0.1})},
      {"multi_step_repeat", {0.2, 0.05, 0.5}, 9, opt_kind::rmsprop,
       "L.MultiStepLR(o, milestones=[6, 3, 3], gamma=0.5)",
       with(graft::multi_step_lr{.milestones = {6, 3, 3}, .gamma = 0.5})},
      {"exponential", {0.1, 0.01}, 15, opt_kind::sgd, "L.ExponentialLR(o, gamma=0.9)",
       with(graft::exponential_lr{.gamma = 0.9})},
      {"exponential_up", {0.1, 0.3}, 8, opt_kind::adamw, "L.ExponentialLR(o, gamma=1.5)",
       with(graft::exponential_lr{.gamma = 1.5})},
      {"constant", {0.1, 0.01}, 8, opt_kind::sgd, "L.ConstantLR(o)", with(graft::constant_lr{})},
      {"constant_half", {0.1, 0.01, 0.7}, 6, opt_kind::adagrad, "L.ConstantLR(o, factor=0.5, total_iters=3)",
       with(graft::constant_lr{.factor = 0.5, .total_iters = 3})},
  });
}

TEST_CASE("cosine_annealing matches CosineAnnealingLR, with eta_min and past t_max") {
  check_cases({
      {"cos_10", {0.1, 0.01}, 12, opt_kind::sgd, "L.CosineAnnealingLR(o, T_max=10)",
       with(graft::cosine_annealing{.t_max = 10})},
      {"cos_eta", {0.1, 0.01, 0.05}, 23, opt_kind::adam, "L.CosineAnnealingLR(o, T_max=5, eta_min=0.001)",
       with(graft::cosine_annealing{.t_max = 5, .eta_min = 0.001})},
      {"cos_1", {0.1, 0.02}, 5, opt_kind::sgd, "L.CosineAnnealingLR(o, T_max=1)",
       with(graft::cosine_annealing{.t_max = 1})},
      {"cos_50", {0.3, 0.003}, 60, opt_kind::sgd, "L.CosineAnnealingLR(o, T_max=50, eta_min=1e-4)",
       with(graft::cosine_annealing{.t_max = 50, .eta_min = 1e-4})},
  });
}

TEST_CASE("linear_lr and warmup match LinearLR and SequentialLR([LinearLR, other], [n])") {
  auto seq = [](std::string first, std::string then, int n) {
    return fmt::format("L.SequentialLR(o, [L.LinearLR(o, {}), {}], milestones=[{}])", first, then, n);
  };
  using graft::linear_warmup, graft::warmup;
  check_cases({
      {"linear", {0.1, 0.01}, 8, opt_kind::sgd, "L.LinearLR(o)", with(graft::linear_lr{})},
      {"linear_down", {0.1, 0.01, 1.0}, 7, opt_kind::adam,
       "L.LinearLR(o, start_factor=1.0, end_factor=0.1, total_iters=4)",
       with(graft::linear_lr{.start_factor = 1.0, .end_factor = 0.1, .total_iters = 4})},
      {"linear_to_zero", {0.1, 0.01}, 6, opt_kind::sgd,
       "L.LinearLR(o, start_factor=0.25, end_factor=0.0, total_iters=4)",
       with(graft::linear_lr{.start_factor = 0.25, .end_factor = 0.0, .total_iters = 4})},
      {"warmup_cos", {0.1, 0.01}, 20, opt_kind::sgd,
       seq("start_factor=0.1, total_iters=5", "L.CosineAnnealingLR(o, T_max=10)", 5),
       with(warmup(linear_warmup{.start_factor = 0.1, .steps = 5}, graft::cosine_annealing{.t_max = 10}))},
      {"warmup_cos_eta", {0.1, 0.01, 1.0}, 16, opt_kind::adamw,
       seq("start_factor=0.5, total_iters=2", "L.CosineAnnealingLR(o, T_max=8, eta_min=0.001)", 2),
       with(warmup(linear_warmup{.start_factor = 0.5, .steps = 2},
                   graft::cosine_annealing{.t_max = 8, .eta_min = 0.001}))},
      {"warmup_step", {0.1, 0.01}, 12, opt_kind::sgd,
       seq("start_factor=0.25, total_iters=3", "L.StepLR(o, 2, gamma=0.5)", 3),
       with(warmup(linear_warmup{.start_factor = 0.25, .steps = 3}, graft::step_lr{.step_size = 2, .gamma = 0.5}))},
      {"warmup_multi_step", {0.1, 0.01}, 12, opt_kind::rmsprop,
       seq("start_factor=0.01, total_iters=4", "L.MultiStepLR(o, [2, 4], 0.1)", 4),
       with(warmup(linear_warmup{.start_factor = 0.01, .steps = 4},
                   graft::multi_step_lr{.milestones = {2, 4}, .gamma = 0.1}))},
      {"warmup_exp", {0.1, 0.01}, 8, opt_kind::sgd,
       seq("start_factor=0.5, total_iters=1", "L.ExponentialLR(o, gamma=0.8)", 1),
       with(warmup(linear_warmup{.start_factor = 0.5, .steps = 1}, graft::exponential_lr{.gamma = 0.8}))},
  });
}

TEST_CASE("lambda_lr matches LambdaLR, with one function or one per group") {
  check_cases({
      {"lambda", {0.1, 0.01}, 10, opt_kind::sgd, "L.LambdaLR(o, lambda e: 0.95 ** e)",
       with(graft::lambda_lr{.factor = [](std::int64_t e) { return std::pow(0.95, double(e)); }})},
      {"lambda_per_group", {0.1, 0.01}, 10, opt_kind::adam,
       "L.LambdaLR(o, [lambda e: e // 3, lambda e: 0.9 ** e])",
       with(graft::lambda_lr{.per_group = {[](std::int64_t e) { return double(e / 3); },
                                           [](std::int64_t e) { return std::pow(0.9, double(e)); }}})},
      {"lambda_warmup", {0.1, 0.01, 0.5}, 8, opt_kind::sgd, "L.LambdaLR(o, lambda e: min(1.0, (e + 1) / 4))",
       with(graft::lambda_lr{.factor = [](std::int64_t e) { return std::min(1.0, double(e + 1) / 4); }})},
  });
}

TEST_CASE("one_cycle matches OneCycleLR, lrs and momentum or beta1") {
  check_cases({
      {"oc_cos", {0.1, 0.01}, 21, opt_kind::sgd, "L.OneCycleLR(o, max_lr=[0.1, 0.01], total_steps=20)",
       with(graft::one_cycle{.total_steps = 20})},
      {"oc_linear", {0.1, 0.01}, 16, opt_kind::sgd,
       "L.OneCycleLR(o, max_lr=1.0, total_steps=15, pct_start=0.4, anneal_strategy='linear', "
       "div_factor=10.0, final_div_factor=100.0)",
       with(graft::one_cycle{.total_steps = 15, .max_lr = {1.0}, .pct_start = 0.4,
                             .anneal_strategy = graft::anneal::linear, .div_factor = 10,
                             .final_div_factor = 100})},
      {"oc_three", {0.1, 0.01, 0.2}, 31, opt_kind::sgd,
       "L.OneCycleLR(o, max_lr=[0.5, 0.05, 0.2], total_steps=30, pct_start=0.25, three_phase=True)",
       with(graft::one_cycle{.total_steps = 30, .max_lr = {0.5, 0.05, 0.2}, .pct_start = 0.25,
                             .three_phase = true})},
      {"oc_adam", {0.01, 0.001}, 13, opt_kind::adam,
       "L.OneCycleLR(o, max_lr=[0.01, 0.001], total_steps=12, base_momentum=0.8, max_momentum=0.9)",
       with(graft::one_cycle{.total_steps = 12, .base_momentum = 0.8, .max_momentum = 0.9})},
      {"oc_adamw_three_linear", {0.01, 0.001}, 21, opt_kind::adamw,
       "L.OneCycleLR(o, max_lr=[0.01, 0.001], total_steps=20, pct_start=0.3, three_phase=True, "
       "anneal_strategy='linear')",
       with(graft::one_cycle{.total_steps = 20, .anneal_strategy = graft::anneal::linear,
                             .three_phase = true})},
      {"oc_rmsprop", {0.01, 0.001}, 11, opt_kind::rmsprop, "L.OneCycleLR(o, max_lr=[0.01, 0.001], total_steps=10)",
       with(graft::one_cycle{.total_steps = 10})},
      {"oc_adagrad_no_momentum", {0.01, 0.05}, 9, opt_kind::adagrad,
       "L.OneCycleLR(o, max_lr=[0.01, 0.05], total_steps=8, cycle_momentum=False)",
       with(graft::one_cycle{.total_steps = 8, .cycle_momentum = false})},
      {"oc_tiny", {0.1, 0.01}, 3, opt_kind::sgd, "L.OneCycleLR(o, max_lr=[0.1, 0.01], total_steps=2)",
       with(graft::one_cycle{.total_steps = 2})},
  });
}
