// Tutorial 10: fine-tune a model exported from Python with torch.jit.script.
//
// Most C++ users do not have their model as C++ code: they have a file Python wrote. Here
// Python (examples/10_export_cnn.py) pretrained tutorial 5's CNN on Fashion-MNIST classes 0-4
// and exported it with torch.jit.script. This program fine-tunes that file for all 10
// classes from 10 labelled images per class, with the same graft calls tutorial 5 uses on a
// C++ model, and saves the result as TorchScript for Python to run:
//
//   1. Load the file as a graft::script_module: a torch::nn::Module view of the jit module
//      holding its own tensors, so every graft call works on it.
//   2. Grow the head from 5 to 10 outputs, keeping the 5 trained rows (resize_linear).
//   3. Freeze the backbone's BatchNorm statistics; train the backbone at 1x and the head at
//      10x (named param groups) with a warm-up and cosine schedule.
//   4. Evaluate on the 10,000 test images, save the module, and write the accuracy beside it:
//      Python reloads the file and must find the same accuracy.
//
// Run with --help for the options; --quick is the reduced configuration ctest runs.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/graft.hpp>
#include <graft/script.hpp>

#include "fashion_mnist.hpp"
#include "tutorial.hpp"

using namespace graft::literals;
using tutorial::default_threads;
using tutorial::indented;
using tutorial::percent;

int main(int argc, char** argv) try {
  std::string model_path = "model_5class.pt", out_path = "tuned.pt", data = std::string(fashion_mnist::default_dir), head = "fc";
  std::int64_t classes = 10;
  int shots = 10, epochs = 60, threads = default_threads();
  std::uint64_t seed = 1;
  bool quick = false;
  CLI::App app{"graft tutorial 10: fine-tune a TorchScript classifier exported from Python"};
  app.add_option("--model", model_path, "TorchScript file of a classifier (torch.jit.script)")->capture_default_str();
  app.add_option("--head", head, "path of its final Linear layer")->capture_default_str();
  app.add_option("--classes", classes, "outputs of the fine-tuned head")->capture_default_str();
  app.add_option("--out", out_path, "where to save the fine-tuned module")->capture_default_str();
  app.add_option("--data", data, "directory holding the Fashion-MNIST IDX files")->capture_default_str();
  app.add_option("--shots", shots, "labelled training images per class")->check(CLI::PositiveNumber)->capture_default_str();
  auto* ep = app.add_option("--epochs", epochs, "fine-tuning epochs")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads (default: OMP_NUM_THREADS, else 2)")->capture_default_str();
  app.add_flag("--quick", quick, "the reduced configuration ctest runs (30 epochs)");
  CLI11_PARSE(app, argc, argv);
  if (quick && ep->count() == 0) epochs = 30;
  torch::set_num_threads(threads);
  torch::manual_seed(seed);

  // 1. The exported module, as a graft tree.
  auto net = graft::script_module::load(model_path);
  fmt::print("1. loaded {}: a TorchScript {} with {} parameter tensors\n", model_path, net->python_class(),
             graft::select(*net, "**"_glob).size());
  fmt::print("   {}\n", graft::count_parameters(*net));

  // 2. The head grows to `classes` outputs; its trained rows stay.
  net->resize_linear(head, classes);
  fmt::print("2. resized '{}' to {} outputs (the first rows kept)\n", head, classes);

  // 3. Frozen statistics, discriminative learning rates, warm-up then cosine.
  auto data_set = fashion_mnist::load(data);
  auto few = fashion_mnist::few_shot(data_set.train, shots);
  auto few_x = fashion_mnist::normalize(few.images);
  auto test_x = fashion_mnist::normalize(data_set.test.images);
  constexpr std::int64_t batch = 25;
  const std::int64_t steps = epochs * ((few.size() + batch - 1) / batch);

  fmt::print("3. {}\n", graft::freeze_norm_stats(*net, graft::norm_layers));
  auto sgd = torch::optim::SGDOptions(0.005).momentum(0.9).weight_decay(5e-4);
  auto head_glob = graft::glob(graft::runtime(head + ".**"));
  auto groups = graft::param_groups(*net).group("head", head_glob, {.lr_scale = 10}).rest("backbone").build(sgd);
  fmt::print("{}\n", indented(fmt::format("{}", groups)));
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  const std::int64_t warm = steps / 10;
  graft::lr_scheduler sched(opt, graft::warmup(graft::linear_warmup{.start_factor = 0.1, .steps = warm},
                                               graft::cosine_annealing{.t_max = steps - warm}));
  torch::manual_seed(seed + 2);
  for (int e = 1; e <= epochs; ++e) {
    graft::train(*net);  // the TorchScript BatchNorm layers stay in eval mode
    auto order = torch::randperm(few.size());
    double loss_sum = 0;
    for (std::int64_t b = 0; b < few.size(); b += batch) {
      auto idx = order.slice(0, b, std::min(few.size(), b + batch));
      auto loss = torch::nn::functional::cross_entropy(net->forward(few_x.index_select(0, idx)), few.labels.index_select(0, idx));
      opt.zero_grad();
      loss.backward();
      opt.step();
      sched.step();
      loss_sum += loss.item<double>() * double(idx.size(0));
    }
    if (e % std::max(1, epochs / 3) == 0) fmt::print("   epoch {:>3}/{}  loss {:.4f}\n", e, epochs, loss_sum / double(few.size()));
  }

  // 4. Evaluate, save, and leave the accuracy for Python to compare.
  auto accuracy = percent(tutorial::predict(*net, test_x).eq(data_set.test.labels));
  fmt::print("4. test accuracy on all {} classes: {:.2f}%\n", classes, accuracy);
  net->save(out_path);
  std::ofstream(out_path + ".accuracy") << fmt::format("{:.4f}\n", accuracy);
  fmt::print("   saved {} (TorchScript; Python's torch.jit.load runs it)\n", out_path);
  return 0;
} catch (const fashion_mnist::data_error& e) {
  fmt::print(stderr, "error: {}\n(--data DIR reads the files from another directory)\n", e.what());
  return 2;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 2;
}
