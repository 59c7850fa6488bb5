// save_training_state / load_training_state: a training process killed with SIGKILL at a random
// step and resumed from its last checkpoint ends bit for bit where an uninterrupted run ends
// (model, EMA, optimizer state, scale, lr); and a checkpoint that does not fit is refused
// before anything changes. The runs are this executable again, running the hidden test case
// "resume worker" in a child process.

#include <catch2/catch.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <graft/amp.hpp>
#include <graft/graft.hpp>
#include <graft/train.hpp>

#include "oracle.hpp"

extern char** environ;

namespace resume_test {

using namespace graft::literals;

constexpr std::int64_t steps = 60, steps_per_epoch = 10;

// A run with every part a checkpoint holds: dropout and random batches (the generator's state
// matters), BatchNorm statistics, a frozen backbone that gradual unfreezing opens at epoch 2,
// SGD with momentum in named groups, a step schedule, a gradient scaler, clipping, an EMA.
struct training_run {
  static torch::nn::Sequential make_model(std::int64_t classes) {
    torch::manual_seed(7);
    return torch::nn::Sequential(torch::nn::Linear(6, 16), torch::nn::BatchNorm1d(16), torch::nn::ReLU(),
                                 torch::nn::Dropout(0.25), torch::nn::Linear(16, 16), torch::nn::ReLU(),
                                 torch::nn::Linear(16, classes));
  }
  torch::nn::Sequential model;
  graft::named_param_groups groups;
  std::unique_ptr<torch::optim::SGD> opt;
  std::unique_ptr<graft::lr_scheduler> sched;
  graft::gradual_unfreezing unfreezing;
  graft::amp::grad_scaler scaler{{.init_scale = 256.0, .growth_interval = 7}};
  std::unique_ptr<graft::ema> average;

  explicit training_run(std::int64_t classes = 3) : model(make_model(classes)), unfreezing(*model) {
    graft::freeze(*model, "{0,1}.**"_glob);
    groups = graft::param_groups(*model)
                 .group("middle", "4.**"_glob)
                 .group("head", "6.**"_glob, {.lr_scale = 2})
                 .build(torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-4));
    opt = std::make_unique<torch::optim::SGD>(groups.make_optimizer<torch::optim::SGD>());
    sched = std::make_unique<graft::lr_scheduler>(*opt, graft::step_lr{.step_size = 2, .gamma = 0.5});
    unfreezing.at(2, "stem", "{0,1}.**"_glob, 0.1);
    average = std::make_unique<graft::ema>(*model, graft::ema_options{.decay = 0.9, .use_warmup = true});
  }
  graft::training_parts parts() {
    return {.model = model.ptr().get(),
            .optimizers = {opt.get()},
            .scheduler = sched.get(),
            .unfreezing = &unfreezing,
            .scaler = &scaler,
            .average = average.get()};
  }
  void step(std::int64_t s) {
    const std::int64_t epoch = s / steps_per_epoch;
    if (s % steps_per_epoch == 0) unfreezing.step(*opt, epoch);
    const auto x = torch::randn({8, 6});
    const auto y = torch::randint(3, {8});
    opt->zero_grad();
    scaler.scale(torch::nn::functional::cross_entropy(model->forward(x), y)).backward();
    scaler.unscale_(*opt);
    graft::clip_grad_norm(*model, 2.0);
    scaler.step(*opt);
    scaler.update();
    average->update(*model, s + 1);
    if ((s + 1) % steps_per_epoch == 0) sched->step();
  }
};

// Runs this executable's hidden "resume worker" in `dir`; returns its pid and stdout.
struct child {
  pid_t pid;
  FILE* out;
};
child start_worker(const std::string& dir, const std::string& mode) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, fds[0]);
  ::setenv("GRAFT_RESUME_DIR", dir.c_str(), 1);
  ::setenv("GRAFT_RESUME_MODE", mode.c_str(), 1);
  std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  std::vector<char*> argv = {exe.data(), const_cast<char*>("resume worker"), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  REQUIRE(rc == 0);
  return {pid, ::fdopen(fds[0], "r")};
}
int finish(child c) {
  char line[256];
  while (std::fgets(line, sizeof line, c.out)) {
  }
  std::fclose(c.out);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  return status;
}

// What the end of a run left: every tensor of the model, the EMA and the optimizer's state, and
// the scale and lrs, from the final checkpoint.
std::vector<std::pair<std::string, torch::Tensor>> final_state(const std::string& dir) {
  const auto sd = graft::state_dict::from_value(graft::read_value(dir + "/ckpt.pt"));
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& e : sd) out.emplace_back(e.key, e.tensor);
  for (const auto& [k, v] : sd.extras())
    if (v.is_float() || v.is_int()) out.emplace_back(k, torch::scalar_tensor(v.as_number(), torch::kFloat64));
  return out;
}

} // namespace resume_test

TEST_CASE("resume worker", "[.resume_worker]") {
  using namespace resume_test;
  const char* dir = std::getenv("GRAFT_RESUME_DIR");
  const char* mode = std::getenv("GRAFT_RESUME_MODE");
  REQUIRE((dir && mode));
  torch::set_num_threads(1);
  training_run run;
  const std::string ckpt = std::string(dir) + "/ckpt.pt";
  std::int64_t start = 0;
  if (std::string(mode) == "resume" && std::filesystem::exists(ckpt))
    start = graft::load_training_state(ckpt, run.parts()).step;
  std::cout << "start " << start << std::endl;
  for (std::int64_t s = start; s < steps; ++s) {
    run.step(s);
    graft::save_training_state(ckpt, run.parts(), {.step = s + 1, .epoch = (s + 1) / steps_per_epoch});
    std::cout << "step " << s + 1 << std::endl;
  }
}

TEST_CASE("a run killed with SIGKILL at a random step resumes to the same bits as a run never stopped") {
  using namespace resume_test;
  graft::test::scratch_dir whole, killed;
  REQUIRE(WEXITSTATUS(finish(start_worker(whole.path().string(), "fresh"))) == 0);

  const unsigned seed = std::random_device{}();
  std::mt19937 rng(seed);
  const int kill_at = std::uniform_int_distribution<int>(1, steps - 2)(rng);
  std::cout << "resume test: seed " << seed << ", SIGKILL after the line of step " << kill_at << std::endl;
  INFO("seed " << seed << ", killed after step " << kill_at);
  child c = start_worker(killed.path().string(), "fresh");
  char line[256];
  bool killed_it = false;
  while (std::fgets(line, sizeof line, c.out)) {
    if (std::string(line) == "step " + std::to_string(kill_at) + "\n") {
      ::kill(c.pid, SIGKILL);  // while it trains step kill_at + 1 or writes its checkpoint
      killed_it = true;
      break;
    }
  }
  const int status = finish(c);
  REQUIRE(killed_it);
  REQUIRE(WIFSIGNALED(status));
  // The checkpoint left is a whole one, of step kill_at or one after it.
  const auto left = graft::read_value(killed.file("ckpt.pt"));
  const auto at = left.as_dict().at("step").as_int();
  CHECK((at == kill_at || at == kill_at + 1));

  REQUIRE(WEXITSTATUS(finish(start_worker(killed.path().string(), "resume"))) == 0);
  const auto expected = final_state(whole.path().string());
  const auto got = final_state(killed.path().string());
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO(got[i].first);
    CHECK(got[i].first == expected[i].first);
    CHECK(torch::equal(got[i].second, expected[i].second));  // bit for bit
  }
}

TEST_CASE("load_training_state refuses a checkpoint that does not fit, before anything changes") {
  using namespace resume_test;
  graft::test::scratch_dir dir;
  training_run a;
  for (std::int64_t s = 0; s < 25; ++s) a.step(s);  // past the unfreezing at epoch 2
  graft::save_training_state(dir.file("a.pt"), a.parts(), {.step = 25, .epoch = 2});
  const auto message_of = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const graft::error& e) {
      return e.what();
    } catch (const graft::load_error& e) {
      return e.what();
    }
    return "(no graft::error)";
  };

  // A fresh run restores it: the stage's group comes back before the optimizer's state.
  training_run b;
  const auto progress = graft::load_training_state(dir.file("a.pt"), b.parts());
  CHECK(progress.step == 25);
  CHECK(progress.epoch == 2);
  CHECK(b.opt->param_groups().size() == 3);
  CHECK(b.sched->epoch() == 2);
  CHECK(b.unfreezing.applied_names() == std::vector<std::string>{"stem"});
  CHECK(b.scaler.get_scale() == a.scaler.get_scale());
  CHECK(torch::equal(b.model[4]->as<torch::nn::Linear>()->weight, a.model[4]->as<torch::nn::Linear>()->weight));

  // A run without the stage declared, and one whose head is wider: refused, nothing changed.
  struct snapshot {
    std::vector<torch::Tensor> params;
    std::size_t groups;
    bool stem_trains;
  };
  const auto snap = [](training_run& r) {
    snapshot s{{}, r.opt->param_groups().size(), r.model[0]->as<torch::nn::Linear>()->weight.requires_grad()};
    for (const auto& p : r.model->parameters()) s.params.push_back(p.detach().clone());
    return s;
  };
  const auto same = [](training_run& r, const snapshot& s) {
    if (r.opt->param_groups().size() != s.groups || !r.opt->state().empty()) return false;
    if (r.model[0]->as<torch::nn::Linear>()->weight.requires_grad() != s.stem_trains) return false;
    std::size_t i = 0;
    for (const auto& p : r.model->parameters())
      if (!torch::equal(p, s.params[i++])) return false;
    return r.sched->epoch() == 0;
  };

  training_run no_stage;
  no_stage.unfreezing = graft::gradual_unfreezing(*no_stage.model);
  const auto before = snap(no_stage);
  CHECK_THAT(message_of([&] { graft::load_training_state(dir.file("a.pt"), no_stage.parts()); }),
             Catch::Contains("stage 'stem', which is not declared") && Catch::Contains("a.pt"));
  CHECK(same(no_stage, before));

  training_run other_groups;
  other_groups.groups = graft::param_groups(*other_groups.model)
                            .group("all", "{4,6}.**"_glob)
                            .build(torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(1e-4));
  other_groups.opt = std::make_unique<torch::optim::SGD>(other_groups.groups.make_optimizer<torch::optim::SGD>());
  other_groups.sched = std::make_unique<graft::lr_scheduler>(*other_groups.opt, graft::step_lr{.step_size = 2, .gamma = 0.5});
  const auto before2 = snap(other_groups);
  CHECK_THAT(message_of([&] { graft::load_training_state(dir.file("a.pt"), other_groups.parts()); }),
             Catch::Contains("3 param groups, the optimizer 2"));
  CHECK(same(other_groups, before2));

  // A model that differs: merge's refusal, with its report.
  training_run wider(4);
  CHECK_THROWS_AS(graft::load_training_state(dir.file("a.pt"), wider.parts()), graft::load_error);
}

TEST_CASE("a run restored mid-epoch, after gradual unfreezing added a group, continues bit for bit") {
  using namespace resume_test;
  graft::test::scratch_dir dir;
  training_run a;
  for (std::int64_t s = 0; s < 25; ++s) a.step(s);  // the stem's group joined at step 20; the schedule takes it up at 30
  graft::save_training_state(dir.file("a.pt"), a.parts(), {.step = 25, .epoch = 2});
  for (std::int64_t s = 25; s < 40; ++s) a.step(s);
  training_run b;
  REQUIRE(graft::load_training_state(dir.file("a.pt"), b.parts()).step == 25);
  for (std::int64_t s = 25; s < 40; ++s) b.step(s);
  for (std::size_t g = 0; g < 3; ++g)
    CHECK(b.opt->param_groups()[g].options().get_lr() == a.opt->param_groups()[g].options().get_lr());
  const auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  for (const auto& item : pa) {
    INFO(item.key());
    CHECK(torch::equal(item.value(), pb[item.key()]));
  }
  for (const auto& e : a.average->state_dict()) CHECK(torch::equal(e.tensor, b.average->state_dict().at(e.key)));
}
