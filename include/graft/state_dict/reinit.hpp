#pragma once
// reinit(module, selector): re-initialize selected tensors with their module's own
// initialization (reset_parameters), in place, leaving every other tensor of those modules
// as it was: a fresh head after loading a backbone, or the new rows of a grown classifier.

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <fmt/format.h>
#include <torch/nn.h>  // the module headers are not self-contained: take them whole
#include <torch/utils.h>

#include <graft/detail/norm_layers.hpp>
#include <graft/error.hpp>
#include <graft/select/select.hpp>

namespace graft {
namespace detail {

// Calls the module's own reset_parameters() if `run`; false for types graft does not know:
// the layers with weights, and every normalization layer.
inline bool reset_parameters_of(torch::nn::Module& m, bool run) {
  namespace nn = torch::nn;
  auto reset = [run](auto& layer) {
    if (run) layer.reset_parameters();
  };
  return visit_as(module_types<nn::LinearImpl, nn::Conv1dImpl, nn::Conv2dImpl, nn::Conv3dImpl, nn::EmbeddingImpl,
                               nn::BilinearImpl>{},
                  m, reset) ||
         visit_as(norm_layer_types{}, m, reset);
}

} // namespace detail

/// What reinit() re-initialized.
struct reinit_result {
  std::vector<std::string> tensors;  ///< paths of the re-initialized tensors
  std::int64_t elements = 0;
};

/// Re-initializes the tensors `sel` selects (parameters and buffers) with their owning
/// module's reset_parameters(), in place; the owners' other tensors keep their values.
/// An option_error names any owner whose type has no initialization graft knows; nothing is
/// changed then.
template <selector S>
reinit_result reinit(torch::nn::Module& module, const S& sel) {
  struct owner_plan {
    std::string path;
    std::vector<torch::Tensor> keep, keep_saved;
  };
  std::vector<torch::nn::Module*> owners;
  std::unordered_map<torch::nn::Module*, owner_plan> plans;
  std::unordered_set<const void*> chosen;
  reinit_result result;
  walk_options opts{.parameters = true, .buffers = true};
  auto n = detail::for_each_match(module, sel, opts, [&](const tensor_view& t) {
    auto* o = &t.owner();
    if (plans.emplace(o, owner_plan{std::string(t.module_path()), {}, {}}).second) owners.push_back(o);
    chosen.insert(t.tensor().unsafeGetTensorImpl());
    result.tensors.emplace_back(t.path());
    result.elements += t.tensor().numel();
  });
  detail::require_nonempty(n, module, sel, opts);
  for (auto* o : owners)  // every type is checked before anything changes
    if (!detail::reset_parameters_of(*o, false))
      throw option_error(fmt::format("reinit: '{}' is a {}, whose initialization graft does not know; "
                                     "initialize its tensors with torch::nn::init yourself",
                                     plans[o].path, o->name()));
  torch::NoGradGuard no_grad;
  for (auto* o : owners) {
    auto& p = plans[o];
    detail::module_registries own(*o);
    for (auto* reg : {&own.parameters(), &own.buffers()})
      for (auto& item : *reg)
        if (item.value().defined() && !chosen.contains(item.value().unsafeGetTensorImpl())) {
          p.keep.push_back(item.value());
          p.keep_saved.push_back(item.value().detach().clone());
        }
    detail::reset_parameters_of(*o, true);
    for (std::size_t i = 0; i < p.keep.size(); ++i) p.keep[i].copy_(p.keep_saved[i]);
  }
  return result;
}

} // namespace graft
