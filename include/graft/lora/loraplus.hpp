#pragma once
// LoRA+ (Hayou et al. 2024): lora_B trains at a multiple of lora_A's learning rate. The param
// groups PEFT's create_loraplus_optimizer builds, as graft param groups (named, with their
// settings, ready for make_optimizer and any schedule).

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <graft/error.hpp>
#include <graft/optim/options.hpp>
#include <graft/optim/param_groups.hpp>
#include <graft/select/basic.hpp>
#include <graft/select/compose.hpp>
#include <graft/walk/walk.hpp>

namespace graft::lora {

/// LoRA+'s settings, PEFT's keywords of create_loraplus_optimizer.
struct loraplus_options {
  double lr_ratio = 16;         ///< loraplus_lr_ratio: lora_B's lr over lora_A's (the paper suggests 2^4)
  double lr_embedding = 1e-6;   ///< loraplus_lr_embedding: the lr of embedding layers' adapters
  double weight_decay = 0.0;    ///< loraplus_weight_decay: every group's but "lora_B.no_decay"
};

namespace detail {

// Each trainable parameter's LoRA+ group, by PEFT's rules: a tensor held two levels below an
// embedding (an embedding layer's adapter factor) is "embedding"; else lora_B and every 1-D
// tensor is "lora_B", or "lora_B.no_decay" for a bias or a LayerNorm tensor (PEFT's
// decay_parameters: not in a LayerNorm, no "bias" in the name); everything else is "lora_A".
struct loraplus_sets {
  std::shared_ptr<std::unordered_set<std::string>> a = std::make_shared<std::unordered_set<std::string>>(),
                                                   embedding = std::make_shared<std::unordered_set<std::string>>(),
                                                   b = std::make_shared<std::unordered_set<std::string>>(),
                                                   b_no_decay = std::make_shared<std::unordered_set<std::string>>();
};

inline loraplus_sets loraplus_classify(torch::nn::Module& model) {
  std::unordered_map<std::string, const torch::nn::Module*> modules;
  for_each_module(model, [&](const torch::nn::Module& m, std::string_view path) { modules.emplace(std::string(path), &m); });
  auto parent = [](std::string_view p, int levels) {
    for (int i = 0; i < levels; ++i) {
      auto dot = p.rfind('.');
      p = dot == std::string_view::npos ? std::string_view() : p.substr(0, dot);
    }
    return std::string(p);
  };
  auto is = [&](const std::string& path, auto pred) {
    auto it = modules.find(path);
    return it != modules.end() && pred(*it->second);
  };
  loraplus_sets s;
  for (const auto& t : walk(model)) {
    if (!t.tensor().requires_grad()) continue;
    std::string path(t.path());
    // (DoRA's magnitude of an embedding sits one level deeper in PEFT's model, below a
    // ModuleDict: not "embedding" there, a 1-D tensor at lora_B's rate.)
    const bool embedding = t.path().find('.') != std::string_view::npos && !path.ends_with(".lora_magnitude_vector.weight") &&
                           is(parent(path, 2), [](const torch::nn::Module& m) {
                             return dynamic_cast<const torch::nn::EmbeddingImpl*>(&m) != nullptr;  // graft's own Embedding too
                           });
    const bool layer_norm = is(parent(path, 1), [](const torch::nn::Module& m) { return dynamic_cast<const torch::nn::LayerNormImpl*>(&m) != nullptr; });
    const bool decays = !layer_norm && path.find("bias") == std::string::npos;
    if (embedding) s.embedding->insert(std::move(path));
    else if (path.find("lora_B") != std::string::npos || t.tensor().dim() == 1) (decays ? s.b : s.b_no_decay)->insert(std::move(path));
    else s.a->insert(std::move(path));
  }
  return s;
}

} // namespace detail

/// The param groups of LoRA+, as PEFT's create_loraplus_optimizer(model, Opt, lr=base.lr(),
/// loraplus_lr_ratio=..., ...) makes them, in its order and under these names:
///   "lora_A"          every trainable tensor not below             lr = base.lr(), weight decay o.weight_decay
///   "embedding"       the adapter factors of embedding layers      lr = o.lr_embedding, o.weight_decay
///   "lora_B"          lora_B factors and other 1-D tensors         lr = base.lr() * o.lr_ratio, o.weight_decay
///   "lora_B.no_decay" those that are biases or LayerNorm tensors   lr = base.lr() * o.lr_ratio, weight decay 0
/// (1-D tensors, a trained head's bias or a norm's scale, train at lora_B's rate, as in PEFT.)
/// A group with no tensor is left out (PEFT keeps it, empty). `base` is the optimizer's options
/// (its lr is lora_A's; its weight decay is replaced, as PEFT's loraplus_weight_decay does);
/// make the optimizer with groups.make_optimizer<Opt>(), and schedule it as any other.
template <optimizer_options O>
named_param_groups loraplus_param_groups(torch::nn::Module& model, const O& base, const loraplus_options& o = {}) {
  if (!(o.lr_ratio > 0)) throw option_error(fmt::format("loraplus_param_groups: lr_ratio must be positive, not {}", o.lr_ratio));
  if (!(o.lr_embedding >= 0)) throw option_error(fmt::format("loraplus_param_groups: lr_embedding must be >= 0, not {}", o.lr_embedding));
  auto s = detail::loraplus_classify(model);
  auto in = [](std::shared_ptr<std::unordered_set<std::string>> set, std::string text) {
    return graft::optional(graft::where([set](std::string_view p) { return set->contains(std::string(p)); }, std::move(text)));
  };
  const double lr = base.lr();
  return graft::param_groups(model)
      .group("lora_A", in(s.a, "loraplus_A"), {.lr = lr, .weight_decay = o.weight_decay})
      .group("embedding", in(s.embedding, "loraplus_embedding"), {.lr = o.lr_embedding, .weight_decay = o.weight_decay})
      .group("lora_B", in(s.b, "loraplus_B"), {.lr = lr * o.lr_ratio, .weight_decay = o.weight_decay})
      .group("lora_B.no_decay", in(s.b_no_decay, "loraplus_B_no_decay"), {.lr = lr * o.lr_ratio, .weight_decay = 0.0})
      .build(base);
}

} // namespace graft::lora
