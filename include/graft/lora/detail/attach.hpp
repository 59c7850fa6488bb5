#pragma once
// The parts of lora::attach() that do not depend on the adapters class: pattern rules, what a
// module is to LoRA, factor shapes and initialization.

#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn.h>  // the module headers are not self-contained: take them whole

#include <graft/detail/script_node.hpp>
#include <graft/select/module.hpp>
#include <graft/select/regex.hpp>
#include <graft/error.hpp>
#include <graft/lora/layers.hpp>
#include <graft/lora/options.hpp>
#include <graft/walk/walk.hpp>

namespace graft::lora::detail {

/// The holder of one adapter factor: a module whose one parameter is `weight`.
struct factor_impl : torch::nn::Module {
  explicit factor_impl(torch::Tensor w) { weight = register_parameter("weight", std::move(w)); }
  torch::Tensor weight;
};

/// PEFT's rank_pattern / alpha_pattern rule: `path` matches `(.*\.)?(pattern)$`.
inline bool pattern_matches(std::string_view pattern, std::string_view path, std::string_view what) {
  return graft::detail::full_match(fmt::format("(.*\\.)?(?:{})", pattern), path, what);
}

template <class T>
T value_for(const std::vector<pattern_value<T>>& patterns, std::string_view path, T fallback, std::string_view what) {
  for (const auto& p : patterns)
    if (pattern_matches(p.pattern, path, what)) return p.value;
  return fallback;
}

struct layer_plan {
  std::string path;
  torch::nn::Module* module;
};

inline std::string parent_path(std::string_view tensor_path) {
  auto dot = tensor_path.rfind('.');
  return dot == std::string_view::npos ? std::string() : std::string(tensor_path.substr(0, dot));
}


inline std::int64_t trainable_elements(const torch::nn::Module& m) {
  std::int64_t n = 0;
  for (auto t : walk(m))
    if (t.tensor().requires_grad()) n += t.tensor().numel();
  return n;
}

/// What a module is to LoRA: its kind and type name, or an error naming it.
inline std::pair<layer_kind, std::string> classify(torch::nn::Module& m, const std::string& path, std::string_view picked_by) {
  auto where = path.empty() ? std::string("the model") : fmt::format("'{}'", path);
  if (dynamic_cast<torch::nn::LinearImpl*>(&m)) return {layer_kind::linear, "Linear"};
  if (auto* e = dynamic_cast<torch::nn::EmbeddingImpl*>(&m)) {
    // PEFT looks up lora_A with the base layer's own embedding options. graft's Embedding does
    // the same; libtorch's reads W0 + scale·ΔW through one lookup, which would apply these
    // options to the sum instead.
    const auto& o = e->options;
    if (!dynamic_cast<adapter_slot*>(&m) && (o.max_norm() || o.scale_grad_by_freq() || o.sparse())) {
      auto why = o.max_norm() ? fmt::format("max_norm={}: it would renormalize the rows of W0 + scale·ΔW, where PEFT "
                                            "renormalizes W0's and lora_A's apart", *o.max_norm())
                 : o.scale_grad_by_freq() ? std::string("scale_grad_by_freq: lora_B's gradient would be scaled by the "
                                                        "token counts too, where PEFT scales only lora_A's")
                                          : std::string("sparse: the gradient would reach lora_A and lora_B through a "
                                                        "dense sum, where PEFT gives lora_A a sparse one");
      throw option_error(fmt::format("LoRA cannot wrap {} (torch::nn::Embedding with {}); make the layer a "
                                     "graft::lora::Embedding (graft/lora/layers.hpp), which computes the adapter as PEFT does",
                                     where, why));
    }
    return {layer_kind::embedding, "Embedding"};
  }
  auto conv = [&](auto* c, const char* name) -> std::pair<layer_kind, std::string> {
    if (c->options.groups() != 1)
      throw option_error(fmt::format("LoRA cannot wrap {} ({} with groups={}): its adapter could not be merged into "
                                     "the weight, as PEFT refuses to merge it; leave grouped convolutions out of the targets",
                                     where, name, c->options.groups()));
    return {layer_kind::conv, name};
  };
  if (auto* c = dynamic_cast<torch::nn::Conv1dImpl*>(&m)) return conv(c, "Conv1d");
  if (auto* c = dynamic_cast<torch::nn::Conv2dImpl*>(&m)) return conv(c, "Conv2d");
  if (auto* c = dynamic_cast<torch::nn::Conv3dImpl*>(&m)) return conv(c, "Conv3d");
  if (auto* s = graft::detail::as_script_node(m))
    throw selection_error(fmt::format("LoRA cannot wrap {} ({}, a TorchScript module): its forward is compiled "
                                      "TorchScript that reads no C++ weight member; LoRA needs C++ modules",
                                      where, s->python_class()));
  throw selection_error(fmt::format("LoRA cannot wrap {} ({}), picked by '{}': it wraps Linear, Conv1d/2d/3d and "
                                    "Embedding layers (add '& graft::lora::wrappable' to the selector)",
                                    where, graft::detail::short_type_name(typeid(m)), picked_by));
}

inline torch::Tensor* weight_member(torch::nn::Module& m, layer_kind kind) {
  switch (kind) {
    case layer_kind::linear: return &dynamic_cast<torch::nn::LinearImpl&>(m).weight;
    case layer_kind::embedding: return &dynamic_cast<torch::nn::EmbeddingImpl&>(m).weight;
    case layer_kind::conv:
      if (auto* c = dynamic_cast<torch::nn::Conv1dImpl*>(&m)) return &c->weight;
      if (auto* c = dynamic_cast<torch::nn::Conv2dImpl*>(&m)) return &c->weight;
      return &dynamic_cast<torch::nn::Conv3dImpl&>(m).weight;
  }
  return nullptr;
}

/// A's and B's shapes for a layer of base weight `w`.
inline std::pair<std::vector<std::int64_t>, std::vector<std::int64_t>> factor_shapes(layer_kind kind, const torch::Tensor& w,
                                                                                       std::int64_t r) {
  switch (kind) {
    case layer_kind::linear: return {{r, w.size(1)}, {w.size(0), r}};
    case layer_kind::embedding: return {{r, w.size(0)}, {w.size(1), r}};
    case layer_kind::conv: {
      std::vector<std::int64_t> a = w.sizes().vec(), b(static_cast<std::size_t>(w.dim()), 1);
      a[0] = r;
      b[0] = w.size(0);
      b[1] = r;
      return {a, b};
    }
  }
  return {};
}

/// PEFT's shape of DoRA's magnitude vector for a layer of base weight `w`: [out] (linear),
/// [1, out, 1...] (conv), [embedding_dim] (embedding).
inline std::vector<std::int64_t> magnitude_shape(layer_kind kind, const torch::Tensor& w) {
  switch (kind) {
    case layer_kind::linear: return {w.size(0)};
    case layer_kind::embedding: return {w.size(1)};
    case layer_kind::conv: {
      std::vector<std::int64_t> s(static_cast<std::size_t>(w.dim()), 1);
      s[1] = w.size(0);
      return s;
    }
  }
  return {};
}

/// torch.svd_lowrank's randomized SVD of a matrix to rank q (Halko et al.), with `niter`
/// subspace iterations, drawing from torch's generator: U [m, q], S [q], V [n, q].
inline std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> svd_lowrank(const torch::Tensor& a, std::int64_t q, std::int64_t niter) {
  auto basis = [&](const torch::Tensor& m) {
    auto qm = std::get<0>(torch::linalg_qr(torch::matmul(m, torch::randn({m.size(1), q}, m.options()))));
    for (std::int64_t i = 0; i < niter; ++i) {
      qm = std::get<0>(torch::linalg_qr(torch::matmul(m.t(), qm)));
      qm = std::get<0>(torch::linalg_qr(torch::matmul(m, qm)));
    }
    return qm;
  };
  auto qm = basis(a);
  auto [ub, s, vh] = torch::linalg_svd(torch::matmul(qm.t(), a), false);
  return {torch::matmul(qm, ub), s, vh.t()};
}

/// PiSSA's or OLoRA's start for a Linear weight `w` (any float dtype; computed in float32):
/// lora_A [r, in] and lora_B [out, r] whose product times `scale` the base gives up, as PEFT's
/// pissa_init / olora_init compute them.
inline std::pair<torch::Tensor, torch::Tensor> decomposed_start(const torch::Tensor& w, std::int64_t r, double scale, init_mode init,
                                                                 std::optional<std::int64_t> niter) {
  torch::NoGradGuard no_grad;
  auto w32 = w.to(torch::kFloat);
  if (init == init_mode::olora) {
    auto [q, rr] = torch::linalg_qr(w32);
    return {rr.slice(0, 0, r).contiguous(), q.slice(1, 0, r).contiguous()};
  }
  torch::Tensor u, s, vh;
  if (niter) {
    auto [lu, ls, lv] = svd_lowrank(w32, r, *niter);
    u = lu, s = ls, vh = lv.t();
  } else {
    auto [fu, fs, fvh] = torch::linalg_svd(w32, false);
    u = fu.slice(1, 0, r), s = fs.slice(0, 0, r), vh = fvh.slice(0, 0, r);
  }
  auto root = (s / scale).sqrt();
  return {(root.unsqueeze(1) * vh).contiguous(), (u * root.unsqueeze(0)).contiguous()};
}

inline void init_factors(layer_kind kind, init_mode init, torch::Tensor& a, torch::Tensor& b, std::int64_t r) {
  torch::NoGradGuard no_grad;
  if (kind == layer_kind::embedding) {
    // PEFT: embeddings start with A zeros and B standard normal (gaussian included); none
    // draws both from the standard normal.
    if (init == init_mode::none) {
      torch::nn::init::normal_(a);
      torch::nn::init::normal_(b);
    } else {
      a.zero_();
      torch::nn::init::normal_(b);
    }
    return;
  }
  if (init == init_mode::gaussian)
    torch::nn::init::normal_(a, 0.0, 1.0 / static_cast<double>(r));
  else
    torch::nn::init::kaiming_uniform_(a, std::sqrt(5.0));
  if (init == init_mode::none)
    torch::nn::init::kaiming_uniform_(b, std::sqrt(5.0));
  else
    b.zero_();
}


} // namespace graft::lora::detail
