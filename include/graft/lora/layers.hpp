#pragma once
// graft's own Linear, Conv1d/2d/3d and Embedding: libtorch's layers (same options, parameters,
// initialization and state dict) whose forward() also computes a LoRA adapter on the
// activations, base(x) + scale·B(A(dropout(x))), as PEFT computes it (DoRA too). Declare a
// model's layers with these types where you can change its code: lora::attach() then wraps them
// without recomputing their weights, and a training step costs what a hand-written LoRA layer
// costs.
// Until an adapter is attached (and while it is merged) they are exactly libtorch's layers.

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn.h>  // the module headers are not self-contained: take them whole

namespace graft::lora {

namespace detail {

/// What attach() connects to one of graft's own layers: the adapter's factors and scale (and
/// DoRA's magnitude). The layer reads it in forward(); nothing else does.
class adapter_slot {
public:
  virtual ~adapter_slot() = default;

  void connect(torch::Tensor a, torch::Tensor b, double scale, double dropout, torch::Tensor magnitude = {}) {
    a_ = std::move(a);
    b_ = std::move(b);
    m_ = std::move(magnitude);
    scale_ = scale;
    dropout_ = dropout;
    active_ = true;
  }
  void disconnect() {
    a_ = b_ = m_ = torch::Tensor();
    active_ = false;
  }
  /// merge() folds the adapter into the weight: the forward then skips it (and unmerge() puts it back).
  void set_active(bool on) noexcept { active_ = on && a_.defined(); }
  bool active() const noexcept { return active_; }

protected:
  /// Whether the adapter's input is dropped (dropout set, the layer training).
  bool drops(bool training) const noexcept { return dropout_ > 0 && training; }
  /// The adapter's input: x, with PEFT's dropout while the layer trains.
  torch::Tensor adapter_input(const torch::Tensor& x, bool training) const {
    return drops(training) ? torch::dropout(x, dropout_, true) : x;
  }
  const torch::Tensor& a() const noexcept { return a_; }
  const torch::Tensor& b() const noexcept { return b_; }
  /// DoRA's magnitude vector; undefined for plain LoRA.
  const torch::Tensor& magnitude() const noexcept { return m_; }
  double scale() const noexcept { return scale_; }
  /// DoRA's m / ‖W0 + scale·ΔW‖ as a vector: `dim` 1, one entry per row of W0 (the norm over
  /// all its other dimensions); `dim` 0, one per column (an embedding's dimensions). The norm
  /// is computed without a graph from the undropped factors, as PEFT does.
  /// `delta()` gives scale·ΔW in W0's shape; it runs without a graph.
  template <class Delta>
  torch::Tensor dora_ratio(const torch::Tensor& w0, Delta delta, std::int64_t dim) const {
    torch::Tensor norm;
    {
      torch::NoGradGuard no_grad;
      auto w = w0 + delta();
      norm = dim == 0 ? w.norm(2, {0}) : w.flatten(1).norm(2, {1});
    }
    return m_.reshape({-1}) / norm;
  }

private:
  torch::Tensor a_, b_, m_;
  double scale_ = 0, dropout_ = 0;
  bool active_ = false;
};

/// PEFT's convolution adapter: A is a convolution with the base layer's kernel, stride,
/// padding (mode included) and dilation, B a 1x1 convolution; so the unmerged forward computes
/// exactly what the merged weight does.
template <std::size_t D, class Options>
torch::Tensor conv_like(torch::Tensor x, const torch::Tensor& w, const Options& o,
                        const std::vector<std::int64_t>& reversed_padding_twice) {
  namespace F = torch::nn::functional;
  F::ConvFuncOptions<D> first;
  first.stride(o.stride()).dilation(o.dilation());
  auto mode = torch::enumtype::get_enum_name(o.padding_mode());
  if (mode == "kZeros") {
    first.padding(o.padding());
  } else {
    F::PadFuncOptions pad(reversed_padding_twice);
    if (mode == "kReflect") pad.mode(torch::kReflect);
    else if (mode == "kReplicate") pad.mode(torch::kReplicate);
    else pad.mode(torch::kCircular);
    x = F::pad(x, pad);
    first.padding(0);
  }
  if constexpr (D == 1) return F::conv1d(x, w, first);
  else if constexpr (D == 2) return F::conv2d(x, w, first);
  else return F::conv3d(x, w, first);
}
template <std::size_t D, class Options>
torch::Tensor adapter_conv(const torch::Tensor& x, const torch::Tensor& a, const torch::Tensor& b, const Options& o,
                           const std::vector<std::int64_t>& reversed_padding_twice) {
  namespace F = torch::nn::functional;
  auto h = conv_like<D>(x, a, o, reversed_padding_twice);
  if constexpr (D == 1) return F::conv1d(h, b);
  else if constexpr (D == 2) return F::conv2d(h, b);
  else return F::conv3d(h, b);
}

template <std::size_t D, class Base>
class conv_layer : public Base, public adapter_slot {
public:
  using Base::Base;
  torch::Tensor forward(const torch::Tensor& x) {
    auto y = Base::forward(x);
    if (!active()) return y;
    auto xa = adapter_input(x, this->is_training());
    auto lora = adapter_conv<D>(xa, a(), b(), this->options, this->_reversed_padding_repeated_twice);
    if (!magnitude().defined()) return y.add(lora, scale());
    // DoRA as PEFT: y + (m/‖·‖ - 1)·conv(x, W0) + m/‖·‖·scale·lora, the base term recomputed
    // on the dropped input while dropout is on. Without dropout that is
    // m/‖·‖·(conv(x, W0) + scale·lora) + bias: one activation kept for the backward, not two.
    auto ratio = dora_ratio(
        this->weight, [&] { return torch::matmul(b().flatten(1), a().flatten(1)).view(this->weight.sizes()) * scale(); }, 1);
    std::vector<std::int64_t> shape(static_cast<std::size_t>(y.dim()), 1);
    shape[1] = -1;
    ratio = ratio.view(shape);
    if (drops(this->is_training()))
      return y + (ratio - 1) * conv_like<D>(xa, this->weight, this->options, this->_reversed_padding_repeated_twice) +
             ratio * lora * scale();
    if (!this->bias.defined()) return y.add(lora, scale()) * ratio;
    return (y - this->bias.view(shape)).add_(lora, scale()) * ratio + this->bias.view(shape);
  }
};

} // namespace detail

/// torch::nn::Linear, plus base(x) + scale·B(A(dropout(x))) once lora::attach() wraps it.
class LinearImpl : public torch::nn::LinearImpl, public detail::adapter_slot {
public:
  using torch::nn::LinearImpl::LinearImpl;
  torch::Tensor forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    auto y = torch::nn::LinearImpl::forward(x);
    if (!active()) return y;
    auto xa = adapter_input(x, is_training());
    auto lora = F::linear(F::linear(xa, a()), b());
    if (!magnitude().defined()) return y.add(lora, scale());
    // DoRA as PEFT: y + (m/‖·‖ - 1)·W0·x + m/‖·‖·scale·lora, the base term recomputed on the
    // dropped input while dropout is on. Without dropout that is m/‖·‖·(W0·x + scale·lora) +
    // bias: one activation kept for the backward, not two.
    auto ratio = dora_ratio(weight, [&] { return torch::matmul(b(), a()) * scale(); }, 1);
    if (drops(is_training())) return y + (ratio - 1) * F::linear(xa, weight) + ratio * lora * scale();
    if (!bias.defined()) return y.add(lora, scale()) * ratio;
    return (y - bias).add_(lora, scale()) * ratio + bias;
  }
};
TORCH_MODULE(Linear);

/// torch::nn::Conv1d/2d/3d, plus base(x) + scale·B(A(dropout(x))) once lora::attach() wraps
/// them (A: the layer's kernel, stride, padding and dilation with r output channels; B: 1x1).
class Conv1dImpl : public detail::conv_layer<1, torch::nn::Conv1dImpl> {
public:
  using conv_layer::conv_layer;
};
TORCH_MODULE(Conv1d);
class Conv2dImpl : public detail::conv_layer<2, torch::nn::Conv2dImpl> {
public:
  using conv_layer::conv_layer;
};
TORCH_MODULE(Conv2d);
class Conv3dImpl : public detail::conv_layer<3, torch::nn::Conv3dImpl> {
public:
  using conv_layer::conv_layer;
};
TORCH_MODULE(Conv3d);

/// torch::nn::Embedding, plus scale·(A[:, x])ᵀ·Bᵀ once lora::attach() wraps it, as PEFT's
/// lora_embedding_A / lora_embedding_B (no dropout, as in PEFT). A is looked up with the
/// layer's own options, as PEFT does: padding_idx, max_norm (which renormalizes A's columns in
/// place, as the base lookup renormalizes W0's rows), scale_grad_by_freq and sparse.
class EmbeddingImpl : public torch::nn::EmbeddingImpl, public detail::adapter_slot {
public:
  using torch::nn::EmbeddingImpl::EmbeddingImpl;
  torch::Tensor forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    auto y = torch::nn::EmbeddingImpl::forward(x);
    if (!active()) return y;
    F::EmbeddingFuncOptions o;
    if (options.padding_idx()) o.padding_idx(*options.padding_idx());
    if (options.max_norm()) o.max_norm(*options.max_norm());
    o.norm_type(options.norm_type()).scale_grad_by_freq(options.scale_grad_by_freq()).sparse(options.sparse());
    // DoRA as PEFT: m/‖·‖ · (y + scale·lora), the norm over each embedding dimension, taken
    // before the lookup of A (which max_norm may renormalize in place).
    torch::Tensor ratio;
    if (magnitude().defined()) ratio = dora_ratio(weight, [&] { return torch::matmul(b(), a()).t() * scale(); }, 0);
    auto lora = torch::matmul(F::embedding(x, a().t(), o), b().t());
    if (!ratio.defined()) return y.add(lora, scale());
    return y.add(lora, scale()) * ratio;
  }
};
TORCH_MODULE(Embedding);

} // namespace graft::lora
