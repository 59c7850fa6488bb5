#pragma once
// The definitions of lora/weighted.hpp.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/detail/join.hpp>
#include <graft/detail/merge_kernels.hpp>
#include <graft/error.hpp>
#include <graft/formats/safetensors/write.hpp>
#include <graft/io/detail/atomic_file.hpp>
#include <graft/lora/detail/peft_entries.hpp>
#include <graft/lora/peft_config.hpp>
#include <graft/lora/weighted.hpp>

namespace graft::lora {

namespace detail {

inline constexpr std::array<std::pair<adapter_combination, std::string_view>, 11> combination_names{{
    {adapter_combination::svd, "svd"},
    {adapter_combination::linear, "linear"},
    {adapter_combination::cat, "cat"},
    {adapter_combination::ties, "ties"},
    {adapter_combination::ties_svd, "ties_svd"},
    {adapter_combination::dare_linear, "dare_linear"},
    {adapter_combination::dare_ties, "dare_ties"},
    {adapter_combination::dare_linear_svd, "dare_linear_svd"},
    {adapter_combination::dare_ties_svd, "dare_ties_svd"},
    {adapter_combination::magnitude_prune, "magnitude_prune"},
    {adapter_combination::magnitude_prune_svd, "magnitude_prune_svd"},
}};

inline bool is_svd(adapter_combination c) { return to_string(c).ends_with("svd"); }

// What a combination does to a list of tensors (PEFT's merge_utils): trim to the largest
// magnitudes (ties, magnitude_prune), drop at random and rescale by 1/density (dare), elect a
// sign per element over the unweighted tensors and average the agreeing weighted ones by their
// count (ties, dare_ties); else the weighted sum.
struct merge_steps {
  bool trim = false, drop = false, elect = false;
};
inline merge_steps steps_of(adapter_combination c) {
  auto name = to_string(c);
  return {name.starts_with("ties") || name.starts_with("magnitude_prune"), name.starts_with("dare"),
          name.starts_with("ties") || name.starts_with("dare_ties")};
}

inline torch::Tensor weighted_merge(const std::vector<torch::Tensor>& ts, const std::vector<double>& w, const merge_steps& s,
                                    const weighted_options& o, std::string_view key) {
  namespace mk = graft::detail::merge_kernels;
  const double density = o.density.value_or(1);
  std::vector<torch::Tensor> kept;
  for (std::size_t i = 0; i < ts.size(); ++i) {
    auto t = ts[i];
    if (s.trim) t = mk::keep_largest(t, density, false);
    if (s.drop && density <= 0) t = torch::zeros_like(t);  // all dropped (PEFT would divide 0 by 0)
    else if (s.drop && density < 1) t = t * mk::keep_mask(t, density, mk::key_seed(o.seed, key, i)) / density;
    kept.push_back(t);
  }
  auto stacked = torch::stack(kept);
  auto weights = torch::tensor(w, torch::kDouble).to(stacked.scalar_type());
  while (weights.dim() < stacked.dim()) weights = weights.unsqueeze(-1);
  if (!s.elect) return (stacked * weights).sum(0);
  auto agree = mk::agreeing(stacked, o.majority == majority_sign::frequency);
  return (stacked * weights * agree).sum(0) / agree.sum(0).clamp_min(1);
}

// One input's factors for one layer.
struct weighted_part {
  std::size_t input;
  torch::Tensor a, b;
  double scale;
  std::string key_a, key_b, file;
};
struct weighted_layer {
  std::string path;
  bool embedding = false;
  std::vector<weighted_part> parts;
};

// `t` (rank `k` along `dim`) padded with zeros to rank `r`.
inline torch::Tensor pad_rank(const torch::Tensor& t, std::int64_t dim, std::int64_t r) {
  if (t.size(dim) == r) return t;
  auto shape = t.sizes().vec();
  shape[static_cast<std::size_t>(dim)] = r - t.size(dim);
  return torch::cat({t, torch::zeros(shape, t.options())}, dim);
}

} // namespace detail

GRAFT_FUNC std::string_view to_string(adapter_combination c) noexcept {
  for (auto& [v, name] : detail::combination_names)
    if (v == c) return name;
  return "?";
}

GRAFT_FUNC adapter_combination adapter_combination_from_string(std::string_view name) {
  std::vector<std::string> names;
  for (auto& [v, n] : detail::combination_names) {
    if (n == name) return v;
    names.emplace_back(n);
  }
  throw option_error(fmt::format("unknown combination type '{}'; PEFT's are {}", name, graft::detail::join(names, ", ")));
}

GRAFT_FUNC weighted_report combine_adapters(const std::vector<std::string>& inputs, const std::vector<double>& weights,
                                            const std::string& out, const weighted_options& options) {
  namespace fs = std::filesystem;
  if (inputs.empty()) throw option_error("combine_adapters: no input adapter");
  if (weights.size() != inputs.size())
    throw option_error(fmt::format("combine_adapters: {} weights for {} input adapters", weights.size(), inputs.size()));
  for (double w : weights)
    if (!std::isfinite(w)) throw option_error(fmt::format("combine_adapters: weight {} is not finite", w));
  auto combination = inputs.size() == 1 ? adapter_combination::linear : options.combination;  // as PEFT
  const auto steps = detail::steps_of(combination);
  if (steps.trim || steps.drop) {
    if (!options.density)
      throw option_error(fmt::format("combine_adapters: combination '{}' needs a density", to_string(combination)));
    if (!(*options.density >= 0 && *options.density <= 1))
      throw option_error(fmt::format("combine_adapters: density must be in [0, 1], not {}", *options.density));
  }
  if (options.svd_rank && *options.svd_rank <= 0)
    throw option_error(fmt::format("combine_adapters: svd_rank must be positive, not {}", *options.svd_rank));
  if (options.svd_clamp && !(*options.svd_clamp >= 0 && *options.svd_clamp <= 1))
    throw option_error(fmt::format("combine_adapters: svd_clamp must be in [0, 1], not {}", *options.svd_clamp));

  // Every input read and checked before anything is computed or written.
  std::vector<detail::weighted_layer> layers;
  std::map<std::string, std::size_t, std::less<>> index;
  std::vector<std::int64_t> config_ranks;
  double dropout = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const auto& folder = inputs[i];
    auto config = read_adapter_config(folder);
    if (i == 0) dropout = config.options.dropout;
    if (config.options.dora)
      throw option_error(fmt::format("'{}' is a DoRA adapter (use_dora): its magnitude vectors cannot be weighted with the factors, "
                                     "and PEFT's add_weighted_adapter does not combine them either",
                                     folder),
                         {.file = folder});
    if (config.options.init == init_mode::pissa || config.options.init == init_mode::olora)
      throw option_error(fmt::format("'{}' is a PiSSA or OLoRA adapter, trained against residual base weights: save it converted "
                                     "to plain LoRA (save_options::convert_to_lora, PEFT's path_initial_model_for_weight_conversion) "
                                     "before combining it",
                                     folder),
                         {.file = folder});
    std::int64_t config_rank = config.options.r;
    for (auto& p : config.options.rank_pattern) config_rank = std::max(config_rank, p.value);
    config_ranks.push_back(config_rank);
    auto file = detail::adapter_weights_file(folder);
    auto entries = detail::adapter_entries(detail::read_adapter_weights(file), peft_prefix, file);
    auto [factors, magnitudes, others] = detail::pair_entries(entries);
    if (!magnitudes.empty()) throw detail::stray_magnitude(file, magnitudes.begin()->second->key);
    if (!others.empty())
      throw option_error(fmt::format("'{}' holds '{}', a bias or modules_to_save tensor: combine_adapters weighs lora_A and lora_B "
                                     "only (PEFT's add_weighted_adapter cannot merge modules_to_save either)",
                                     file, others.front()->key),
                         {.file = file, .key = others.front()->key});
    for (auto& [path, f] : factors) {
      detail::require_both(file, path, f);
      const auto& a = f.first->tensor;
      const auto& b = f.second->tensor;
      if (a.dim() < 2 || b.dim() < 2 || a.size(0) != b.size(1) || a.size(0) == 0 || !a.is_floating_point() || !b.is_floating_point())
        throw shape_error(fmt::format("'{}' {} and '{}' {} are not the lora_A and lora_B of one layer", f.first->key,
                                      graft::detail::bracketed(a.sizes()), f.second->key, graft::detail::bracketed(b.sizes())),
                          {.file = file, .key = f.first->key});
      auto [it, fresh] = index.try_emplace(path, layers.size());
      if (fresh) layers.push_back({path, f.first->embedding, {}});
      auto& layer = layers[it->second];
      if (!layer.parts.empty()) {
        const auto& first = layer.parts.front();
        auto tail = [](const torch::Tensor& t, int from) { return t.sizes().slice(static_cast<std::size_t>(from)).vec(); };
        if (layer.embedding != f.first->embedding || tail(a, 1) != tail(first.a, 1) || b.size(0) != first.b.size(0) ||
            tail(b, 2) != tail(first.b, 2))
          throw shape_error(fmt::format("the adapters differ for '{}': '{}' {} in '{}' but '{}' {} in '{}'", path, f.first->key,
                                        graft::detail::bracketed(a.sizes()), file, first.key_a,
                                        graft::detail::bracketed(first.a.sizes()), first.file),
                            {.file = file, .key = f.first->key});
      }
      layer.parts.push_back({i, a, b, detail::layer_scale(config, path), f.first->key, f.second->key, file});
    }
  }
  if (layers.empty()) throw key_error(fmt::format("combine_adapters: the adapters in {} hold no lora_A/lora_B", graft::detail::join(inputs, ", ")));

  // The output's rank, as PEFT's: one input rank (each layer's too) for the types that
  // combine the factors element by element; their sum for cat; svd_rank or the largest for SVD.
  std::int64_t r = 0;
  if (combination == adapter_combination::cat) {
    for (auto v : config_ranks) r += v;
  } else if (detail::is_svd(combination)) {
    r = options.svd_rank.value_or(*std::max_element(config_ranks.begin(), config_ranks.end()));
  } else {
    r = config_ranks.front();
    for (std::size_t i = 1; i < inputs.size(); ++i)
      if (config_ranks[i] != r)
        throw option_error(fmt::format("combination '{}' needs one rank in every adapter: '{}' has r={} but '{}' has r={} "
                                       "(cat or an SVD type combines different ranks)",
                                       to_string(combination), inputs[0], r, inputs[i], config_ranks[i]));
    for (auto& l : layers)
      for (auto& p : l.parts)
        if (p.a.size(0) != l.parts.front().a.size(0))
          throw shape_error(fmt::format("combination '{}' needs one rank per layer: '{}' has rank {} in '{}' but {} in '{}'",
                                        to_string(combination), l.path, l.parts.front().a.size(0), l.parts.front().file,
                                        p.a.size(0), p.file),
                            {.file = p.file, .key = p.key_a});
  }

  weighted_report report{combination, r, {}, {}};
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  torch::NoGradGuard no_grad;
  for (auto& l : layers) {
    report.layers.push_back(l.path);
    if (l.parts.size() != inputs.size()) report.partial.push_back(l.path);
    const auto out_dtype = l.parts.front().a.scalar_type();
    const auto dtype = out_dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
    std::vector<torch::Tensor> as, bs;
    std::vector<double> ws;
    for (auto& p : l.parts) {
      as.push_back(p.a.to(dtype));
      bs.push_back(p.b.to(dtype));
      ws.push_back(weights[p.input]);
    }
    torch::Tensor a, b;
    if (combination == adapter_combination::cat) {
      std::vector<torch::Tensor> scaled;
      for (std::size_t k = 0; k < as.size(); ++k) scaled.push_back(as[k] * (ws[k] * l.parts[k].scale));
      a = torch::cat(scaled, 0);
      b = torch::cat(bs, 1);
    } else if (!detail::is_svd(combination)) {
      // Each side weighted by √|w·scale|, the sign on lora_A's side only.
      std::vector<double> wa, wb;
      for (std::size_t k = 0; k < ws.size(); ++k) {
        double v = ws[k] * l.parts[k].scale;
        wa.push_back(std::sqrt(std::abs(v)) * (v >= 0 ? 1 : -1));
        wb.push_back(std::sqrt(std::abs(v)));
      }
      a = detail::weighted_merge(as, wa, steps, options, l.path + ".lora_A");
      b = detail::weighted_merge(bs, wb, steps, options, l.path + ".lora_B");
    } else {
      std::vector<torch::Tensor> deltas;
      for (std::size_t k = 0; k < as.size(); ++k) deltas.push_back(torch::matmul(bs[k].flatten(1), as[k].flatten(1)) * l.parts[k].scale);
      auto delta = detail::weighted_merge(deltas, ws, steps, options, l.path);
      auto [u, sv, vh] = torch::linalg_svd(delta, false);
      const auto k = std::min<std::int64_t>(r, sv.size(0));
      u = u.slice(1, 0, k) * sv.slice(0, 0, k);
      vh = vh.slice(0, 0, k);
      if (options.svd_clamp) {
        auto hi = torch::quantile(torch::cat({u.flatten(), vh.flatten()}), *options.svd_clamp).item<double>();
        u = u.clamp(-hi, hi);
        vh = vh.clamp(-hi, hi);
      }
      auto a_shape = as.front().sizes().vec();
      auto b_shape = bs.front().sizes().vec();
      a_shape[0] = k;
      b_shape[1] = k;
      a = vh.reshape(a_shape);
      b = u.reshape(b_shape);
    }
    a = detail::pad_rank(a, 0, r).to(out_dtype).contiguous();
    b = detail::pad_rank(b, 1, r).to(out_dtype).contiguous();
    auto sep = l.path.empty() ? "" : ".";
    tensors.emplace_back(fmt::format("{}{}{}{}", peft_prefix, l.path, sep, l.embedding ? "lora_embedding_A" : "lora_A.weight"), a);
    tensors.emplace_back(fmt::format("{}{}{}{}", peft_prefix, l.path, sep, l.embedding ? "lora_embedding_B" : "lora_B.weight"), b);
  }

  lora::options o;
  o.r = r;
  o.alpha = static_cast<double>(r);
  o.dropout = dropout;
  std::string text;
  try {
    text = peft_config_json(o, report.layers, {}, options.base_model_name_or_path);
  } catch (const format_error& e) {
    throw format_error(fmt::format("cannot save to '{}': {}", out, e.message()), {.file = out, .file_in_message = true});
  }
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) throw io_error(fmt::format("cannot create the folder '{}': {}", out, ec.message()), {.file = out, .file_in_message = true});
  write_safetensors((fs::path(out) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  graft::detail::write_atomically((fs::path(out) / "adapter_config.json").string(),
                                  [&](graft::detail::atomic_file& f) { f.write(text.data(), text.size()); });
  return report;
}

} // namespace graft::lora
