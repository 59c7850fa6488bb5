// Groups added mid-training, save and resume, any optimizer, and the errors users see.

#include "test_schedule_support.hpp"

#include <cmath>
#include <functional>

using namespace graft::test;

namespace {

// Adds a one-parameter group at `lr`, as gradual unfreezing does.
void add_group(torch::optim::Optimizer& opt, double lr) {
  auto options = opt.param_groups()[0].options().clone();
  options->set_lr(lr);
  opt.add_param_group({{torch::zeros({1}, torch::requires_grad())}, std::move(options)});
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const graft::error& e) {
    return e.what();
  }
  return "(no graft::error thrown)";
}

} // namespace

TEST_CASE("a group added mid-training starts from its own lr and follows the schedule from there") {
  // PyTorch cannot add groups to a running scheduler; its values for a group with that base lr,
  // attached from the start, are the reference for the epochs after the group appears.
  auto out = run_python(std::string(python_prelude) + R"(
seq = lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=0.1, total_iters=3), L.CosineAnnealingLR(o, T_max=10)], milestones=[3])
run("warmup_cos", [0.1, 0.01, 0.5], seq, 14)
run("one_cycle", [0.1, 0.01, 0.05], lambda o: L.OneCycleLR(o, max_lr=[0.1, 0.01, 0.05], total_steps=12), 13)
run("step", [0.1, 0.01, 0.5, 0.05], lambda o: L.StepLR(o, step_size=2, gamma=0.5), 10)
)");
  auto expected = parse_traces(out, "lr");
  auto expected_momenta = parse_traces(out, "mom");

  SECTION("noticed by step(): warmup then cosine, head group at 5x") {
    auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
    graft::lr_scheduler sched(*opt, graft::warmup(graft::linear_warmup{.start_factor = 0.1, .steps = 3},
                                                  graft::cosine_annealing{.t_max = 10}));
    for (int e = 0; e < 14; ++e) {
      if (e == 5) add_group(*opt, 0.5); // appears before epoch 6's step
      auto lrs = group_lrs(*opt);
      INFO("epoch " << e);
      for (std::size_t g = 0; g < lrs.size(); ++g)
        if (g < 2 || e > 5) CHECK(lrs[g] == Approx(expected.at("warmup_cos")[e][g]).epsilon(1e-9));
      if (e == 5) CHECK(lrs[2] == 0.5); // untouched until the next step()
      sched.step();
    }
    CHECK(sched.base_lrs() == std::vector<double>{0.1, 0.01, 0.5});
  }

  SECTION("one_cycle drives the new group's momentum too") {
    auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
    graft::lr_scheduler sched(*opt, graft::one_cycle{.total_steps = 12});
    for (int e = 0; e < 13; ++e) {
      if (e == 4) add_group(*opt, 0.05);
      if (e > 4) {
        CHECK(group_lrs(*opt)[2] == Approx(expected.at("one_cycle")[e][2]).epsilon(1e-9));
        CHECK(group_momenta(*opt)[2] == Approx(expected_momenta.at("one_cycle")[e][2]).epsilon(1e-9));
      }
      if (e < 12) sched.step();
    }
  }

  SECTION("several groups added at different epochs, with Adam") {
    auto opt = make_optimizer(opt_kind::adam, {0.1, 0.01});
    graft::lr_scheduler sched(*opt, graft::step_lr{.step_size = 2, .gamma = 0.5});
    for (int e = 0; e < 10; ++e) {
      if (e == 3) add_group(*opt, 0.5);
      if (e == 6) add_group(*opt, 0.05);
      auto lrs = group_lrs(*opt);
      for (std::size_t g = 0; g < lrs.size(); ++g)
        if (g < 2 || (g == 2 && e > 3) || (g == 3 && e > 6))
          CHECK(lrs[g] == Approx(expected.at("step")[e][g]).epsilon(1e-9));
      sched.step();
    }
  }
}

TEST_CASE("lambda_lr: a group past per_group follows .factor, and without it the step is refused") {
  auto out = run_python(std::string(python_prelude) + R"(
run("lambda", [0.1, 0.01, 0.5], lambda o: L.LambdaLR(o, [lambda e: 0.9 ** e, lambda e: e // 2 + 1, lambda e: 0.5 ** e]), 8)
)");
  auto expected = parse_traces(out, "lr").at("lambda");
  auto f0 = [](std::int64_t e) { return std::pow(0.9, double(e)); };
  auto f1 = [](std::int64_t e) { return double(e / 2 + 1); };
  auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
  graft::lr_scheduler sched(
      *opt, graft::lambda_lr{.factor = [](std::int64_t e) { return std::pow(0.5, double(e)); }, .per_group = {f0, f1}});
  for (int e = 0; e < 8; ++e) {
    if (e == 2) add_group(*opt, 0.5);
    auto lrs = group_lrs(*opt);
    for (std::size_t g = 0; g < lrs.size(); ++g)
      if (g < 2 || e > 2) CHECK(lrs[g] == Approx(expected[e][g]).epsilon(1e-9));
    sched.step();
  }

  auto strict_opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
  graft::lr_scheduler strict(*strict_opt, graft::lambda_lr{.per_group = {f0, f1}});
  strict.step();
  add_group(*strict_opt, 0.5);
  CHECK(message_of([&] { strict.step(); }) ==
        "[graft.option] lambda_lr.per_group has 2 functions but the optimizer has 3 param groups "
        "(set .factor for groups beyond the list)");
  CHECK(strict.epoch() == 1);
  CHECK(strict.base_lrs().size() == 2);
}

TEST_CASE("a resumed scheduler continues exactly like an uninterrupted one") {
  auto schedule = graft::warmup(graft::linear_warmup{.start_factor = 0.2, .steps = 3},
                                graft::cosine_annealing{.t_max = 12, .eta_min = 1e-4});
  // Uninterrupted run, one group added at epoch 4.
  auto reference = make_optimizer(opt_kind::sgd, {0.1, 0.01});
  graft::lr_scheduler ref(*reference, schedule);
  std::vector<std::vector<double>> expected;
  for (int e = 0; e < 16; ++e) {
    if (e == 4) add_group(*reference, 0.3);
    expected.push_back(group_lrs(*reference));
    ref.step();
  }

  SECTION("through an archive, into a fresh optimizer with the original lrs") {
    auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
    graft::lr_scheduler first(*opt, schedule);
    for (int e = 0; e < 7; ++e) {
      if (e == 4) add_group(*opt, 0.3);
      first.step();
    }
    torch::serialize::OutputArchive out;
    first.save(out);
    scratch_dir dir;
    out.save_to(dir.file("sched.pt"));

    auto resumed_opt = make_optimizer(opt_kind::sgd, {0.1, 0.01, 0.3});
    graft::lr_scheduler resumed(*resumed_opt, schedule);
    torch::serialize::InputArchive in;
    in.load_from(dir.file("sched.pt"));
    resumed.load(in);
    CHECK(resumed.epoch() == 7);
    CHECK(resumed.base_lrs() == std::vector<double>{0.1, 0.01, 0.3});
    for (int e = 7; e < 16; ++e) {
      INFO("epoch " << e);
      CHECK(group_lrs(*resumed_opt) == expected[e]); // bit-for-bit
      resumed.step();
    }
  }

  SECTION("with torch::save / torch::load, into an optimizer already at the scheduled lrs") {
    auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
    graft::lr_scheduler first(*opt, schedule);
    for (int e = 0; e < 9; ++e) {
      if (e == 4) add_group(*opt, 0.3);
      first.step();
    }
    scratch_dir dir;
    torch::save(first, dir.file("sched.pt"));
    // As if the optimizer's state (and so its current lrs) had been restored too.
    auto resumed_opt = make_optimizer(opt_kind::sgd, group_lrs(*opt));
    graft::lr_scheduler resumed(*resumed_opt, schedule);
    torch::load(resumed, dir.file("sched.pt"));
    for (int e = 9; e < 16; ++e) {
      CHECK(group_lrs(*resumed_opt) == expected[e]);
      resumed.step();
    }
  }

  SECTION("loading another schedule or into fewer groups is refused, leaving the scheduler as it was") {
    torch::serialize::OutputArchive out;
    ref.save(out);
    scratch_dir dir;
    out.save_to(dir.file("sched.pt"));
    torch::serialize::InputArchive in;
    in.load_from(dir.file("sched.pt"));

    auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
    graft::lr_scheduler other(*opt, graft::step_lr{.step_size = 1});
    CHECK_THROWS_AS(other.load(in), graft::state_error);
    CHECK(message_of([&] { other.load(in); }) ==
          "[graft.state] lr_scheduler.load: the archive holds a 'warmup(cosine_annealing)' schedule, "
          "this scheduler runs 'step_lr'");

    graft::lr_scheduler same(*opt, schedule);
    CHECK(message_of([&] { same.load(in); }) ==
          "[graft.state] lr_scheduler: the optimizer has 2 param groups, fewer than the 3 the "
          "scheduler drives");
    CHECK(same.epoch() == 0);
    CHECK(same.base_lrs() == std::vector<double>{0.1, 0.01});

    torch::serialize::OutputArchive empty;
    empty.save_to(dir.file("empty.pt"));
    torch::serialize::InputArchive none;
    none.load_from(dir.file("empty.pt"));
    CHECK_THROWS_AS(same.load(none), graft::key_error);
  }
}

TEST_CASE("the scheduler drives any libtorch optimizer through get_lr/set_lr") {
  for (auto kind : {opt_kind::sgd, opt_kind::adam, opt_kind::adamw, opt_kind::rmsprop, opt_kind::adagrad}) {
    auto opt = make_optimizer(kind, {0.1, 0.01});
    graft::lr_scheduler sched(*opt, graft::exponential_lr{.gamma = 0.5});
    sched.step();
    sched.step();
    CHECK(group_lrs(*opt) == std::vector<double>{0.1 * 0.25, 0.01 * 0.25});
    CHECK(sched.lrs_at(0) == std::vector<double>{0.1, 0.01});
  }
  // LBFGS keeps its lr in LBFGSOptions, reached the same way.
  auto p = torch::zeros({1}, torch::requires_grad());
  torch::optim::LBFGS lbfgs({p}, torch::optim::LBFGSOptions(1.0));
  graft::lr_scheduler sched(lbfgs, graft::step_lr{.step_size = 1, .gamma = 0.5});
  sched.step();
  CHECK(lbfgs.param_groups()[0].options().get_lr() == 0.5);
}

TEST_CASE("invalid settings throw option_error naming the setting and the value") {
  auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
  auto msg = [&](auto schedule) { return message_of([&] { graft::lr_scheduler s(*opt, schedule); }); };
  CHECK(msg(graft::cosine_annealing{.t_max = 0}) == "[graft.option] cosine_annealing.t_max must be >= 1, got 0");
  CHECK(msg(graft::cosine_annealing{.t_max = 5, .eta_min = -1}) ==
        "[graft.option] cosine_annealing.eta_min must be >= 0, got -1");
  CHECK(msg(graft::step_lr{}) == "[graft.option] step_lr.step_size must be >= 1, got 0");
  CHECK(msg(graft::step_lr{.step_size = 2, .gamma = 0}) == "[graft.option] step_lr.gamma must be > 0, got 0");
  CHECK(msg(graft::multi_step_lr{.milestones = {3}, .gamma = -0.5}) ==
        "[graft.option] multi_step_lr.gamma must be > 0, got -0.5");
  CHECK(msg(graft::exponential_lr{}) == "[graft.option] exponential_lr.gamma must be > 0, got 0");
  CHECK(msg(graft::constant_lr{.factor = 1.5}) == "[graft.option] constant_lr.factor must be in (0, 1], got 1.5");
  CHECK(msg(graft::linear_lr{.start_factor = 0}) == "[graft.option] linear_lr.start_factor must be in (0, 1], got 0");
  CHECK(msg(graft::linear_lr{.total_iters = 0}) == "[graft.option] linear_lr.total_iters must be >= 1, got 0");
  CHECK(msg(graft::warmup(graft::linear_warmup{.steps = 0}, graft::step_lr{.step_size = 1})) ==
        "[graft.option] linear_warmup.steps must be >= 1, got 0");
  CHECK(msg(graft::lambda_lr{}) == "[graft.option] lambda_lr needs .factor or .per_group, got neither");
  CHECK(msg(graft::lambda_lr{.per_group = {[](std::int64_t) { return 1.0; }}}) ==
        "[graft.option] lambda_lr.per_group has 1 functions but the optimizer has 2 param groups "
        "(set .factor for groups beyond the list)");
  CHECK(msg(graft::one_cycle{}) == "[graft.option] one_cycle.total_steps must be >= 1, got 0");
  CHECK(msg(graft::one_cycle{.total_steps = 10, .pct_start = 1.5}) ==
        "[graft.option] one_cycle.pct_start must be in [0, 1], got 1.5");
  CHECK(msg(graft::one_cycle{.total_steps = 10, .max_lr = {0.1, 0.2, 0.3}}) ==
        "[graft.option] one_cycle.max_lr has 3 values but the optimizer has 2 param groups");
  auto adagrad = make_optimizer(opt_kind::adagrad, {0.1});
  CHECK(message_of([&] { graft::lr_scheduler s(*adagrad, graft::one_cycle{.total_steps = 10}); }) ==
        "[graft.option] one_cycle.cycle_momentum needs an optimizer with momentum or betas (SGD, "
        "RMSprop, Adam, AdamW), but param group 0 has neither; set .cycle_momentum = false");
  // A failed attach leaves the optimizer alone.
  CHECK(group_lrs(*adagrad) == std::vector<double>{0.1});
}

TEST_CASE("one_cycle refuses what OneCycleLR fails on: stepping past total_steps, empty phases") {
  auto out = run_python(std::string(python_prelude) + R"(
o = make_opt([0.1, 0.01], "sgd")
s = L.OneCycleLR(o, max_lr=0.1, total_steps=4)
for i in range(4):
    s.step()
try:
    s.step()
except ValueError as e:
    print("past_total", e)
try:
    L.OneCycleLR(make_opt([0.1], "sgd"), max_lr=0.1, total_steps=10, pct_start=0.1)
except ZeroDivisionError as e:
    print("empty_phase", type(e).__name__)
)");
  // PyTorch counts the failed step differently across releases (1.13: "6 times", 2.x: "5").
  CHECK_THAT(out, Catch::Matches("[\\s\\S]*past_total Tried to step [56] times[\\s\\S]*"));
  CHECK_THAT(out, Catch::Contains("empty_phase ZeroDivisionError"));

  auto opt = make_optimizer(opt_kind::sgd, {0.1, 0.01});
  graft::lr_scheduler sched(*opt, graft::one_cycle{.total_steps = 4, .max_lr = {0.1}});
  for (int i = 0; i < 4; ++i) sched.step();
  auto before = group_lrs(*opt);
  CHECK(message_of([&] { sched.step(); }) ==
        "[graft.option] one_cycle.total_steps = 4 exceeded: cannot step to 5 (PyTorch raises here too)");
  CHECK(sched.epoch() == 4); // unchanged, so the cycle's last lrs stay in place
  CHECK(group_lrs(*opt) == before);

  CHECK(message_of([&] {
          graft::lr_scheduler s(*opt, graft::one_cycle{.total_steps = 10, .pct_start = 0.1});
        }) == "[graft.option] one_cycle.total_steps = 10 is too small for pct_start = 0.1: phase 1 has no steps");
}

TEST_CASE("sync() takes up a new group at the current epoch without advancing", "[schedules]") {
  auto a = torch::zeros({1}, torch::requires_grad());
  auto b = torch::zeros({1}, torch::requires_grad());
  torch::optim::SGD opt(std::vector<torch::Tensor>{a}, torch::optim::SGDOptions(0.1));
  graft::lr_scheduler sched(opt, graft::cosine_annealing{.t_max = 10});
  sched.step();
  sched.step();
  auto epoch2 = sched.last_lrs();
  opt.add_param_group(torch::optim::OptimizerParamGroup({b}, std::make_unique<torch::optim::SGDOptions>(0.01)));
  sched.sync();
  CHECK(sched.epoch() == 2);
  REQUIRE(sched.last_lrs().size() == 2);
  CHECK(sched.last_lrs()[0] == epoch2[0]);
  CHECK(sched.base_lrs()[1] == 0.01);
  // The new group has exactly the ratio of its base lr to the first group's.
  CHECK(opt.param_groups()[1].options().get_lr() == Approx(epoch2[0] * 0.1).epsilon(1e-12));
}
