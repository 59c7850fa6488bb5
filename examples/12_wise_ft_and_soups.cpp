// Tutorial 12: WiSE-FT and model soups on Fashion-MNIST.
//
// The story goes on from tutorial 5: the shop's 5-class model grows a 10-class head and is
// fine-tuned on a few labelled images per class. Fine-tuning on 100 images learns the new
// classes, and forgets some of what the old model knew. Two ways to keep both, with no
// further training and no cost at inference, by combining checkpoints in weight space:
//
//   1. Pretrain the 5-class model; grow its head to 10 classes: the "zero-shot" model, which
//      knows 5 classes and guesses the rest.
//   2. WiSE-FT: fine-tune it, then interpolate between the zero-shot and the fine-tuned
//      weights, (1 - alpha) * zero-shot + alpha * fine-tuned, for alpha in 0 ... 1; evaluate
//      each on the test set and on the same images "photographed differently" (shifted two
//      pixels and dimmed), and draw the curve.
//   3. Soups: fine-tune again with other seeds (batch orders) and average the fine-tunes, all
//      of them (a uniform soup) or greedily by accuracy on held-out images (a greedy soup),
//      against the best single fine-tune.
//
// Data: Debian's dataset-fashion-mnist package (see support/fashion_mnist.hpp). The curve is
// drawn with gnuplot (Debian's gnuplot-nox). Run with --help for the options; --quick is what
// ctest runs.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <graft/combine.hpp>
#include <graft/graft.hpp>

#include "fashion_mnist.hpp"
#include "tutorial.hpp"

using namespace graft::literals;
using tutorial::Net;
using tutorial::percent;

namespace {

// One pass over (x, y) in shuffled mini-batches of 25 (plain libtorch, as in tutorial 5).
void train_epoch(Net& net, torch::optim::Optimizer& opt, graft::lr_scheduler& sched, const torch::Tensor& x,
                 const torch::Tensor& y, std::int64_t batch) {
  graft::train(*net);
  auto n = x.size(0);
  auto order = torch::randperm(n);
  for (std::int64_t b = 0; b < n; b += batch) {
    auto idx = order.slice(0, b, std::min(n, b + batch));
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x.index_select(0, idx)), y.index_select(0, idx)).backward();
    opt.step();
    sched.step();
  }
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct options {
  std::string data = std::string(fashion_mnist::default_dir);
  std::uint64_t seed = 1;
  int pretrain_epochs = 2;
  int shots = 10;
  int epochs = 60;
  int soup = 4;
  std::int64_t test_images = 10000;
  int threads = tutorial::default_threads();
  bool quick = false;
};

} // namespace

int main(int argc, char** argv) try {
  options o;
  CLI::App app{"graft tutorial 12: WiSE-FT and model soups of Fashion-MNIST fine-tunes"};
  app.add_option("--data", o.data, "directory holding the Fashion-MNIST IDX files")->capture_default_str();
  app.add_option("--seed", o.seed, "random seed: the same seed gives the same run")->capture_default_str();
  auto* pe = app.add_option("--pretrain-epochs", o.pretrain_epochs, "epochs of pretraining on classes 0-4")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--shots", o.shots, "labelled training images per class for fine-tuning")->check(CLI::PositiveNumber)->capture_default_str();
  auto* ep = app.add_option("--epochs", o.epochs, "epochs of each fine-tuning run")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--soup", o.soup, "fine-tunes in the soups (different seeds)")->check(CLI::Range(2, 16))->capture_default_str();
  auto* ti = app.add_option("--test-images", o.test_images, "test images evaluated (the first N), of 10000")->check(CLI::Range(100, 10000))->capture_default_str();
  app.add_option("--threads", o.threads, "intra-op threads for libtorch (default: OMP_NUM_THREADS, else 2)")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_flag("--quick", o.quick, "the reduced configuration ctest runs (1 pretraining epoch, 30 fine-tuning epochs, 2000 test images)");
  CLI11_PARSE(app, argc, argv);
  if (o.quick) {
    if (pe->count() == 0) o.pretrain_epochs = 1;
    if (ep->count() == 0) o.epochs = 30;
    if (ti->count() == 0) o.test_images = 2000;
  }
  const auto start = std::chrono::steady_clock::now();
  torch::set_num_threads(o.threads);
  torch::manual_seed(o.seed);

  auto data = fashion_mnist::load(o.data);
  auto test_images = data.test.images.slice(0, 0, o.test_images);
  auto test_x = fashion_mnist::normalize(test_images);
  auto test_y = data.test.labels.slice(0, 0, o.test_images);
  // The same test images photographed differently: two pixels off centre, and dimmer.
  auto shifted_x = fashion_mnist::normalize(torch::roll(test_images, {2, 2}, {1, 2}).to(torch::kFloat).mul(0.6).to(torch::kByte));
  auto old_classes = test_y < 5;
  fmt::print("Fashion-MNIST: {} training images; {} test images, and the same shifted and dimmed\n", data.train.size(),
             test_y.size(0));

  // ------------------------------------------------------------------------------------------
  // 1. The old 5-class model, and the 10-class "zero-shot" model grown from it.
  auto five = fashion_mnist::classes(data.train, 0, 4);
  auto five_x = fashion_mnist::normalize(five.images);
  Net pretrained(5);
  {
    torch::optim::SGD opt(pretrained->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).weight_decay(5e-4));
    graft::lr_scheduler sched(opt, graft::one_cycle{.total_steps = o.pretrain_epochs * ((five.size() + 63) / 64)});
    for (int e = 0; e < o.pretrain_epochs; ++e) train_epoch(pretrained, opt, sched, five_x, five.labels, 64);
  }
  torch::manual_seed(o.seed + 1);
  Net zero_shot(10);
  graft::from(*pretrained) | graft::merge(*zero_shot, {.adapt = graft::allow("fc.*"_glob)});  // the head grows 5 -> 10
  graft::save(graft::state_dict(*zero_shot), "zero_shot.safetensors");
  fmt::print("\n1. pretrained on {} images of classes 0-4 ({} epoch{}); the 10-class zero-shot model: zero_shot.safetensors\n",
             five.size(), o.pretrain_epochs, o.pretrain_epochs == 1 ? "" : "s");

  // Fine-tunes of the zero-shot model on the same few labels, one per seed (the batch order).
  auto few = fashion_mnist::few_shot(data.train, o.shots);
  auto few_x = fashion_mnist::normalize(few.images);
  // Held-out labelled images for the greedy soup's choices: another few per class.
  auto held_out = fashion_mnist::few_shot(data.train, o.shots);
  auto held_x = fashion_mnist::normalize(held_out.images);
  constexpr std::int64_t batch = 25;
  const std::int64_t steps = o.epochs * ((few.size() + batch - 1) / batch);
  auto fine_tune = [&](int k) {
    Net net(10);
    graft::read("zero_shot.safetensors") | graft::merge(*net);
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));
    graft::lr_scheduler sched(opt, graft::one_cycle{.total_steps = steps});
    torch::manual_seed(o.seed + 100 + static_cast<std::uint64_t>(k));
    for (int e = 0; e < o.epochs; ++e) train_epoch(net, opt, sched, few_x, few.labels, batch);
    auto path = fmt::format("fine_tuned_{}.safetensors", k);
    graft::save(graft::state_dict(*net), path);
    return path;
  };

  Net net(10);  // every combination is loaded into this one model and evaluated
  struct scores {
    double test, shifted, old, held;
  };
  auto held_accuracy = [&](torch::nn::Module&) { return percent(tutorial::predict(*net, held_x).eq(held_out.labels)); };
  auto evaluate = [&](torch::nn::Module& m) {
    auto hits = tutorial::predict(*net, test_x).eq(test_y);
    return scores{percent(hits), percent(tutorial::predict(*net, shifted_x).eq(test_y)), percent(hits.index({old_classes})),
                  held_accuracy(m)};
  };

  // ------------------------------------------------------------------------------------------
  // 2. WiSE-FT. num_batches_tracked counts BatchNorm's training batches, an integer that
  //    differs between the two and that graft will not average: take the fine-tune's.
  auto tuned = fine_tune(0);
  fmt::print("\n2. WiSE-FT: fine-tuned on {} images ({} epochs): {}; interpolated with the zero-shot model\n", few.size(),
             o.epochs, tuned);
  fmt::print("   {:>5} {:>9} {:>9} {:>12}\n", "alpha", "test", "shifted", "classes 0-4");
  std::vector<std::pair<double, scores>> curve;
  for (int i = 0; i <= 10; ++i) {
    const double alpha = i / 10.0;
    graft::interpolate("zero_shot.safetensors", tuned, alpha)
            .where(graft::glob("**.num_batches_tracked"), {.take = 1}) |
        graft::merge(*net);
    auto s = evaluate(*net);
    curve.emplace_back(alpha, s);
    fmt::print("   {:>5.1f} {:>8.1f}% {:>8.1f}% {:>11.1f}%\n", alpha, s.test, s.shifted, s.old);
  }
  {
    std::ofstream csv("wise_ft.csv");
    csv << "alpha,test,shifted,classes 0-4\n";
    for (auto& [a, s] : curve) csv << fmt::format("{},{:.2f},{:.2f},{:.2f}\n", a, s.test, s.shifted, s.old);
    std::ofstream gp("wise_ft.gp");
    gp << "set terminal pngcairo size 720,440\nset output 'wise_ft.png'\nset datafile separator ','\n"
          "set title 'WiSE-FT on Fashion-MNIST: zero-shot (alpha 0) to fine-tuned (alpha 1)'\n"
          "set xlabel 'alpha'\nset ylabel 'accuracy (%)'\nset key bottom right\nset grid\n"
          "plot 'wise_ft.csv' every ::1 using 1:2 with linespoints title 'test images', "
          "'' every ::1 using 1:3 with linespoints title 'shifted and dimmed', "
          "'' every ::1 using 1:4 with linespoints title 'test images of classes 0-4 (the old ones)'\n";
  }
  const bool drew = std::system("gnuplot wise_ft.gp 2>/dev/null") == 0 && std::filesystem::exists("wise_ft.png");
  fmt::print("   the curve: wise_ft.csv; {}\n", drew ? "drawn with gnuplot: wise_ft.png" : "not drawn (gnuplot failed or is missing)");
  auto best_shifted = std::max_element(curve.begin(), curve.end(), [](auto& a, auto& b) { return a.second.shifted < b.second.shifted; });
  auto best_test = std::max_element(curve.begin(), curve.end(), [](auto& a, auto& b) { return a.second.test < b.second.test; });
  fmt::print("   best alpha on the test images {:.1f}, on the shifted ones {:.1f}\n", best_test->first, best_shifted->first);

  // ------------------------------------------------------------------------------------------
  // 3. Soups of o.soup fine-tunes (seeds 0 ... soup-1), written one tensor at a time.
  std::vector<std::string> fine_tunes{tuned};
  for (int k = 1; k < o.soup; ++k) fine_tunes.push_back(fine_tune(k));
  fmt::print("\n3. soups of {} fine-tunes (other batch orders)\n", o.soup);
  fmt::print("   {:<26} {:>9} {:>9} {:>9}\n", "model", "held-out", "test", "shifted");
  std::vector<scores> singles;
  for (std::size_t k = 0; k < fine_tunes.size(); ++k) {
    graft::read(fine_tunes[k]) | graft::merge(*net);
    singles.push_back(evaluate(*net));
    fmt::print("   {:<26} {:>8.1f}% {:>8.1f}% {:>8.1f}%\n", fine_tunes[k], singles.back().held, singles.back().test,
               singles.back().shifted);
  }
  auto best = std::max_element(singles.begin(), singles.end(), [](auto& a, auto& b) { return a.held < b.held; });
  std::vector<graft::combine_input> inputs(fine_tunes.begin(), fine_tunes.end());
  auto report = graft::average(inputs).where(graft::glob("**.num_batches_tracked"), {.take = 0}).save("uniform_soup.safetensors");
  graft::read("uniform_soup.safetensors") | graft::merge(*net);
  auto uniform = evaluate(*net);
  // The greedy soup scores each candidate, and each soup it tries, on the held-out images.
  auto greedy = graft::greedy_soup(*net, inputs, held_accuracy);
  auto greedy_scores = evaluate(*net);
  fmt::print("   {:<26} {:>8.1f}% {:>8.1f}% {:>8.1f}%\n", "best single (held-out)", best->held, best->test, best->shifted);
  fmt::print("   {:<26} {:>8.1f}% {:>8.1f}% {:>8.1f}%\n", "uniform soup", uniform.held, uniform.test, uniform.shifted);
  fmt::print("   {:<26} {:>8.1f}% {:>8.1f}% {:>8.1f}%\n", fmt::format("greedy soup ({} of {})", greedy.kept.size(), o.soup),
             greedy_scores.held, greedy_scores.test, greedy_scores.shifted);
  fmt::print("   the uniform soup: {} tensors combined, {} taken ({})\n", report.combined, report.taken.size(),
             report.taken.empty() ? "" : report.taken.front().first);

  fmt::print("   whole run: {:.0f} s on {} thread{}\n", seconds_since(start), o.threads, o.threads == 1 ? "" : "s");
  // The claims, checked on this run's own numbers.
  const auto& ends0 = curve.front().second;
  const auto& ends1 = curve.back().second;
  fmt::print("\ncheck: an interpolation is at least as accurate on the shifted images as both ends: {}\n",
             best_shifted->second.shifted >= std::max(ends0.shifted, ends1.shifted) && best_shifted->first > 0 && best_shifted->first < 1
                 ? "yes"
                 : "no");
  fmt::print("check: the greedy soup is at least as accurate on held-out images as the best single fine-tune: {}\n",
             greedy_scores.held >= best->held ? "yes" : "no");
  return 0;
} catch (const fashion_mnist::data_error& e) {
  fmt::print(stderr, "error: {}\n(--data DIR reads the files from another directory)\n", e.what());
  return 2;
} catch (const std::exception& e) {
  fmt::print(stderr, "error: {}\n", e.what());
  return 2;
}
