// Tutorial 5: transfer learning on Fashion-MNIST.
//
// The story: a shop trained a model to sort its catalogue photos into 5 product categories
// (T-shirt/top, Trouser, Pullover, Dress, Coat). The catalogue grows to 10 categories, and
// for now only a handful of images per category are labelled. Rather than start over, reuse
// the old model: its convolutional backbone already knows edges, textures and shapes of
// clothing, and its head already knows 5 of the 10 classes.
//
//   1. Pretrain a small CNN (a `backbone` and an `fc` head) on classes 0-4, 30,000 labelled
//      images, and save it.
//   2. Build the 10-class model and fine-tune it on a few labels per class, four ways:
//        from scratch            no transfer: the baseline
//        frozen backbone         load the checkpoint, train only the head, BatchNorm
//                                statistics frozen too (a "fixed feature extractor")
//        full fine-tuning        load the checkpoint, train everything at one lr
//        discriminative lrs      load the checkpoint, train the head at 10x the backbone's lr
//      The transfer runs load the backbone through a state-dict pipeline and grow the head from
//      5 to 10 outputs, keeping the 5 trained rows and initializing the 5 new ones.
//   3. Evaluate on all 10,000 test images and compare.
//
// Data: Debian's dataset-fashion-mnist package (see support/fashion_mnist.hpp).
// Run with --help for the options; --quick is the reduced configuration ctest runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>  // isatty

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

// ---------------------------------------------------------------------------------------------
// The model, tutorial::Net (support/tutorial.hpp): three conv-BatchNorm-ReLU-pool blocks
// (backbone.0-2) and a Linear head (fc) over their 576 features.
using tutorial::Net;

// ---------------------------------------------------------------------------------------------
// Training and evaluation: plain libtorch.

// A one-line progress bar over mini-batches, redrawn in place; only when stdout is a terminal,
// so that logs and ctest's golden comparison see the per-epoch lines alone.
class progress_bar {
public:
  progress_bar(std::string label, std::int64_t total) : label_(std::move(label)), total_(total) {}
  ~progress_bar() {
    if (!on_terminal()) return;
    fmt::print("\r\033[K");  // erase the bar: the line printed next takes its place
    std::fflush(stdout);
  }
  void advance(double loss) {
    ++done_;
    if (!on_terminal()) return;
    constexpr std::int64_t width = 30;
    auto filled = width * done_ / total_;
    fmt::print("\r{} [{:=<{}}{:<{}}] {}/{}  loss {:.4f}", label_, "", filled, "", width - filled, done_, total_, loss);
    std::fflush(stdout);
  }
  static bool on_terminal() {
    static const bool tty = isatty(fileno(stdout));
    return tty;
  }

private:
  std::string label_;
  std::int64_t total_, done_ = 0;
};

struct epoch_stats {
  double loss = 0, accuracy = 0;
};

// One pass over (x, y) in shuffled mini-batches. `sched` is stepped after every batch: all the
// schedules below count batches.
epoch_stats train_epoch(Net& net, torch::optim::Optimizer& opt, graft::lr_scheduler& sched, const torch::Tensor& x,
                        const torch::Tensor& y, std::int64_t batch_size, progress_bar& bar) {
  // graft::train, not net->train(): it keeps layers whose statistics are frozen in eval mode.
  graft::train(*net);
  auto n = x.size(0);
  auto order = torch::randperm(n);
  auto batches = (n + batch_size - 1) / batch_size;
  double loss_sum = 0;
  std::int64_t correct = 0;
  for (std::int64_t b = 0; b < batches; ++b) {
    auto idx = order.slice(0, b * batch_size, std::min(n, (b + 1) * batch_size));
    auto xb = x.index_select(0, idx), yb = y.index_select(0, idx);
    opt.zero_grad();
    auto logits = net->forward(xb);
    auto loss = torch::nn::functional::cross_entropy(logits, yb);
    loss.backward();
    opt.step();
    sched.step();
    auto batch_loss = loss.item<double>();
    loss_sum += batch_loss * double(idx.size(0));
    correct += logits.argmax(1).eq(yb).sum().item<std::int64_t>();
    bar.advance(batch_loss);
  }
  return {loss_sum / double(n), 100.0 * double(correct) / double(n)};
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct options {
  std::string data = std::string(fashion_mnist::default_dir);
  // In the temporary directory, so that a run from the source tree leaves no file there.
  std::string checkpoint = (std::filesystem::temp_directory_path() / "graft_fashion_mnist_5class.pt").string();
  std::uint64_t seed = 1;
  int pretrain_epochs = 2;
  int shots = 10;
  int epochs = 60;
  int threads = default_threads();
  bool quick = false;
};

} // namespace

int main(int argc, char** argv) try {
  options o;
  CLI::App app{"graft tutorial 5: reuse a 5-class Fashion-MNIST model for 10 classes with few labels"};
  app.add_option("--data", o.data, "directory holding the Fashion-MNIST IDX files")->capture_default_str();
  app.add_option("--checkpoint", o.checkpoint, "where to save the pretrained 5-class model")->capture_default_str();
  app.add_option("--seed", o.seed, "random seed: the same seed gives the same run")->capture_default_str();
  auto* pe = app.add_option("--pretrain-epochs", o.pretrain_epochs, "epochs of pretraining on classes 0-4")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--shots", o.shots, "labelled training images per class for fine-tuning")->check(CLI::PositiveNumber)->capture_default_str();
  auto* ep = app.add_option("--epochs", o.epochs, "epochs of each fine-tuning run")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--threads", o.threads, "intra-op threads for libtorch (default: OMP_NUM_THREADS, else 2)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--quick", o.quick, "the reduced configuration ctest runs (1 pretraining epoch, 30 fine-tuning epochs)");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {
    if (pe->count() == 0) o.pretrain_epochs = 1;
    if (ep->count() == 0) o.epochs = 30;
  }

  const auto start = std::chrono::steady_clock::now();
  torch::set_num_threads(o.threads);
  torch::manual_seed(o.seed);

  auto data = fashion_mnist::load(o.data);
  fmt::print("Fashion-MNIST from {}: {} training and {} test images\n", o.data, data.train.size(), data.test.size());
  auto test_x = fashion_mnist::normalize(data.test.images);
  auto test_y = data.test.labels;
  auto old_classes = test_y < 5;  // test images of the first 5 categories, for per-part accuracies

  // ------------------------------------------------------------------------------------------
  // 1. The old model: 5 categories, plenty of labels.
  auto five = fashion_mnist::classes(data.train, 0, 4);
  auto five_x = fashion_mnist::normalize(five.images);
  fmt::print("\n1. pretrain a 5-class model on {} images of classes 0-4, {} epoch{}\n", five.size(), o.pretrain_epochs,
             o.pretrain_epochs == 1 ? "" : "s");
  {
    Net pretrained(5);
    constexpr std::int64_t batch = 64;
    auto batches = (five.size() + batch - 1) / batch;
    torch::optim::SGD opt(pretrained->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
    graft::lr_scheduler sched(opt, graft::one_cycle{.total_steps = batches * o.pretrain_epochs});
    auto test5 = fashion_mnist::classes(data.test, 0, 4);
    auto test5_x = fashion_mnist::normalize(test5.images);
    for (int e = 1; e <= o.pretrain_epochs; ++e) {
      auto t0 = std::chrono::steady_clock::now();
      epoch_stats s;
      {
        progress_bar bar(fmt::format("   epoch {}/{}", e, o.pretrain_epochs), batches);
        s = train_epoch(pretrained, opt, sched, five_x, five.labels, batch, bar);
      }
      auto secs = seconds_since(t0);
      auto acc = percent(tutorial::predict(*pretrained, test5_x).eq(test5.labels));
      fmt::print("   epoch {}/{}  loss {:.4f}  train accuracy {:.1f}%  test accuracy (classes 0-4) {:.1f}%  {:.1f} s\n", e,
                 o.pretrain_epochs, s.loss, s.accuracy, acc, secs);
      std::fflush(stdout);
    }
    // A libtorch archive of the module; any checkpoint graft can read would do.
    torch::save(pretrained, o.checkpoint);
    fmt::print("   saved the 5-class model to {}\n", o.checkpoint);
  }

  // ------------------------------------------------------------------------------------------
  // 2. The new task: 10 categories, a few labels each. Every run sees the same images in the
  //    same order and starts from the same initialization of the 10-class model.
  auto few = fashion_mnist::few_shot(data.train, o.shots);
  auto few_x = fashion_mnist::normalize(few.images);
  constexpr std::int64_t batch = 25;
  const std::int64_t steps = o.epochs * ((few.size() + batch - 1) / batch);
  fmt::print("\n2. fine-tune a 10-class model on {} labelled image{} per class ({} images), {} epoch{} per strategy\n",
             o.shots, o.shots == 1 ? "" : "s", few.size(), o.epochs, o.epochs == 1 ? "" : "s");

  // The old model, read back from its checkpoint.
  Net old_model(5);
  torch::load(old_model, o.checkpoint);

  // A fresh 10-class model, identical for every strategy.
  const auto fresh_model = [&] {
    torch::manual_seed(o.seed + 1);
    return Net(10);
  };
  // The transfer: copy the whole old model into the new one. The backbone's shapes match and
  // load as they are. fc.weight [5, 576] and fc.bias [5] do not fit fc's [10, 576] and [10];
  // `.adapt` copies their overlap, the 5 trained rows, and leaves rows 5-9 with the new
  // model's own initialization: the head grows from 5 to 10 classes and keeps what it knew.
  // Any other difference (a missing or renamed key) would refuse the load and leave `net` as it was.
  bool show_report = true;
  const auto load_pretrained = [&](Net& net) {
    auto report = graft::from(*old_model) | graft::merge(*net, {.adapt = graft::allow("fc.*"_glob)});
    if (show_report) fmt::print("{}\n", indented(fmt::format("{}", report)));
    show_report = false;
  };

  struct result {
    std::string strategy;
    graft::parameter_counts params;
    double seconds = 0, accuracy = 0, old_accuracy = 0, new_accuracy = 0;
  };
  std::vector<result> results;

  // Trains `net` for o.epochs with `opt` and `sched`, then measures it on the whole test set.
  const auto fine_tune = [&](const std::string& strategy, Net& net, torch::optim::Optimizer& opt, graft::lr_scheduler& sched) {
    fmt::print("   {}: {}, schedule {}\n", strategy, graft::count_parameters(*net), sched.schedule_name());
    torch::manual_seed(o.seed + 2);  // the same batch order for every strategy
    const int report_every = std::max(1, o.epochs / 5);
    auto t0 = std::chrono::steady_clock::now();
    {
      progress_bar bar("     " + strategy, steps);
      for (int e = 1; e <= o.epochs; ++e) {
        auto s = train_epoch(net, opt, sched, few_x, few.labels, batch, bar);
        if (e % report_every == 0) {
          if (progress_bar::on_terminal()) fmt::print("\r\033[K");
          fmt::print("     epoch {:>3}/{}  loss {:.4f}  train accuracy {:5.1f}%\n", e, o.epochs, s.loss, s.accuracy);
          std::fflush(stdout);
        }
      }
    }
    auto secs = seconds_since(t0);
    auto hits = tutorial::predict(*net, test_x).eq(test_y);
    results.push_back({strategy, graft::count_parameters(*net), secs, percent(hits), percent(hits.index({old_classes})),
                       percent(hits.index({~old_classes}))});
    fmt::print("     test accuracy {:.1f}%  ({:.1f} s)\n", results.back().accuracy, secs);
  };

  // Every strategy uses SGD with momentum; the schedules count batches.
  auto sgd = [](double lr) { return torch::optim::SGDOptions(lr).momentum(0.9).weight_decay(5e-4); };

  // a) From scratch: no checkpoint, every parameter trains; one-cycle schedule.
  {
    auto net = fresh_model();
    torch::optim::SGD opt(net->parameters(), sgd(0.05));
    graft::lr_scheduler sched(opt, graft::one_cycle{.total_steps = steps});
    fine_tune("from scratch", net, opt, sched);
  }

  // b) Frozen backbone: only the head trains. Freezing the weights is not enough: in training
  //    mode BatchNorm would still re-estimate its statistics from these 100 images, so freeze
  //    them too; graft::train (in train_epoch) keeps those layers in eval mode.
  {
    auto net = fresh_model();
    load_pretrained(net);
    fmt::print("   {}\n", graft::freeze(*net, !"fc.**"_glob));
    fmt::print("   {}\n", graft::freeze_norm_stats(*net, graft::of_type<torch::nn::BatchNorm2dImpl>));
    torch::optim::SGD opt(graft::trainable_parameters(*net), sgd(0.05));
    graft::lr_scheduler sched(opt, graft::one_cycle{.total_steps = steps});
    fine_tune("frozen backbone", net, opt, sched);
  }

  // c) Full fine-tuning: everything trains, at a lower peak lr than from scratch so that the
  //    pretrained features are adjusted rather than overwritten.
  {
    auto net = fresh_model();
    load_pretrained(net);
    torch::optim::SGD opt(net->parameters(), sgd(0.01));
    graft::lr_scheduler sched(opt, graft::one_cycle{.total_steps = steps});
    fine_tune("full fine-tuning", net, opt, sched);
  }

  // d) Discriminative learning rates: the backbone at the base lr, the head at 10x, from named
  //    param groups built with selectors; a linear warm-up then a cosine decay, which drives
  //    each group from its own base lr (the head stays at 10x throughout).
  {
    auto net = fresh_model();
    load_pretrained(net);
    auto groups = graft::param_groups(*net).group("head", "fc.**"_glob, {.lr_scale = 10}).rest("backbone").build(sgd(0.005));
    fmt::print("{}\n", indented(fmt::format("{}", groups)));
    auto opt = groups.make_optimizer<torch::optim::SGD>();
    // A tenth of the steps warms up (at least one: a run of a few steps warms up for all of them).
    const std::int64_t warm = std::max<std::int64_t>(1, steps / 10);
    graft::lr_scheduler sched(opt, graft::warmup(graft::linear_warmup{.start_factor = 0.1, .steps = warm},
                                                 graft::cosine_annealing{.t_max = std::max<std::int64_t>(1, steps - warm)}));
    fine_tune("discriminative lrs", net, opt, sched);
  }

  // ------------------------------------------------------------------------------------------
  // 3. The comparison, on all 10,000 test images (1,000 per class).
  fmt::print("\n3. results on {} test images ({} labelled training image{} per class)\n", test_y.size(0), o.shots,
             o.shots == 1 ? "" : "s");
  fmt::print("   {:<20} {:>22} {:>9} {:>12} {:>12} {:>9}\n", "strategy", "trainable parameters", "accuracy",
             "classes 0-4", "classes 5-9", "time");
  for (auto& r : results)
    fmt::print("   {:<20} {:>12} of {:>6} {:>8.1f}% {:>11.1f}% {:>11.1f}% {:>7.1f} s\n", r.strategy,
               r.params.trainable_elements, r.params.elements, r.accuracy, r.old_accuracy, r.new_accuracy, r.seconds);

  fmt::print("   whole run, with data loading and evaluation: {:.0f} s on {} thread{}\n", seconds_since(start), o.threads,
             o.threads == 1 ? "" : "s");

  // The claim this tutorial makes, checked on this run's own numbers.
  bool all_beat = true;
  for (std::size_t i = 1; i < results.size(); ++i) all_beat = all_beat && results[i].accuracy > results[0].accuracy;
  // (A run of a few steps may not bear it out: the tests check it on the --quick run.)
  fmt::print("\ncheck: every transfer strategy beats training from scratch: {}\n", all_beat ? "yes" : "no");
  return 0;
} catch (const fashion_mnist::data_error& e) {
  fmt::print(stderr, "error: {}\n(--data DIR reads the files from another directory)\n", e.what());
  return 2;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 2;
}
