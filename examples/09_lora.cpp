// Tutorial 9: LoRA adapters, next to full fine-tuning, on tutorial 5's Fashion-MNIST story.
//
// A shop's model sorts catalogue photos into 5 categories; the catalogue grows to 10, with a
// few labelled images per new category. Tutorial 5 fine-tuned the whole model. Here the old
// model stays as it is, and the shop trains and ships only a small adapter:
//
//   1. Pretrain the 5-class CNN on classes 0-4 (as in tutorial 5).
//   2. Fine-tune a 10-class copy two ways, from the same start, with the same batches:
//        full fine-tuning    every parameter trains
//        LoRA                rank-4 adapters beside the three convolutions; the grown head
//                            (5 -> 10 classes) trains fully as a "module to save"; all else,
//                            BatchNorm statistics included, stays frozen
//   3. Compare accuracy, trainable parameters, optimizer state and what each must ship.
//   4. Ship the adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors),
//      load it onto a fresh copy of the old model, and merge it for inference.
//   5. Two of PEFT's newer methods: DoRA with LoRA+ learning rates; and two adapters, trained
//      by two teams on different images, combined into one folder (PEFT's add_weighted_adapter).
//
// Data: Debian's dataset-fashion-mnist package (see support/fashion_mnist.hpp).
// Run with --help for the options; --quick is the reduced configuration ctest runs.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/graft.hpp>

#include "fashion_mnist.hpp"
#include "tutorial.hpp"

using namespace graft::literals;
using tutorial::default_threads;
using tutorial::indented;
using tutorial::percent;

namespace {

// Tutorial 5's model: backbone.{0,1,2}.{conv,bn} and the head fc (support/tutorial.hpp).
using tutorial::Net;

// One pass over (x, y) in shuffled mini-batches. `before_forward` runs before every forward:
// for LoRA it is adapters.refresh(), which recomputes each wrapped layer's weight from the
// base and the adapter as they are after the last optimizer step.
template <class F>
double train_epoch(Net& net, torch::optim::Optimizer& opt, const torch::Tensor& x, const torch::Tensor& y, std::int64_t batch,
                   F&& before_forward) {
  graft::train(*net);  // keeps layers whose statistics are frozen in eval mode
  auto order = torch::randperm(x.size(0));
  double loss_sum = 0;
  for (std::int64_t b = 0; b < x.size(0); b += batch) {
    auto idx = order.slice(0, b, std::min(x.size(0), b + batch));
    before_forward();
    auto loss = torch::nn::functional::cross_entropy(net->forward(x.index_select(0, idx)), y.index_select(0, idx));
    opt.zero_grad();
    loss.backward();
    opt.step();
    loss_sum += loss.item<double>() * double(idx.size(0));
  }
  return loss_sum / double(x.size(0));
}

// Bytes of the optimizer's state (SGD's momentum buffers): what training holds beside the model.
std::int64_t state_bytes(const torch::optim::Optimizer& opt) {
  std::int64_t n = 0;
  for (auto& [key, state] : opt.state())
    if (auto* s = dynamic_cast<const torch::optim::SGDParamState*>(state.get()); s && s->momentum_buffer().defined())
      n += s->momentum_buffer().numel() * s->momentum_buffer().element_size();
  return n;
}

struct options {
  std::string data = std::string(fashion_mnist::default_dir);
  std::string out = (std::filesystem::temp_directory_path() / "graft_tutorial_09").string();
  std::uint64_t seed = 1;
  int pretrain_epochs = 2;
  int shots = 10;
  int epochs = 60;
  std::int64_t rank = 4;
  int threads = default_threads();
  bool quick = false;
};

} // namespace

int main(int argc, char** argv) try {
  options o;
  CLI::App app{"graft tutorial 9: LoRA adapters next to full fine-tuning, shipped as a PEFT adapter folder"};
  app.add_option("--data", o.data, "directory holding the Fashion-MNIST IDX files")->capture_default_str();
  app.add_option("--out", o.out, "directory for the checkpoint and the adapter folder")->capture_default_str();
  app.add_option("--seed", o.seed, "random seed: the same seed gives the same run")->capture_default_str();
  auto* pe = app.add_option("--pretrain-epochs", o.pretrain_epochs, "epochs of pretraining on classes 0-4")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--shots", o.shots, "labelled training images per class for fine-tuning")->check(CLI::PositiveNumber)->capture_default_str();
  auto* ep = app.add_option("--epochs", o.epochs, "epochs of each fine-tuning run")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--rank", o.rank, "LoRA rank")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", o.threads, "intra-op threads for libtorch (default: OMP_NUM_THREADS, else 2)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--quick", o.quick, "the reduced configuration ctest runs (1 pretraining epoch, 30 fine-tuning epochs)");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {
    if (pe->count() == 0) o.pretrain_epochs = 1;
    if (ep->count() == 0) o.epochs = 30;
  }
  torch::set_num_threads(o.threads);
  torch::manual_seed(o.seed);
  std::filesystem::create_directories(o.out);
  const auto path = [&](const char* name) { return (std::filesystem::path(o.out) / name).string(); };

  auto data = fashion_mnist::load(o.data);
  auto test_x = fashion_mnist::normalize(data.test.images);
  auto test_y = data.test.labels;

  // 1. The old model, as in tutorial 5.
  auto five = fashion_mnist::classes(data.train, 0, 4);
  auto five_x = fashion_mnist::normalize(five.images);
  Net old_model(5);
  {
    torch::optim::SGD opt(old_model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
    for (int e = 1; e <= o.pretrain_epochs; ++e) train_epoch(old_model, opt, five_x, five.labels, 64, [] {});
  }
  auto test5 = fashion_mnist::classes(data.test, 0, 4);
  fmt::print("1. pretrained the 5-class model: test accuracy on classes 0-4 {:.1f}%\n",
             percent(tutorial::predict(*old_model, fashion_mnist::normalize(test5.images)).eq(test5.labels)));

  // 2. Two 10-class models from the same start: the old model's weights, the head grown from
  //    5 to 10 rows (tutorial 5's `.adapt`), the same seed for the new rows and the batches.
  auto few = fashion_mnist::few_shot(data.train, o.shots);
  auto few_x = fashion_mnist::normalize(few.images);
  const auto start = [&] {
    torch::manual_seed(o.seed + 1);
    Net net(10);
    (void)(graft::from(*old_model) | graft::merge(*net, {.adapt = graft::allow("fc.*"_glob)}));
    return net;
  };
  auto sgd = [](double lr) { return torch::optim::SGDOptions(lr).momentum(0.9); };
  fmt::print("\n2. fine-tune on {} labelled images per class, {} epochs each\n", o.shots, o.epochs);

  struct result {
    std::string name;
    graft::parameter_counts params;
    std::int64_t optimizer_bytes = 0;
    double accuracy = 0;
  };
  std::vector<result> results;
  const auto run = [&](const std::string& name, Net& net, torch::optim::Optimizer& opt, auto before_forward) {
    torch::manual_seed(o.seed + 2);
    double loss = 0;
    for (int e = 1; e <= o.epochs; ++e) loss = train_epoch(net, opt, few_x, few.labels, 25, before_forward);
    before_forward();
    results.push_back({name, graft::count_parameters(*net), state_bytes(opt), percent(tutorial::predict(*net, test_x).eq(test_y))});
    fmt::print("   {}: final loss {:.4f}, test accuracy {:.1f}%\n", name, loss, results.back().accuracy);
  };

  Net full = start();
  {
    torch::optim::SGD opt(full->parameters(), sgd(0.01));
    run("full fine-tuning", full, opt, [] {});
  }
  graft::save(graft::state_dict(*full), path("full.safetensors"));

  // LoRA: adapters beside every convolution of the backbone, the head trained whole. attach()
  // freezes everything else and says what it did.
  Net net = start();
  auto adapters = graft::lora::attach(*net, "backbone.**"_glob & graft::lora::wrappable,
                                      {.r = o.rank, .alpha = 2.0 * double(o.rank)}, "fc.**"_glob);
  fmt::print("{}\n", indented(fmt::format("{}", adapters.report())));
  // The frozen backbone's BatchNorm layers keep their statistics too (as in tutorial 5's
  // frozen-backbone run): 100 images are too few to re-estimate them.
  graft::freeze_norm_stats(*net, graft::norm_layers);
  // The adapters and the head in two groups: the head learns from scratch at 10x.
  auto groups = graft::param_groups(*net)
                    .group("adapters", "**.lora_{A,B}.weight"_glob)
                    .group("head", "fc.**"_glob, {.lr_scale = 10})
                    .build(sgd(0.01));
  auto opt = groups.make_optimizer<torch::optim::SGD>();
  run("LoRA", net, opt, [&] { adapters.refresh(); });
  const result lora = results.back();

  // 3. What each costs.
  graft::lora::save(adapters, path("adapter"), {.base_model_name_or_path = "graft tutorial 9 5-class model"});
  auto adapter_bytes = std::filesystem::file_size(path("adapter/adapter_model.safetensors"));
  auto full_bytes = std::filesystem::file_size(path("full.safetensors"));
  fmt::print("\n3. results on {} test images\n", test_y.size(0));
  fmt::print("   {:<18} {:>9} {:>22} {:>16} {:>14}\n", "run", "accuracy", "trainable parameters", "optimizer state", "ships");
  for (auto& r : results) {
    bool lora = r.name == "LoRA";
    fmt::print("   {:<18} {:>8.1f}% {:>12} of {:>6} {:>10} bytes {:>8} bytes\n", r.name, r.accuracy, r.params.trainable_elements,
               r.params.elements, r.optimizer_bytes, lora ? adapter_bytes : full_bytes);
  }

  // 4. Ship the adapter: a fresh copy of the old model (grown to 10 classes) takes it from the
  //    folder, PEFT's format, and predicts as the trained model does. merge() then folds the
  //    adapters into the convolutions' weights: inference costs what the plain model costs.
  Net shipped = start();
  auto loaded = graft::lora::load(*shipped, path("adapter"));
  auto trained_predictions = tutorial::predict(*net, test_x);
  auto shipped_predictions = tutorial::predict(*shipped, test_x);
  loaded.merge();
  auto merged_predictions = tutorial::predict(*shipped, test_x);
  auto same = shipped_predictions.eq(trained_predictions).sum().item<std::int64_t>();
  auto same_merged = merged_predictions.eq(trained_predictions).sum().item<std::int64_t>();
  fmt::print("\n4. the adapter folder {} loaded onto a fresh model: {} of {} predictions equal the trained model's; "
             "merged: {} of {}\n",
             path("adapter"), same, test_y.size(0), same_merged, test_y.size(0));

  // 5a. DoRA (a magnitude vector per output channel beside each adapter) with LoRA+ param
  //     groups: lora_B at 4x lora_A's learning rate, as PEFT's create_loraplus_optimizer.
  fmt::print("\n5. DoRA with LoRA+, and two adapters combined\n");
  Net dora_net = start();
  auto dora = graft::lora::attach(*dora_net, "backbone.**"_glob & graft::lora::wrappable,
                                  {.r = o.rank, .alpha = 2.0 * double(o.rank), .dora = true}, "fc.**"_glob);
  graft::freeze_norm_stats(*dora_net, graft::norm_layers);
  auto plus = graft::lora::loraplus_param_groups(*dora_net, sgd(0.01), {.lr_ratio = 4});
  auto dora_opt = plus.make_optimizer<torch::optim::SGD>();
  run("DoRA + LoRA+", dora_net, dora_opt, [&] { dora.refresh(); });
  graft::lora::save(dora, path("dora_adapter"));
  fmt::print("   its {} trainable elements include {} magnitudes; the folder ({} bytes) loads in PEFT as use_dora\n",
             results.back().params.trainable_elements, dora.report().adapter_elements - adapters.report().adapter_elements,
             std::filesystem::file_size(path("dora_adapter/adapter_model.safetensors")));

  // 5b. Two teams each label half of the images and train an adapter from the same start,
  //     this time on the head too (a LoRA on fc, no module to save: adapters combine only
  //     their factors). combine_adapters makes one folder of both, as PEFT's
  //     add_weighted_adapter; `cat` stacks the factors, so the combined adapter adds exactly
  //     half of each team's weight change.
  const auto half = few_x.size(0) / 2;
  std::vector<std::string> team_folders;
  for (int team = 0; team < 2; ++team) {
    Net team_net = start();
    auto team_adapters = graft::lora::attach(*team_net, ("backbone.**"_glob | "fc.weight"_glob) & graft::lora::wrappable,
                                             {.r = o.rank, .alpha = 2.0 * double(o.rank)});
    graft::freeze_norm_stats(*team_net, graft::norm_layers);
    torch::optim::SGD team_opt(team_adapters.parameters(), sgd(0.02));
    torch::manual_seed(o.seed + 3 + team);
    auto images = few_x.slice(0, team * half, (team + 1) * half), labels = few.labels.slice(0, team * half, (team + 1) * half);
    for (int e = 1; e <= o.epochs; ++e) train_epoch(team_net, team_opt, images, labels, 25, [&] { team_adapters.refresh(); });
    team_adapters.refresh();
    fmt::print("   team {} ({} images): test accuracy {:.1f}%\n", team + 1, images.size(0),
               percent(tutorial::predict(*team_net, test_x).eq(test_y)));
    team_folders.push_back(path(team == 0 ? "team1" : "team2"));
    graft::lora::save(team_adapters, team_folders.back());
  }
  auto combined = graft::lora::combine_adapters(team_folders, {0.5, 0.5}, path("teams"),
                                                {.combination = graft::lora::adapter_combination::cat});
  Net both = start();
  auto both_adapters = graft::lora::load(*both, path("teams"));
  fmt::print("   combined ({}, rank {} on {} layers): test accuracy {:.1f}%\n", graft::lora::to_string(combined.combination),
             combined.r, combined.layers.size(), percent(tutorial::predict(*both, test_x).eq(test_y)));
  // The combined adapter's weight change is the mean of the teams' changes.
  double worst = 0;
  {
    std::vector<graft::state_dict> merged;
    for (const auto& folder : team_folders) {
      auto sd = graft::state_dict(*start());
      graft::lora::merge_into(sd, folder);
      merged.push_back(std::move(sd));
    }
    both_adapters.merge_and_unload();
    auto start_sd = graft::state_dict(*start());
    for (const auto& e : graft::state_dict(*both)) {
      auto mean_change = (merged[0].at(e.key) - start_sd.at(e.key) + merged[1].at(e.key) - start_sd.at(e.key)) * 0.5;
      worst = std::max(worst, (e.tensor - start_sd.at(e.key) - mean_change).abs().max().item<double>());
    }
  }

  // The claims, checked on this run's numbers: LoRA trains a small part of the model, ships a
  // small file, and the shipped adapter reproduces the trained model; the combined adapter is
  // the teams' mean.
  bool small = lora.params.trainable_elements * 3 < lora.params.elements && adapter_bytes * 3 < full_bytes;
  bool reproduced = same == test_y.size(0) && same_merged >= test_y.size(0) - 2;
  fmt::print("\ncheck: LoRA trains under a third of the parameters and ships under a third of the bytes: {}\n", small ? "yes" : "no");
  fmt::print("check: the shipped adapter reproduces the trained model's predictions: {}\n", reproduced ? "yes" : "no");
  bool mean = worst <= 1e-5;
  fmt::print("check: the combined adapter changes the weights by the mean of the teams' changes: {}\n", mean ? "yes" : "no");
  return small && reproduced && mean ? 0 : 1;
} catch (const fashion_mnist::data_error& e) {
  fmt::print(stderr, "error: {}\n(--data DIR reads the files from another directory)\n", e.what());
  return 2;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 2;
}
