#pragma once
// The tensors of a PEFT adapter file, sorted by what they are for, and the factors paired by layer.

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/error.hpp>
#include <graft/formats/read.hpp>
#include <graft/lora/peft_config.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft::lora::detail {

/// The adapter file of a folder: adapter_model.safetensors, else adapter_model.bin.
inline std::string adapter_weights_file(const std::string& folder) {
  namespace fs = std::filesystem;
  for (auto* name : {"adapter_model.safetensors", "adapter_model.bin"})
    if (auto p = fs::path(folder) / name; fs::exists(p)) return p.string();
  throw io_error(fmt::format("no adapter_model.safetensors or adapter_model.bin in '{}'", folder), {.file = folder});
}

/// One tensor of an adapter file, with what it is for.
struct adapter_entry {
  enum class role { lora_A, lora_B, magnitude, bias, whole } what;
  std::string path;   ///< the model path it belongs to (a layer for lora_A/B, a tensor otherwise)
  std::string key;    ///< its key in the file
  torch::Tensor tensor;
  bool embedding = false;
};

/// Sorts an adapter file's keys into roles. `prefix` is stripped from every key (a key without
/// it is a key_error naming the file). PEFT's copies of a modules_to_save module's original
/// tensors ("...original_module...") are skipped: the base model has them.
inline std::vector<adapter_entry> adapter_entries(const state_dict& sd, std::string_view prefix, const std::string& file) {
  std::vector<adapter_entry> out;
  for (auto& e : sd) {
    std::string_view k = e.key;
    if (!k.starts_with(prefix))
      throw key_error(fmt::format("'{}': key '{}' does not start with '{}'", file, k, prefix), {.file = file, .key = e.key, .file_in_message = true});
    k.remove_prefix(prefix.size());
    auto take = [&](std::string_view suffix, adapter_entry::role r, bool emb) {
      if (!k.ends_with(suffix)) return false;
      auto path = k.substr(0, k.size() - suffix.size());
      if (path.ends_with('.')) path.remove_suffix(1);
      out.push_back({r, std::string(path), e.key, e.tensor, emb});
      return true;
    };
    if (k.find(".original_module.") != std::string_view::npos) continue;
    if (take("lora_A.weight", adapter_entry::role::lora_A, false) || take("lora_B.weight", adapter_entry::role::lora_B, false) ||
        take("lora_embedding_A", adapter_entry::role::lora_A, true) || take("lora_embedding_B", adapter_entry::role::lora_B, true) ||
        take("lora_magnitude_vector", adapter_entry::role::magnitude, false) ||
        take("lora_magnitude_vector.weight", adapter_entry::role::magnitude, false))
      continue;
    if (k.ends_with("base_layer.bias")) {
      auto path = std::string(k.substr(0, k.size() - std::string_view("base_layer.bias").size())) + "bias";
      out.push_back({adapter_entry::role::bias, std::move(path), e.key, e.tensor, false});
      continue;
    }
    std::string path(k);
    if (auto at = path.find(".modules_to_save."); at != std::string::npos) path.erase(at, std::string_view(".modules_to_save").size());
    out.push_back({k.ends_with("bias") ? adapter_entry::role::bias : adapter_entry::role::whole, std::move(path), e.key, e.tensor, false});
  }
  return out;
}

inline state_dict read_adapter_weights(const std::string& file) {
  return state_dict::from_value(read_value(file));
}

/// scale·ΔW for factors read from a file, in the shape of `base`.
inline torch::Tensor file_delta(const torch::Tensor& a, const torch::Tensor& b, bool embedding, const torch::Tensor& base,
                                double scale) {
  auto fa = a.to(torch::kFloat), fb = b.to(torch::kFloat);
  torch::Tensor d = embedding ? torch::matmul(fb, fa).t() : torch::matmul(fb.flatten(1), fa.flatten(1));
  return d.reshape(base.sizes()).mul_(scale);
}

inline double layer_scale(const adapter_config& c, std::string_view path) {
  auto r = value_for(c.options.rank_pattern, path, c.options.r, "rank_pattern");
  auto alpha = value_for(c.options.alpha_pattern, path, c.options.alpha, "alpha_pattern");
  return c.options.rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

/// An adapter file's entries split: each layer's lora_A and lora_B (either may be missing),
/// DoRA's magnitude vectors by layer, and the tensors copied whole (biases, modules_to_save).
struct paired_entries {
  std::map<std::string, std::pair<const adapter_entry*, const adapter_entry*>> factors;
  std::map<std::string, const adapter_entry*> magnitudes;
  std::vector<const adapter_entry*> others;
};
inline paired_entries pair_entries(const std::vector<adapter_entry>& entries) {
  paired_entries out;
  for (auto& e : entries) {
    if (e.what == adapter_entry::role::lora_A) out.factors[e.path].first = &e;
    else if (e.what == adapter_entry::role::lora_B) out.factors[e.path].second = &e;
    else if (e.what == adapter_entry::role::magnitude) out.magnitudes[e.path] = &e;
    else out.others.push_back(&e);
  }
  return out;
}

/// A key_error naming the file and the layer unless both its lora_A and lora_B are there.
inline void require_both(const std::string& file, const std::string& path,
                         const std::pair<const adapter_entry*, const adapter_entry*>& f) {
  if (!f.first || !f.second)
    throw key_error(fmt::format("'{}' has {} for '{}' but not {}", file, f.first ? "lora_A" : "lora_B", path, f.first ? "lora_B" : "lora_A"),
                    {.file = file, .key = path, .file_in_message = true});
}

/// The error for a DoRA magnitude vector in a folder whose config has use_dora false.
inline key_error stray_magnitude(const std::string& file, const std::string& key) {
  return key_error(fmt::format("'{}' is a DoRA magnitude vector, but the folder's adapter_config.json has use_dora false", key),
                   {.file = file, .key = key});
}

/// DoRA's merge of a file's adapter into a weight `w` (as float): m/‖w + d‖·(w + d), the norm
/// per output row (per column, an embedding's dimensions, when `embedding`).
inline torch::Tensor dora_merged(const torch::Tensor& w, const torch::Tensor& d, const torch::Tensor& m, bool embedding) {
  auto sum = w + d;
  if (embedding) return sum * (m.reshape({1, -1}) / sum.norm(2, {0}).reshape({1, -1}));
  std::vector<std::int64_t> rows(static_cast<std::size_t>(w.dim()), 1);
  rows[0] = -1;
  return sum * (m.reshape(rows) / sum.flatten(1).norm(2, {1}).reshape(rows));
}

} // namespace graft::lora::detail
