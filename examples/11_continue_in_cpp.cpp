// Tutorial 11: a training run started in Python, continued in C++, evaluated back in Python.
//
// examples/11_start_in_python.py trained tutorial 5's CNN for two epochs with bfloat16
// autocast, SGD in two param groups, a cosine schedule and timm's ModelEmaV3, and saved a
// training checkpoint: torch.save({"model", "optimizer", "lr_scheduler", "state_dict_ema",
// "rng", "step", "epoch"}). This program:
//
//   1. Restores that run with one call, graft::load_training_state: the weights, SGD's
//      momentum buffers and group settings, the schedule (checked against the lrs the Python
//      run had), the EMA weights and the random generator.
//   2. Continues it for the remaining epochs twice from the same checkpoint, in float32 and
//      with bfloat16 autocast (graft::amp::autocast), clipping each group's gradients with a
//      limit of its own and updating the EMA as timm does; it reports the test accuracy of the
//      weights and of their EMA, and the time per step, side by side.
//   3. Saves the bfloat16 run with graft::save_training_state, in the same layout: Python's
//      torch.load reads it, and the script's --check finds the accuracies printed here.
//
// Run with --help for the options; --quick is the reduced configuration ctest runs.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/amp.hpp>
#include <graft/graft.hpp>
#include <graft/train.hpp>

#include "fashion_mnist.hpp"
#include "tutorial.hpp"

using namespace graft::literals;
using tutorial::default_threads;
using tutorial::percent;

namespace {

constexpr std::int64_t batch = 64;

/// A run as the Python script built it: the CNN, SGD over (backbone, head), a per-step cosine
/// schedule over every epoch of the run, an EMA with timm's settings. Loading the checkpoint
/// then replaces what each part holds.
struct run {
  tutorial::Net net{10};
  graft::named_param_groups groups = graft::param_groups(*net)
                                         .group("backbone", "backbone.**"_glob)
                                         .group("head", "fc.**"_glob)
                                         .build(torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
  torch::optim::SGD opt = groups.make_optimizer<torch::optim::SGD>();
  graft::lr_scheduler sched;
  graft::ema average{*net, {.decay = 0.998, .use_warmup = true}};

  explicit run(std::int64_t total_steps) : sched(opt, graft::cosine_annealing{.t_max = total_steps}) {}
  graft::training_parts parts() {
    return {.model = net.ptr().get(), .optimizers = {&opt}, .scheduler = &sched, .average = &average};
  }
};

struct outcome {
  double accuracy, ema_accuracy, ms_per_step;
};

} // namespace

int main(int argc, char** argv) try {
  std::string from = "run.pt", out_path = "continued.pt", data = std::string(fashion_mnist::default_dir);
  std::int64_t images = 60000, epochs = 4;
  int threads = default_threads();
  bool quick = false;
  CLI::App app{"graft tutorial 11: continue in C++ a training run Python started"};
  app.add_option("--from", from, "the Python run's training checkpoint")->capture_default_str();
  app.add_option("--out", out_path, "where to save the continued run")->capture_default_str();
  app.add_option("--data", data, "directory holding the Fashion-MNIST IDX files")->capture_default_str();
  auto* im = app.add_option("--images", images, "training images (the Python run's)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--epochs", epochs, "epochs of the whole run (the Python run's --total-epochs)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads (default: OMP_NUM_THREADS, else 2)")->capture_default_str();
  app.add_flag("--quick", quick, "the reduced configuration ctest runs (6000 images)");
  CLI11_PARSE(app, argc, argv);
  if (quick && im->count() == 0) images = 6000;
  torch::set_num_threads(threads);

  auto data_set = fashion_mnist::load(data);
  const auto train_x = fashion_mnist::normalize(data_set.train.images.slice(0, 0, images));
  const auto train_y = data_set.train.labels.slice(0, 0, images);
  const auto test_x = fashion_mnist::normalize(data_set.test.images);
  const std::int64_t steps_per_epoch = (images + batch - 1) / batch;

  // 1. The Python run, restored. Every part is checked before any changes: a file from
  //    another model, other groups or another schedule is refused, naming what differs.
  graft::training_progress start;
  {
    run probe(epochs * steps_per_epoch);
    start = graft::load_training_state(from, probe.parts());
    fmt::print("1. restored {} (written by Python): step {}, epoch {} of {}\n", from, start.step, start.epoch, epochs);
    fmt::print("   lr: backbone {:.5f}, head {:.5f} (cosine_annealing at step {}, as the Python run had it)\n",
               probe.opt.param_groups()[0].options().get_lr(), probe.opt.param_groups()[1].options().get_lr(),
               probe.sched.epoch());
    const double accuracy = percent(tutorial::predict(*probe.net, test_x).eq(data_set.test.labels));
    auto in_use = probe.average.swap_into(*probe.net);
    fmt::print("   test accuracy as Python left it: {:.2f}%, EMA {:.2f}%\n", accuracy,
               percent(tutorial::predict(*probe.net, test_x).eq(data_set.test.labels)));
  }

  // 2. The remaining epochs, twice from the same checkpoint: float32, then bfloat16 autocast.
  auto continue_run = [&](run& r, bool bf16) {
    graft::load_training_state(from, r.parts());  // the random state too: both see the same batches
    double seconds = 0;
    std::int64_t steps = 0, step = start.step;
    for (std::int64_t e = start.epoch; e < epochs; ++e) {
      graft::train(*r.net);
      for (const auto& idx : torch::randperm(images).split(batch)) {
        const auto t0 = std::chrono::steady_clock::now();
        r.opt.zero_grad();
        torch::Tensor loss;
        {
          graft::amp::autocast scope(torch::kCPU, torch::kBFloat16, /*enabled=*/bf16);
          loss = torch::nn::functional::cross_entropy(r.net->forward(train_x.index_select(0, idx)), train_y.index_select(0, idx));
        }
        loss.backward();
        graft::clip_grad_norm(r.groups, {{"backbone", 5.0}, {"head", 1.0}});
        r.opt.step();
        r.sched.step();
        r.average.update(*r.net, ++step);
        seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        ++steps;
      }
    }
    outcome o{percent(tutorial::predict(*r.net, test_x).eq(data_set.test.labels)), 0, 1000 * seconds / double(steps)};
    {
      auto in_use = r.average.swap_into(*r.net);  // evaluate with the EMA weights, then put the model's back
      o.ema_accuracy = percent(tutorial::predict(*r.net, test_x).eq(data_set.test.labels));
    }
    return std::make_pair(o, step);
  };
  run f32(epochs * steps_per_epoch), bf16(epochs * steps_per_epoch);
  const auto [plain, plain_step] = continue_run(f32, false);
  const auto [mixed, last_step] = continue_run(bf16, true);
  fmt::print("2. continued epochs {}-{} in C++ ({} steps of {} images), clipping backbone at 5 and head at 1:\n",
             start.epoch + 1, epochs, last_step - start.step, batch);
  fmt::print("   {:<10}{:>10}{:>10}{:>10}\n", "precision", "accuracy", "EMA", "ms/step");
  fmt::print("   {:<10}{:>9.2f}%{:>9.2f}%{:>10.1f}\n", "float32", plain.accuracy, plain.ema_accuracy, plain.ms_per_step);
  fmt::print("   {:<10}{:>9.2f}%{:>9.2f}%{:>10.1f}\n", "bfloat16", mixed.accuracy, mixed.ema_accuracy, mixed.ms_per_step);
  fmt::print("   bfloat16 steps take {:.2f}x float32's on this CPU\n", mixed.ms_per_step / plain.ms_per_step);

  // 3. The bfloat16 run, saved for Python (and for a later resume, with load_training_state).
  graft::save_training_state(out_path, bf16.parts(), {.step = last_step, .epoch = epochs});
  std::ofstream(out_path + ".accuracy") << fmt::format("{:.4f} {:.4f}\n", mixed.accuracy, mixed.ema_accuracy);
  fmt::print("3. saved {} (graft::save_training_state): Python's torch.load reads it\n", out_path);
  return 0;
} catch (const fashion_mnist::data_error& e) {
  fmt::print(stderr, "error: {}\n(--data DIR reads the files from another directory)\n", e.what());
  return 2;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 2;
}
