#pragma once
// The definitions of lora/peft.hpp.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <re2/re2.h>

#include <graft/detail/join.hpp>
#include <graft/error.hpp>
#include <graft/lora/peft.hpp>
#include <graft/formats/detail/json.hpp>
#include <graft/formats/safetensors/write.hpp>
#include <graft/io/detail/atomic_file.hpp>
#include <graft/lora/adapters.hpp>
#include <graft/lora/detail/peft_entries.hpp>
#include <graft/lora/peft_config.hpp>
#include <graft/lora/peft_config-inl.hpp>
#include <graft/select/regex.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/walk/walk.hpp>

namespace graft::lora {

namespace detail {
/// PEFT's modules_to_save rule: a module whose path ends with a listed name is saved whole.
inline bool saved_whole(const adapter_config& c, std::string_view path) {
  return std::any_of(c.modules_to_save.begin(), c.modules_to_save.end(), [&](const std::string& n) { return path.ends_with(n); });
}
} // namespace detail

GRAFT_FUNC std::vector<std::pair<std::string, torch::Tensor>> peft_tensors(const adapters& a, std::string_view prefix) {
  std::map<std::string, const layer*, std::less<>> by_path;
  for (auto& l : a.layers()) by_path.emplace(l.path, &l);
  auto join = [&](std::string_view path) { return fmt::format("{}{}", prefix, path); };
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& s : a.saved()) {
    auto owner = graft::lora::detail::parent_path(s.path);
    auto leaf = std::string_view(s.path).substr(owner.empty() ? 0 : owner.size() + 1);
    if (leaf == "weight" && (owner.ends_with("lora_A") || owner.ends_with("lora_B") || owner.ends_with("lora_magnitude_vector"))) {
      auto layer_path = graft::lora::detail::parent_path(owner);
      auto it = by_path.find(layer_path);
      if (it != by_path.end()) {
        bool a_factor = owner.ends_with("lora_A");
        auto sep = layer_path.empty() ? "" : ".";
        if (owner.ends_with("lora_magnitude_vector"))  // PEFT's key has no ".weight"
          out.emplace_back(fmt::format("{}{}{}lora_magnitude_vector", prefix, layer_path, sep), s.tensor);
        else if (it->second->kind == layer_kind::embedding)
          out.emplace_back(fmt::format("{}{}{}{}", prefix, layer_path, sep, a_factor ? "lora_embedding_A" : "lora_embedding_B"), s.tensor);
        else
          out.emplace_back(fmt::format("{}{}{}{}", prefix, layer_path, sep, a_factor ? "lora_A.weight" : "lora_B.weight"), s.tensor);
        continue;
      }
    }
    if (leaf == "bias" && by_path.contains(owner)) {
      out.emplace_back(fmt::format("{}{}{}base_layer.bias", prefix, owner, owner.empty() ? "" : "."), s.tensor);
      continue;
    }
    out.emplace_back(join(s.path), s.tensor);
  }
  return out;
}

GRAFT_FUNC void save(const adapters& a, const std::string& folder, const save_options& opts) {
  namespace fs = std::filesystem;
  if (a.layers().empty()) throw state_error("these adapters were unloaded: there is nothing to save");
  // PEFT saves whole every module whose path ends with a listed name: refuse a name that
  // would take another module along.
  for (auto& name : a.report().modules_to_save)
    for_each_module(a.model(), [&](const torch::nn::Module&, std::string_view p) {
      if (p != name && p.ends_with(name) && std::find(a.report().modules_to_save.begin(), a.report().modules_to_save.end(), p) ==
                                                a.report().modules_to_save.end())
        throw option_error(fmt::format("cannot save to '{}': PEFT would read modules_to_save '{}' as '{}' too (it matches "
                                       "every module path ending in it)",
                                       folder, name, p));
    });
  // PiSSA / OLoRA: as they are (PEFT re-applies the start on load), or converted to plain LoRA.
  const auto& o = a.options();
  const bool decomposed = o.init == init_mode::pissa || o.init == init_mode::olora;
  if (decomposed && o.pissa_niter && !opts.convert_to_lora)
    throw option_error(fmt::format("cannot save to '{}' as 'pissa_niter_{}': a load would draw another random SVD than this "
                                   "adapter started from; save it with save_options::convert_to_lora",
                                   folder, *o.pissa_niter),
                       {.file = folder, .file_in_message = true});
  auto written = o;
  if (decomposed && opts.convert_to_lora) {
    // Twice the rank at the same scale: alpha doubles (rsLoRA: times √2).
    const double alpha_factor = o.rslora ? std::sqrt(2.0) : 2.0;
    written.init = init_mode::kaiming;
    written.pissa_niter.reset();
    written.r *= 2;
    written.alpha *= alpha_factor;
    for (auto& p : written.rank_pattern) p.value *= 2;
    for (auto& p : written.alpha_pattern) p.value *= alpha_factor;
  }
  std::string text;
  try {
    text = detail::adapters_config_text(a, written, opts.base_model_name_or_path);
  } catch (const format_error& e) {
    throw format_error(fmt::format("cannot save to '{}': {}", folder, e.message()), {.file = folder, .file_in_message = true});
  }
  // Every name is checked before the folder is made: a safetensors header is JSON, UTF-8 only.
  auto tensors = peft_tensors(a, opts.prefix);
  for (auto& [k, t] : tensors) {
    if (auto bad = graft::detail::invalid_utf8_at(k); bad != std::string::npos)
      throw format_error(fmt::format("cannot save to '{}': tensor name {} is not valid UTF-8 (byte {}; the prefix is {})", folder,
                                     graft::detail::quoted(k), bad, graft::detail::quoted(opts.prefix)),
                         {.file = folder, .file_in_message = true});
    t = t.detach();
  }
  if (decomposed && opts.convert_to_lora) {
    // ΔW = B·A - B0·A0 = [B, -B0]·[A; A0]
    std::map<std::string, std::pair<torch::Tensor, torch::Tensor>, std::less<>> converted;
    for (auto& l : a.layers())
      converted[fmt::format("{}{}.lora_A.weight", opts.prefix, l.path)].first = torch::cat({l.A.detach(), l.initial_A}, 0);
    for (auto& l : a.layers())
      converted[fmt::format("{}{}.lora_B.weight", opts.prefix, l.path)].second = torch::cat({l.B.detach(), -l.initial_B}, 1);
    for (auto& [k, t] : tensors)
      if (auto it = converted.find(k); it != converted.end()) t = it->second.first.defined() ? it->second.first : it->second.second;
  }
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) throw io_error(fmt::format("cannot create the folder '{}': {}", folder, ec.message()), {.file = folder, .file_in_message = true});
  write_safetensors((fs::path(folder) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  auto config = (fs::path(folder) / "adapter_config.json").string();
  graft::detail::write_atomically(config, [&](graft::detail::atomic_file& out) { out.write(text.data(), text.size()); });
}

GRAFT_FUNC adapters load(torch::nn::Module& model, const std::string& folder, const load_options& opts) {
  auto config = read_adapter_config(folder);
  auto file = detail::adapter_weights_file(folder);
  auto sd = detail::read_adapter_weights(file);
  auto entries = detail::adapter_entries(sd, opts.prefix, file);

  std::vector<detail::layer_plan> plan;
  std::map<std::string, torch::nn::Module*, std::less<>> modules;
  for_each_module(model, [&](torch::nn::Module& m, std::string_view path) { modules.emplace(std::string(path), &m); });
  for (auto& path : peft_targets(model, config)) plan.push_back({path, modules.at(path)});
  if (plan.empty())
    throw selection_error(fmt::format("target_modules of '{}' match no module of {}", folder, model.name()),
                          {.file = folder});

  for (auto& p : plan) graft::lora::detail::classify(*p.module, p.path, "target_modules");

  // The model's tensors by path, for biases and modules_to_save (buffers too: PEFT saves a
  // module to save with its statistics).
  std::map<std::string, torch::Tensor, std::less<>> params;
  for (auto t : walk(model, walk_options::state())) params.emplace(std::string(t.path()), t.tensor());
  auto err_ctx = [&](const std::string& key) { return error_context{.file = file, .key = key}; };

  // Check every entry against the plan before touching the model.
  auto [factors, magnitudes, copies] = detail::pair_entries(entries);
  auto planned = [&](const std::string& path) { return std::any_of(plan.begin(), plan.end(), [&](auto& p) { return p.path == path; }); };
  for (auto& [path, f] : factors)
    if (!planned(path)) {
      auto& key = (f.first ? f.first : f.second)->key;
      throw key_error(fmt::format("'{}' matches no LoRA layer of the model: '{}' is not among the layers target_modules picks", key, path),
                      err_ctx(key));
    }
  for (auto& [path, m] : magnitudes) {
    if (!config.options.dora) throw detail::stray_magnitude(file, m->key);
    if (!planned(path))
      throw key_error(fmt::format("'{}' matches no LoRA layer of the model: '{}' is not among the layers target_modules picks", m->key, path),
                      err_ctx(m->key));
  }
  for (const auto* entry : copies) {
    const auto& e = *entry;
    auto p = params.find(e.path);
    if (p == params.end()) {
      std::vector<std::string> names;
      for (auto& [k, v] : params) names.push_back(k);
      auto near = graft::detail::nearest_names(e.path, std::move(names), 1, true);
      throw key_error(fmt::format("'{}' matches no tensor of the model (as '{}'){}", e.key, e.path,
                                  near.empty() ? std::string() : fmt::format("; nearest: '{}'", near[0])),
                      err_ctx(e.key));
    }
    if (!p->second.sizes().equals(e.tensor.sizes()))
      throw shape_error(fmt::format("'{}' has shape {} but the model's '{}' has {}", e.key, graft::detail::bracketed(e.tensor.sizes()), e.path, graft::detail::bracketed(p->second.sizes())),
                        err_ctx(e.key));
  }
  for (auto& p : plan) {
    auto it = factors.find(p.path);
    auto kind = graft::lora::detail::classify(*p.module, p.path, "target_modules").first;
    auto base = p.module->named_parameters(false)["weight"];
    auto r = detail::value_for(config.options.rank_pattern, p.path, config.options.r, "rank_pattern");
    auto [sa, sb] = detail::factor_shapes(kind, base, r);
    for (int i = 0; i < 2; ++i) {
      const detail::adapter_entry* e = it == factors.end() ? nullptr : (i == 0 ? it->second.first : it->second.second);
      auto name = i == 0 ? "lora_A" : "lora_B";
      if (!e)
        throw key_error(fmt::format("'{}' has no {} for '{}', a layer target_modules picks", file, name, p.path),
                        {.file = file, .key = p.path, .file_in_message = true});
      const auto& want = i == 0 ? sa : sb;
      if (e->tensor.sizes() != c10::IntArrayRef(want))
        throw shape_error(fmt::format("'{}' has shape {} but the {} of '{}' ({} of rank {}) has {}", e->key, graft::detail::bracketed(e->tensor.sizes()), name, p.path,
                                      graft::detail::short_type_name(typeid(*p.module)), r, graft::detail::bracketed(want)),
                          err_ctx(e->key));
      if ((kind == layer_kind::embedding) != e->embedding)
        throw key_error(fmt::format("'{}' is {} factor but '{}' is {}", e->key, e->embedding ? "an embedding" : "a linear/conv",
                                    p.path, graft::detail::short_type_name(typeid(*p.module))),
                        err_ctx(e->key));
    }
    if (config.options.dora) {
      auto m = magnitudes.find(p.path);
      if (m == magnitudes.end())
        throw key_error(fmt::format("'{}' has no lora_magnitude_vector for '{}', a layer target_modules picks (use_dora is true)", file, p.path),
                        {.file = file, .key = p.path, .file_in_message = true});
      auto want = detail::magnitude_shape(kind, base);
      if (m->second->tensor.sizes() != c10::IntArrayRef(want))
        throw shape_error(fmt::format("'{}' has shape {} but the DoRA magnitude of '{}' ({}) has {}", m->second->key,
                                      graft::detail::bracketed(m->second->tensor.sizes()), p.path,
                                      graft::detail::short_type_name(typeid(*p.module)), graft::detail::bracketed(want)),
                          err_ctx(m->second->key));
    }
  }

  // modules_to_save: the modules whose path ends with a listed name (PEFT's rule).
  std::string whole;
  for (auto& [path, m] : modules) {
    if (path.empty()) continue;
    if (!detail::saved_whole(config, path) || m->parameters().empty()) continue;
    whole += (whole.empty() ? "" : "|") + RE2::QuoteMeta(path) + "\\..+";
  }
  auto opts_in = config.options;
  // The file's weights replace the factors; PiSSA and OLoRA start so that the base becomes the
  // residual the file's factors were trained against.
  if (opts_in.init != init_mode::pissa && opts_in.init != init_mode::olora) opts_in.init = init_mode::none;
  adapters out = whole.empty()
                     ? detail::attach_layers<detail::no_modules_to_save>(model, plan, opts_in, nullptr, "target_modules")
                     : [&] {
                         auto sel = graft::regex(whole);
                         return detail::attach_layers(model, plan, opts_in, &sel, "target_modules");
                       }();
  {
    torch::NoGradGuard no_grad;
    for (auto& l : out.layers()) {
      auto& f = factors.at(l.path);
      l.A.copy_(f.first->tensor);
      l.B.copy_(f.second->tensor);
      if (l.magnitude.defined()) l.magnitude.copy_(magnitudes.at(l.path)->tensor);
    }
    for (auto* e : copies) params.at(e->path).copy_(e->tensor);
  }
  out.refresh();
  return out;
}

GRAFT_FUNC swap_report hot_swap(adapters& a, const std::string& folder, const load_options& opts) {
  if (a.layers().empty()) throw state_error(fmt::format("cannot hot-swap '{}': these adapters were unloaded", folder));
  if (a.merged()) throw state_error(fmt::format("cannot hot-swap '{}' into merged adapters: unmerge() them first", folder));
  if (!a.enabled()) throw state_error(fmt::format("cannot hot-swap '{}' inside a disabled() scope", folder));
  if (a.options().init == init_mode::pissa || a.options().init == init_mode::olora)
    throw state_error(fmt::format("cannot hot-swap '{}' into PiSSA or OLoRA adapters: their base weights are residuals", folder));
  auto config = read_adapter_config(folder);
  if (config.options.dora != a.options().dora)
    throw option_error(fmt::format("cannot hot-swap '{}': its use_dora is {}, these adapters' {}", folder, config.options.dora,
                                   a.options().dora),
                       {.file = folder});
  if (config.options.init == init_mode::pissa || config.options.init == init_mode::olora)
    throw option_error(fmt::format("cannot hot-swap '{}': it is a PiSSA or OLoRA adapter, trained against other base weights",
                                   folder),
                       {.file = folder});
  auto file = detail::adapter_weights_file(folder);
  auto entries = detail::adapter_entries(detail::read_adapter_weights(file), opts.prefix, file);
  auto [factors, magnitudes, others] = detail::pair_entries(entries);
  auto& layers = detail::adapters_access::layers(a);
  std::map<std::string, layer*, std::less<>> by_path;
  for (auto& l : layers) by_path.emplace(l.path, &l);
  auto ctx = [&](const std::string& key) { return error_context{.file = file, .key = key}; };

  // Every check first.
  for (auto& [path, f] : factors) {
    const auto* any = f.first ? f.first : f.second;
    auto it = by_path.find(path);
    if (it == by_path.end())
      throw key_error(fmt::format("'{}' adapts '{}', a layer these adapters do not wrap: hot-swap cannot add layers", any->key, path),
                      ctx(any->key));
    detail::require_both(file, path, f);
    const auto& l = *it->second;
    const auto& na = f.first->tensor;
    const auto& nb = f.second->tensor;
    if (f.first->embedding != (l.kind == layer_kind::embedding))
      throw key_error(fmt::format("'{}' is {} factor but '{}' is {}", f.first->key, f.first->embedding ? "an embedding" : "a linear/conv",
                                  path, l.type),
                      ctx(f.first->key));
    const auto r = na.dim() >= 1 ? na.size(0) : 0;
    auto fits = [&](const torch::Tensor& t, const torch::Tensor& mine, int rank_dim) {
      if (t.dim() != mine.dim()) return false;
      for (int d = 0; d < t.dim(); ++d)
        if (d == rank_dim ? (t.size(d) != r) : (t.size(d) != mine.size(d))) return false;
      return true;
    };
    if (r == 0 || !fits(na, l.A, 0) || !fits(nb, l.B, 1))
      throw shape_error(fmt::format("'{}' {} and '{}' {} do not fit '{}' (lora_A {}, lora_B {})", f.first->key, graft::detail::bracketed(na.sizes()),
                                    f.second->key, graft::detail::bracketed(nb.sizes()), path, graft::detail::bracketed(l.A.sizes()),
                                    graft::detail::bracketed(l.B.sizes())),
                        ctx(f.first->key));
    if (r > l.r)
      throw shape_error(fmt::format("'{}' has rank {} but '{}' has rank {} here: hot-swap cannot grow a rank (attach or load "
                                    "with the larger rank first)",
                                    f.first->key, r, path, l.r),
                        ctx(f.first->key));
    if (l.magnitude.defined()) {
      auto m = magnitudes.find(path);
      if (m == magnitudes.end())
        throw key_error(fmt::format("'{}' has no lora_magnitude_vector for '{}' (use_dora is true)", file, path),
                        {.file = file, .key = path, .file_in_message = true});
      if (!m->second->tensor.sizes().equals(l.magnitude.sizes()))
        throw shape_error(fmt::format("'{}' has shape {} but the DoRA magnitude of '{}' has {}", m->second->key,
                                      graft::detail::bracketed(m->second->tensor.sizes()), path, graft::detail::bracketed(l.magnitude.sizes())),
                          ctx(m->second->key));
    }
  }
  for (auto& [path, m] : magnitudes)
    if (!factors.contains(path))
      throw key_error(fmt::format("'{}' has a lora_magnitude_vector for '{}' but no lora_A or lora_B", file, path), ctx(m->key));
  std::map<std::string, torch::Tensor, std::less<>> saved_by_key;
  for (auto& [k, t] : peft_tensors(a, opts.prefix)) saved_by_key.emplace(k, t);
  for (const auto* e : others) {
    auto it = saved_by_key.find(e->key);
    if (it == saved_by_key.end())
      throw key_error(fmt::format("'{}' is not a tensor these adapters save (a bias or a module to save of theirs): hot-swap "
                                  "replaces what the adapters hold",
                                  e->key),
                      ctx(e->key));
    if (!it->second.sizes().equals(e->tensor.sizes()))
      throw shape_error(fmt::format("'{}' has shape {} but these adapters' has {}", e->key, graft::detail::bracketed(e->tensor.sizes()),
                                    graft::detail::bracketed(it->second.sizes())),
                        ctx(e->key));
  }

  // Then the swap, in place.
  swap_report rep;
  {
    torch::NoGradGuard no_grad;
    for (auto& l : layers) {
      auto it = factors.find(l.path);
      l.A.zero_();
      l.B.zero_();
      if (it == factors.end()) {
        if (l.magnitude.defined()) l.magnitude.copy_(l.dora_norm().reshape(l.magnitude.sizes()));
        rep.zeroed.push_back(l.path);
        continue;
      }
      const auto r = it->second.first->tensor.size(0);
      l.A.slice(0, 0, r).copy_(it->second.first->tensor);
      l.B.slice(1, 0, r).copy_(it->second.second->tensor);
      if (l.magnitude.defined()) l.magnitude.copy_(magnitudes.at(l.path)->tensor);
      l.alpha = detail::value_for(config.options.alpha_pattern, l.path, config.options.alpha, "alpha_pattern");
      l.scale = detail::layer_scale(config, l.path);
      l.connect_own(a.options().dropout);
      rep.swapped.push_back(l.path);
      if (r < l.r) rep.padded.push_back(l.path);
    }
    for (const auto* e : others) saved_by_key.at(e->key).copy_(e->tensor);
  }
  a.refresh();
  return rep;
}

GRAFT_FUNC merge_report merge_into(state_dict& sd, const std::string& folder, const load_options& opts) {
  auto config = read_adapter_config(folder);
  auto file = detail::adapter_weights_file(folder);
  auto entries = detail::adapter_entries(detail::read_adapter_weights(file), opts.prefix, file);
  auto [factors, magnitudes, others] = detail::pair_entries(entries);
  auto missing = [&](const std::string& key, const std::string& path) {
    auto near = graft::detail::nearest_names(path, sd.keys(), 1, true);
    return key_error(fmt::format("'{}' matches no tensor of the checkpoint (as '{}'){}", key, path,
                                 near.empty() ? std::string() : fmt::format("; nearest: '{}'", near[0])),
                     {.file = file, .key = key});
  };
  std::vector<std::pair<std::string, torch::Tensor>> updates;  // computed first, applied last
  merge_report rep;
  for (const auto* entry : others) {
    const auto& e = *entry;
    auto* target = sd.find(e.path);
    if (!target) throw missing(e.key, e.path);
    if (!target->tensor.sizes().equals(e.tensor.sizes()))
      throw shape_error(fmt::format("'{}' has shape {} but the checkpoint's '{}' has {}", e.key, graft::detail::bracketed(e.tensor.sizes()), e.path, graft::detail::bracketed(target->tensor.sizes())),
                        {.file = file, .key = e.key});
    updates.emplace_back(e.path, e.tensor.to(target->tensor.dtype()));
    rep.replaced.push_back(e.path);
  }
  for (auto& [path, f] : factors) {
    detail::require_both(file, path, f);
    auto key = path.empty() ? std::string("weight") : path + ".weight";
    auto* target = sd.find(key);
    if (!target) throw missing(f.first->key, key);
    const auto& w = target->tensor;
    auto a = f.first->tensor, b = f.second->tensor;
    bool emb = f.first->embedding;
    auto misfit = [&](std::string_view why) {
      return shape_error(fmt::format("'{}' {} and '{}' {} do not fit '{}' {}: {}", f.first->key, graft::detail::bracketed(a.sizes()), f.second->key, graft::detail::bracketed(b.sizes()), key,
                                     graft::detail::bracketed(w.sizes()), why),
                         {.file = file, .key = f.first->key});
    };
    if (w.dim() < 2 || (emb && w.dim() != 2) || w.numel() == 0) throw misfit("the weight is not a non-empty matrix or kernel");
    if (a.dim() < 2 || b.dim() < 2 || a.size(0) == 0) throw misfit("the factors must be non-empty matrices or kernels");
    const std::int64_t r = a.size(0);
    std::int64_t in = emb ? w.size(0) : w.numel() / w.size(0), out = emb ? w.size(1) : w.size(0);
    if (b.size(0) != out || b.size(1) != r || b.numel() != out * r || a.numel() / r != in || a.numel() % r != 0)
      throw misfit("lora_B must be [out, r, 1...] and lora_A [r, in...]");
    if (auto want = detail::value_for(config.options.rank_pattern, path, config.options.r, "rank_pattern"); want != r)
      throw misfit(fmt::format("the config's rank for '{}' is {}", path, want));
    auto d = detail::file_delta(a, b, emb, w, detail::layer_scale(config, path));
    if (config.options.init == init_mode::pissa || config.options.init == init_mode::olora) {
      // The weight PEFT trained against is the residual W - scale·B0·A0 of the start.
      if (emb || w.dim() != 2 || r > std::min(w.size(0), w.size(1)))
        throw misfit(fmt::format("a '{}' adapter starts Linear layers only, of rank at most their smaller dimension",
                                 config.options.init == init_mode::pissa ? "pissa" : "olora"));
      auto [a0, b0] = detail::decomposed_start(w, r, detail::layer_scale(config, path), config.options.init, std::nullopt);
      d = d - torch::matmul(b0, a0) * detail::layer_scale(config, path);
    }
    auto m = magnitudes.find(path);
    if (!config.options.dora && m != magnitudes.end()) throw detail::stray_magnitude(file, m->second->key);
    if (config.options.dora && m == magnitudes.end())
      throw key_error(fmt::format("'{}' has no lora_magnitude_vector for '{}' (use_dora is true)", file, path),
                      {.file = file, .key = path, .file_in_message = true});
    if (m != magnitudes.end()) {
      const auto& mt = m->second->tensor;
      if (mt.numel() != out || mt.dim() < 1)
        throw shape_error(fmt::format("'{}' {} does not fit '{}' {}: a DoRA magnitude has one entry per {} ({})", m->second->key,
                                      graft::detail::bracketed(mt.sizes()), key, graft::detail::bracketed(w.sizes()),
                                      emb ? "embedding dimension" : "output row", out),
                          {.file = file, .key = m->second->key});
      updates.emplace_back(key, detail::dora_merged(w.to(torch::kFloat), d, mt.to(torch::kFloat), emb).to(w.dtype()));
    } else {
      updates.emplace_back(key, (w.to(torch::kFloat) + d).to(w.dtype()));
    }
    rep.merged.push_back(key);
  }
  for (auto& [path, m] : magnitudes)
    if (!factors.contains(path))
      throw key_error(fmt::format("'{}' has a lora_magnitude_vector for '{}' but no lora_A or lora_B", file, path),
                      {.file = file, .key = m->key, .file_in_message = true});
  std::map<std::string, torch::Tensor, std::less<>> by_key(updates.begin(), updates.end());
  auto entries_out = sd.release_entries();
  for (auto& e : entries_out)
    if (auto it = by_key.find(e.key); it != by_key.end()) e.tensor = it->second;
  for (auto& e : entries_out) sd.insert(std::move(e));
  return rep;
}

} // namespace graft::lora

