#pragma once
// LoRA's settings (named as PEFT names them), one wrapped layer, and what attach() reports.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <torch/nn.h>  // the module headers are not self-contained: take them whole

#include <graft/detail/join.hpp>
#include <graft/detail/report_formatter.hpp>
#include <graft/lora/layers.hpp>
#include <graft/select/module.hpp>

namespace graft::lora {

/// Which biases train (and are saved with the adapter), as PEFT's `bias` option.
enum class bias_mode { none, all, lora_only };
/// How new adapters start, as PEFT's `init_lora_weights`: kaiming (True: A Kaiming-uniform
/// with a = sqrt(5), B zeros, so a new adapter changes nothing), gaussian (A normal with std
/// 1/r, B zeros), none (False: both random; the model's outputs change at once). Embeddings
/// start as PEFT starts them: A zeros and B standard normal (none: both standard normal).
/// pissa ("pissa", or "pissa_niter_N" with options::pissa_niter): B·A starts as the top r
/// singular triplets of W, which the base keeps the residual of; olora: B·A starts as the
/// first r columns of W's QR decomposition, likewise. Both change the base weights (the
/// model's outputs do not change) and are for Linear layers, as in PEFT.
enum class init_mode { kaiming, gaussian, none, pissa, olora };

constexpr std::string_view to_string(bias_mode b) noexcept {
  return b == bias_mode::all ? "all" : b == bias_mode::lora_only ? "lora_only" : "none";
}

/// One rank (or alpha) for the layers whose path matches `pattern` by PEFT's rule for
/// rank_pattern / alpha_pattern: the whole path, or a dotted suffix of it, matches the regular
/// expression (`(.*\.)?(pattern)$`). The first matching entry wins.
template <class T>
struct pattern_value {
  std::string pattern;
  T value;
};

/// The adapter's settings, named as PEFT names them.
struct options {
  std::int64_t r = 8;            ///< the rank
  double alpha = 8;              ///< lora_alpha: scale = alpha / r (or alpha / sqrt(r) with rslora)
  double dropout = 0;            ///< lora_dropout: drops input features of A while training (see docs/lora.md)
  bool rslora = false;           ///< use_rslora
  /// use_dora: DoRA (weight-decomposed LoRA). Each layer also trains a magnitude vector m,
  /// one entry per output row (per embedding dimension for an embedding), and computes
  /// m / ‖W0 + scale·ΔW‖ · (W0 + scale·ΔW), the norm taken row-wise and held constant in the
  /// backward pass, as PEFT does.
  bool dora = false;
  init_mode init = init_mode::kaiming;
  /// With init pissa: PEFT's "pissa_niter_N", a randomized SVD with N subspace iterations
  /// (faster on large layers; its random draw is torch's). Unset: the exact SVD ("pissa").
  std::optional<std::int64_t> pissa_niter{};
  bias_mode bias = bias_mode::none;
  std::vector<pattern_value<std::int64_t>> rank_pattern{};  ///< per-layer ranks
  std::vector<pattern_value<double>> alpha_pattern{};       ///< per-layer alphas
};

/// The kind of layer an adapter sits beside.
enum class layer_kind { linear, conv, embedding };

/// Linear, Conv1d/2d/3d and Embedding: the layers LoRA wraps. `targets & lora::wrappable`
/// narrows a broad selector ("layer4.**") to them.
inline const auto wrappable = labeled(
    of_type<torch::nn::LinearImpl, torch::nn::Conv1dImpl, torch::nn::Conv2dImpl, torch::nn::Conv3dImpl, torch::nn::EmbeddingImpl>,
    "lora::wrappable");

/// One wrapped layer.
struct layer {
  std::string path;          ///< the layer's dotted path in the model ("" for the model itself)
  std::string type;          ///< "Linear", "Conv2d", "Embedding"
  layer_kind kind;
  torch::nn::Module* module; ///< the layer
  torch::Tensor* weight;     ///< the layer's weight member, which its forward() reads
  torch::Tensor base;        ///< W0: the registered, frozen weight
  torch::Tensor A;           ///< lora_A.weight: (r, in) / (r, in, k...) / (r, num_embeddings)
  torch::Tensor B;           ///< lora_B.weight: (out, r) / (out, r, 1...) / (embedding_dim, r)
  std::int64_t r;
  double alpha;
  double scale;              ///< alpha / r, or alpha / sqrt(r) with rslora
  /// Set when the layer is one of graft's own (lora/layers.hpp): its forward() computes the
  /// adapter on the activations, and its weight member stays W0. Null for libtorch's layers.
  detail::adapter_slot* own_layer = nullptr;
  /// DoRA's magnitude vector (lora_magnitude_vector.weight), in PEFT's shape: [out] for a
  /// Linear, [1, out, 1...] for a convolution, [embedding_dim] for an embedding. Undefined
  /// without DoRA.
  torch::Tensor magnitude{};
  /// The norm merge() divided the magnitude by, kept for unmerge() (as PEFT keeps it).
  torch::Tensor merged_norm{};
  /// With PiSSA or OLoRA: A and B as they started, whose scaled product the base weight gave
  /// up (W0 here is the residual); for unload() and for saving as a plain LoRA adapter.
  torch::Tensor initial_A{}, initial_B{};

  /// scale·ΔW in the shape of the base weight: B·A (linear), B·A over the kernel (conv),
  /// (B·A)ᵀ (embedding). Differentiable in A and B.
  torch::Tensor delta() const { return delta(A, B); }
  torch::Tensor delta(const torch::Tensor& a, const torch::Tensor& b) const {
    switch (kind) {
      case layer_kind::linear: return torch::matmul(b, a).mul_(scale);
      case layer_kind::conv: return torch::matmul(b.flatten(1), a.flatten(1)).view(base.sizes()).mul_(scale);
      case layer_kind::embedding: return torch::matmul(b, a).t().mul(scale);
    }
    return {};
  }
  /// What a libtorch layer's forward reads. LoRA: W0 + scale·ΔW(a, B), in one fused product
  /// (addmm). DoRA: m / ‖W0 + scale·ΔW(A, B)‖ · (W0 + scale·ΔW(a, B)), the norm without a
  /// graph. `keep`, when given, is the dropout mask already folded into `a` (a = A·keep over
  /// input features): DoRA then computes PEFT's W0 + (m/‖·‖ - 1)·W0·keep + m/‖·‖·scale·ΔW(a, B).
  torch::Tensor weight_with(const torch::Tensor& a, const torch::Tensor& keep = {}) const {
    if (!magnitude.defined()) return plain_weight(a);
    auto ratio = dora_ratio(dora_norm());
    if (!keep.defined()) return ratio * plain_weight(a);
    return base + (ratio - 1) * (base * keep) + ratio * delta(a, B);
  }
  /// DoRA: the norm of W0 + `d` (d defaults to scale·ΔW) per output row (per embedding
  /// dimension for an embedding), as PEFT computes it; without a graph.
  torch::Tensor dora_norm(const torch::Tensor& d = {}) const {
    torch::NoGradGuard no_grad;
    auto w = base + (d.defined() ? d : delta());
    switch (kind) {
      case layer_kind::linear: return w.norm(2, {1});
      case layer_kind::conv: return w.flatten(1).norm(2, {1});
      case layer_kind::embedding: return w.norm(2, {0});
    }
    return {};
  }
  /// DoRA: m / `norm`, shaped to scale the base weight's rows (an embedding's columns).
  torch::Tensor dora_ratio(const torch::Tensor& norm) const { return along_rows(magnitude.reshape({-1}) / norm); }
  /// A per-row vector (a magnitude or a norm) shaped to scale the base weight's rows ([out, 1...])
  /// or, for an embedding, its columns ([1, embedding_dim]).
  torch::Tensor along_rows(const torch::Tensor& v) const {
    if (kind == layer_kind::embedding) return v.reshape({1, -1});
    std::vector<std::int64_t> shape(static_cast<std::size_t>(base.dim()), 1);
    shape[0] = -1;
    return v.reshape(shape);
  }
  /// PiSSA / OLoRA: scale·B0·A0 in float32, what the base weight gave up at the start.
  torch::Tensor start_product() const {
    return torch::matmul(initial_B.to(torch::kFloat), initial_A.to(torch::kFloat)) * scale;
  }
  /// The weight the layer had before attach(): W0, plus start_product() for PiSSA / OLoRA.
  torch::Tensor original_weight() const {
    return initial_A.defined() ? (base.to(torch::kFloat) + start_product()).to(base.scalar_type()) : base;
  }
  /// Connects graft's own layer (if it is one) to the adapter's current tensors and scale.
  void connect_own(double dropout) const {
    if (own_layer) own_layer->connect(A, B, scale, kind == layer_kind::embedding ? 0.0 : dropout, magnitude);
  }
  /// The adapter's trainable elements.
  std::int64_t elements() const { return A.numel() + B.numel() + (magnitude.defined() ? magnitude.numel() : 0); }
  /// W0 + scale·ΔW(a, B) in one fused product (addmm), DoRA's magnitude aside.
  torch::Tensor plain_weight(const torch::Tensor& a) const {
    switch (kind) {
      case layer_kind::linear: return torch::addmm(base, B, a, 1, scale);
      case layer_kind::conv: return torch::addmm(base.flatten(1), B.flatten(1), a.flatten(1), 1, scale).view(base.sizes());
      case layer_kind::embedding: return torch::addmm(base, a.t(), B.t(), 1, scale);
    }
    return {};
  }
};

/// What attach() did.
struct attach_report {
  std::vector<std::string> layers;           ///< paths of the wrapped layers
  std::vector<std::string> types;            ///< their types
  std::vector<std::int64_t> ranks;           ///< their ranks
  std::vector<double> scales;                ///< their scales
  std::int64_t adapter_elements = 0;         ///< elements of every lora_A and lora_B
  std::vector<std::string> modules_to_save;  ///< modules trained fully and saved with the adapter
  bias_mode bias = bias_mode::none;
  std::int64_t elements = 0;                 ///< the model's parameter elements, adapters included
  std::int64_t trainable_before = 0;         ///< trainable elements before attach()
  std::int64_t trainable_after = 0;          ///< trainable elements after
};


} // namespace graft::lora

/// "LoRA on 20 layers (rank 8): trainable 11689512 -> 157706 elements (1.34% of 11829386)",
/// then one line per layer.
template <>
struct fmt::formatter<graft::lora::attach_report> : graft::detail::report_formatter {
  template <class Ctx>
  auto format(const graft::lora::attach_report& r, Ctx& ctx) const {
    double pct = r.elements ? 100.0 * static_cast<double>(r.trainable_after) / static_cast<double>(r.elements) : 0.0;
    std::string out = fmt::format("LoRA on {} layers ({} adapter elements): trainable {} -> {} elements ({:.2f}% of {})",
                                  r.layers.size(), r.adapter_elements, r.trainable_before, r.trainable_after, pct, r.elements);
    if (r.bias != graft::lora::bias_mode::none) out += fmt::format("; biases: {}", graft::lora::to_string(r.bias));
    if (!r.modules_to_save.empty()) out += fmt::format("; trained and saved whole: {}", graft::detail::join(r.modules_to_save, ", "));
    for (std::size_t i = 0; i < r.layers.size(); ++i)
      out += fmt::format("\n  {} ({}): r={} scale={:g}", r.layers[i], r.types[i], r.ranks[i], r.scales[i]);
    return graft::detail::write_text(ctx, out);
  }
};
