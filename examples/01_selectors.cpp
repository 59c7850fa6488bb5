// Tutorial 1: selectors, the one vocabulary graft uses to say "these tensors".
//
// Freezing a backbone, giving a head its own learning rate, loading part of a checkpoint: each
// starts by picking tensors out of a model by name, by module type or by property. In plain
// libtorch that is a loop over named_parameters() with string tests; in graft it is a
// selector, a small value that describes itself, can be combined with & | ! -, and fails
// loudly when it matches nothing. docs/tutorials/01_selectors.md walks through this file.

#include <string>

#include <fmt/format.h>

#include <graft/select.hpp>

#include "resnet.hpp"  // torchvision's ResNet layout: "layer4.1.bn2.weight" and friends

using namespace graft::literals;  // the "..."_glob literal

namespace {
// One line per selection: the selector's own description, how many tensors, a few names.
void show(const graft::selection& s) {
  std::string names;
  for (std::size_t i = 0; i < s.size() && i < 3; ++i) names += (i ? ", " : "") + s[i].path;
  if (s.size() > 3) names += ", ...";
  fmt::print("  {:<44} {:>3} tensors{}\n", s.description(), s.size(), names.empty() ? "" : "  " + names);
}
} // namespace

int main() {
  auto net = models::resnet(18);

  // 1. Globs match the whole dotted path. '*' stays within one segment, '**' spans any number
  //    of whole segments (zero included), '?', '[..]' and '{a,b}' work as in a shell. A _glob
  //    literal is checked by the compiler: "layer{4.**"_glob does not build.
  fmt::print("globs\n");
  show(graft::select(*net, "layer4.**"_glob));
  show(graft::select(*net, "*.weight"_glob));  // top-level weights only: '*' never crosses a '.'
  show(graft::select(*net, "**.bias"_glob));
  show(graft::select(*net, "layer{3,4}.0.downsample.**"_glob));
  show(graft::select(*net, "layer[12].?.conv1.weight"_glob));

  // 2. A regex must match the whole path too, as PEFT's target_modules does. RE2 runs it.
  fmt::print("regex\n");
  show(graft::select(*net, graft::regex(R"(layer[34]\.\d+\.conv\d\.weight)")));

  // 3. Selectors that look past the name: the type of the module that owns a tensor, and
  //    properties of the tensor itself. Walks list parameters unless asked for buffers too.
  fmt::print("module types and tensor predicates\n");
  show(graft::select(*net, graft::of_type<torch::nn::BatchNorm2dImpl>));
  show(graft::select(*net, graft::of_type<torch::nn::BatchNorm2dImpl>, graft::walk_options::state()));  // + running stats
  show(graft::select(*net, graft::ndim <= 1));  // biases and norm weights: the usual no-decay set
  show(graft::select(*net, graft::is_buffer & (graft::dtype == torch::kLong), graft::walk_options::state()));

  // 4. Composition. & | ! and - (except) build a new selector that owns its parts and says
  //    what it does in words; labeled() gives any selector a name of your own.
  fmt::print("composition\n");
  auto no_decay = graft::bias | graft::norm_layers;
  auto layer4_convs = "layer4.**"_glob - graft::of_type<torch::nn::BatchNorm2dImpl>;
  auto head = graft::labeled("fc.**"_glob, "the classifier");
  show(graft::select(*net, no_decay));
  show(graft::select(*net, layer4_convs));
  show(graft::select(*net, !("layer{1,2,3,4}.**"_glob) - head));
  show(graft::select(*net, head));

  // 5. explain() shows what a selector took and what it left, with shapes: the first thing to
  //    print when a selection surprises you. Here on one residual block.
  fmt::print("explain\n");
  const auto& block = *net->layers[3]->ptr(1);
  fmt::print("{}", graft::explain(block, "bn?.*"_glob - graft::bias));

  // 6. A selector that matches nothing is an error, because in fine-tuning code a silent
  //    no-op (a typo in a layer name) trains the wrong thing for hours. The error offers the
  //    nearest real names.
  fmt::print("empty selections\n");
  try {
    graft::select(*net, "fc.weights"_glob);
  } catch (const graft::selection_error& e) {
    fmt::print("  {}\n", e.what());
  }
  try {
    graft::select(*net, "layer5.**"_glob);
  } catch (const graft::selection_error& e) {
    fmt::print("  {}\n", e.what());
  }
  //    When nothing is a fine answer (a model that may or may not have an auxiliary head),
  //    say so with optional().
  show(graft::select(*net, graft::optional("aux_head.**"_glob)));

  // 7. Patterns that arrive at run time (a command line, a config file) are marked runtime()
  //    and checked when built: a bad one throws pattern_error that points at the problem.
  fmt::print("runtime patterns\n");
  std::string from_config = "layer{3,4.**";
  try {
    graft::glob g(graft::runtime(from_config));
  } catch (const graft::pattern_error& e) {
    fmt::print("  {}\n", e.what());
  }
  show(graft::select(*net, graft::glob(graft::runtime("layer{3,4}.1.**"))));
  return 0;
}
