#pragma once
// The per-tensor steps that merging methods share: TIES's trim to the largest magnitudes,
// DARE's seeded random drop, the election of a sign per element, and seeds per key. Used by
// whole-checkpoint combinations (graft/combine.hpp, mergekit's arithmetic) and by weighted
// adapter merging (graft/lora/weighted.hpp, PEFT's), which differ in what they weigh and divide
// by, not in these steps.

#include <algorithm>
#include <cstdint>
#include <string_view>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

namespace graft::detail::merge_kernels {

/// `delta` with all but its ⌊density·n⌋ elements of largest magnitude set to zero (at least one
/// kept when `at_least_one`, as mergekit; none, as PEFT, when ⌊density·n⌋ is 0). Density >= 1
/// keeps everything.
inline torch::Tensor keep_largest(const torch::Tensor& delta, double density, bool at_least_one) {
  if (density >= 1) return delta;
  if (delta.numel() == 0) return torch::zeros_like(delta);
  auto k = static_cast<std::int64_t>(density * static_cast<double>(delta.numel()));
  if (at_least_one) k = std::max<std::int64_t>(1, k);
  if (k == 0) return torch::zeros_like(delta);
  auto idx = std::get<1>(delta.abs().reshape(-1).to(torch::kFloat).topk(k, 0, true, false));
  auto mask = torch::zeros({delta.numel()}, delta.options());
  mask.index_fill_(0, idx, 1);
  return delta * mask.reshape_as(delta);
}

/// SplitMix64: a key's and an input's seed from a combination's.
inline std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline std::uint64_t key_seed(std::uint64_t seed, std::string_view key, std::size_t input) {
  std::uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a of the key
  for (unsigned char c : key) h = (h ^ c) * 0x100000001b3ull;
  return mix(mix(seed ^ h) + input);
}

/// DARE's mask: each element kept (1) with probability `density`, from a generator seeded
/// with `seed`, in `like`'s dtype and shape.
inline torch::Tensor keep_mask(const torch::Tensor& like, double density, std::uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::bernoulli(torch::full_like(like, density), gen);
}

/// TIES's election over tensors stacked on dimension 0: 1 where an element's sign is the
/// elected one, else 0 (in `stacked`'s dtype). The elected sign is that of the elements' sum
/// ("total") or of the sum of their signs ("frequency"); a zero sum elects +.
inline torch::Tensor agreeing(const torch::Tensor& stacked, bool by_frequency) {
  auto sign = stacked.sign();
  auto votes = by_frequency ? sign.sum(0) : stacked.sum(0);
  auto elected = (votes >= 0).to(stacked.scalar_type()) * 2 - 1;
  return (sign == elected).to(stacked.scalar_type());
}

} // namespace graft::detail::merge_kernels
