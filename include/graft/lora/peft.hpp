#pragma once
// PEFT's adapter folders: adapter_config.json and adapter_model.safetensors (or the older
// adapter_model.bin, a torch.save file). save() writes what PeftModel.from_pretrained loads;
// load() reads what PEFT's save_pretrained writes, matching target_modules as PEFT does; and
// merge_into() folds an adapter folder into a plain checkpoint, with no model at all.

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
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <re2/re2.h>

#include <graft/error.hpp>
#include <graft/formats/read.hpp>
#include <graft/formats/safetensors/write.hpp>
#include <graft/io/detail/atomic_file.hpp>
#include <graft/lora/adapters.hpp>
#include <graft/select/regex.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/walk/walk.hpp>

namespace graft::lora {

/// An adapter_config.json, as far as LoRA uses it. PEFT's other keys are kept in `json` and
/// otherwise ignored, as PEFT ignores keys it does not know.
struct adapter_config {
  lora::options options{};
  /// target_modules as a string: one regular expression the whole module path must match.
  std::optional<std::string> target_regex{};
  /// target_modules as a list: module names, each matching a path equal to it or ending in
  /// "." + it.
  std::vector<std::string> target_names{};
  /// exclude_modules, by the same two rules.
  std::optional<std::string> exclude_regex{};
  std::vector<std::string> exclude_names{};
  /// modules_to_save: module names; a module whose path ends with one is trained and saved whole.
  std::vector<std::string> modules_to_save{};
  std::string base_model_name_or_path{};
  /// The whole file as read (or as written).
  nlohmann::ordered_json json{};
};

/// Where the tensors of an adapter sit in the model PEFT saw: "base_model.model." + path.
inline constexpr std::string_view peft_prefix = "base_model.model.";

namespace detail {

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw io_error(fmt::format("cannot open '{}'", path), {.file = path, .file_in_message = true});
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <class T>
std::vector<pattern_value<T>> read_patterns(const nlohmann::ordered_json& j, const char* name, const std::string& file) {
  std::vector<pattern_value<T>> out;
  if (!j.contains(name) || j[name].is_null()) return out;
  if (!j[name].is_object()) throw format_error(fmt::format("'{}': {} must be an object", file, name), {.file = file, .key = name, .file_in_message = true});
  for (auto& [k, v] : j[name].items()) {
    if (!v.is_number()) throw format_error(fmt::format("'{}': {}['{}'] must be a number", file, name, k), {.file = file, .key = name, .file_in_message = true});
    out.push_back({k, v.template get<T>()});
  }
  return out;
}

inline void read_targets(const nlohmann::ordered_json& j, const char* name, const std::string& file,
                         std::optional<std::string>& regex, std::vector<std::string>& names) {
  if (!j.contains(name) || j[name].is_null()) return;
  const auto& v = j[name];
  if (v.is_string()) regex = v.get<std::string>();
  else if (v.is_array() && std::all_of(v.begin(), v.end(), [](auto& e) { return e.is_string(); })) names = v.get<std::vector<std::string>>();
  else throw format_error(fmt::format("'{}': {} must be a string or a list of strings", file, name), {.file = file, .key = name, .file_in_message = true});
}

/// PEFT's check_target_module_exists for one path: a string is a full-match regex; a list
/// matches a path equal to a name or ending in "." + a name.
inline bool peft_matches(const std::optional<std::string>& regex, const std::vector<std::string>& names, std::string_view path,
                         std::string_view what) {
  if (regex) return full_match(*regex, path, what);
  return std::any_of(names.begin(), names.end(), [&](const std::string& n) {
    return path == n || (path.size() > n.size() && path.ends_with(n) && path[path.size() - n.size() - 1] == '.');
  });
}

} // namespace detail

/// Reads `folder`/adapter_config.json (or a config file given directly). A format_error names
/// the file and the key for anything LoRA cannot honour (another peft_type, DoRA, fan_in_fan_out,
/// layers_to_transform, lora_bias).
inline adapter_config read_adapter_config(const std::string& folder) {
  namespace fs = std::filesystem;
  std::string file = fs::is_directory(folder) ? (fs::path(folder) / "adapter_config.json").string() : folder;
  if (!fs::exists(file)) throw io_error(fmt::format("no adapter_config.json in '{}'", folder), {.file = file});
  adapter_config c;
  try {
    c.json = nlohmann::ordered_json::parse(detail::read_text(file));
  } catch (const nlohmann::json::exception& e) {
    throw format_error(fmt::format("'{}' is not valid JSON: {}", file, e.what()), {.file = file, .file_in_message = true});
  }
  auto& j = c.json;
  auto bad = [&](std::string_view key, std::string_view why) {
    throw format_error(fmt::format("'{}': {} {}", file, key, why), {.file = file, .key = std::string(key), .file_in_message = true});
  };
  if (!j.is_object()) bad("the file", "is not a JSON object");
  auto get = [&](const char* key, auto fallback) {
    using T = decltype(fallback);
    if (!j.contains(key) || j[key].is_null()) return fallback;
    try {
      return j[key].get<T>();
    } catch (const nlohmann::json::exception&) {
      bad(key, "has the wrong type");
    }
    return fallback;
  };
  if (auto type = get("peft_type", std::string("LORA")); type != "LORA") bad("peft_type", fmt::format("is '{}'; graft reads LoRA adapters only", type));
  if (get("use_dora", false)) bad("use_dora", "is true: DoRA adapters are not supported");
  if (get("fan_in_fan_out", false)) bad("fan_in_fan_out", "is true: transposed (Conv1D-style) weights are not supported");
  if (get("lora_bias", false)) bad("lora_bias", "is true: LoRA biases on lora_B are not supported");
  if (j.contains("layers_to_transform") && !j["layers_to_transform"].is_null()) bad("layers_to_transform", "is set: it is not supported");
  if (j.contains("target_parameters") && !j["target_parameters"].is_null()) bad("target_parameters", "is set: it is not supported");
  c.options.r = get("r", std::int64_t{8});
  c.options.alpha = get("lora_alpha", 8.0);
  c.options.dropout = get("lora_dropout", 0.0);
  c.options.rslora = get("use_rslora", false);
  auto bias = get("bias", std::string("none"));
  if (bias == "none") c.options.bias = bias_mode::none;
  else if (bias == "all") c.options.bias = bias_mode::all;
  else if (bias == "lora_only") c.options.bias = bias_mode::lora_only;
  else bad("bias", fmt::format("is '{}'; it must be 'none', 'all' or 'lora_only'", bias));
  if (j.contains("init_lora_weights")) {
    auto& v = j["init_lora_weights"];
    if (v.is_boolean()) c.options.init = v.get<bool>() ? init_mode::kaiming : init_mode::none;
    else if (v == "gaussian") c.options.init = init_mode::gaussian;
    // Other initializations (pissa, olora, loftq, ...) only matter for a new adapter; a file's
    // adapter brings its own weights.
  }
  c.options.rank_pattern = detail::read_patterns<std::int64_t>(j, "rank_pattern", file);
  c.options.alpha_pattern = detail::read_patterns<double>(j, "alpha_pattern", file);
  detail::read_targets(j, "target_modules", file, c.target_regex, c.target_names);
  detail::read_targets(j, "exclude_modules", file, c.exclude_regex, c.exclude_names);
  if (!c.target_regex && c.target_names.empty()) bad("target_modules", "is missing or empty");
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null()) c.modules_to_save = get("modules_to_save", std::vector<std::string>{});
  c.base_model_name_or_path = get("base_model_name_or_path", std::string());
  return c;
}

namespace detail {
/// PEFT's modules_to_save rule: a module whose path ends with a listed name is saved whole.
inline bool saved_whole(const adapter_config& c, std::string_view path) {
  return std::any_of(c.modules_to_save.begin(), c.modules_to_save.end(), [&](const std::string& n) { return path.ends_with(n); });
}
/// PEFT never puts an adapter in or on a modules_to_save module: a path with a listed name as
/// one of its segments.
inline bool inside_saved(const adapter_config& c, std::string_view path) {
  return std::any_of(c.modules_to_save.begin(), c.modules_to_save.end(), [&](const std::string& n) {
    return full_match(fmt::format("(^|.*\\.){}($|\\..*)", n), path, "modules_to_save");
  });
}
} // namespace detail

/// The module paths of `model` that `config` targets, by PEFT's rules, in the model's order:
/// target_modules matches (or "all-linear": every Linear), exclude_modules does not, and the
/// module is not one of modules_to_save.
inline std::vector<std::string> peft_targets(const torch::nn::Module& model, const adapter_config& config) {
  std::vector<std::string> out;
  const bool all_linear = config.target_regex && *config.target_regex == "all-linear";
  for_each_module(model, [&](const torch::nn::Module& m, std::string_view path) {
    if (path.empty() || detail::inside_saved(config, path)) return;
    if (all_linear ? !dynamic_cast<const torch::nn::LinearImpl*>(&m)
                   : !detail::peft_matches(config.target_regex, config.target_names, path, "target_modules"))
      return;
    if ((config.exclude_regex || !config.exclude_names.empty()) &&
        detail::peft_matches(config.exclude_regex, config.exclude_names, path, "exclude_modules"))
      return;
    out.emplace_back(path);
  });
  return out;
}

/// The adapter's tensors under the keys PEFT saves them with: prefix + path, lora_A.weight /
/// lora_B.weight (lora_embedding_A / _B for an embedding), a wrapped layer's bias as
/// base_layer.bias, other biases and modules_to_save tensors under their own paths.
inline std::vector<std::pair<std::string, torch::Tensor>> peft_tensors(const adapters& a, std::string_view prefix = peft_prefix) {
  std::map<std::string, const layer*, std::less<>> by_path;
  for (auto& l : a.layers()) by_path.emplace(l.path, &l);
  auto join = [&](std::string_view path) { return fmt::format("{}{}", prefix, path); };
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (auto& s : a.saved()) {
    auto owner = graft::lora::detail::parent_path(s.path);
    auto leaf = std::string_view(s.path).substr(owner.empty() ? 0 : owner.size() + 1);
    if (leaf == "weight" && (owner.ends_with("lora_A") || owner.ends_with("lora_B"))) {
      auto layer_path = graft::lora::detail::parent_path(owner);
      auto it = by_path.find(layer_path);
      if (it != by_path.end()) {
        bool a_factor = owner.ends_with("lora_A");
        auto sep = layer_path.empty() ? "" : ".";
        if (it->second->kind == layer_kind::embedding)
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

/// The adapter_config.json PEFT writes for these adapters: target_modules lists the wrapped
/// layers' full paths, modules_to_save the modules trained whole.
inline nlohmann::ordered_json peft_config_json(const adapters& a, std::string_view base_model_name_or_path = {}) {
  const auto& o = a.options();
  nlohmann::ordered_json j;
  std::vector<std::string> targets;
  for (auto& l : a.layers()) targets.push_back(l.path);
  j["peft_type"] = "LORA";
  j["task_type"] = nullptr;
  j["base_model_name_or_path"] = base_model_name_or_path.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(base_model_name_or_path);
  j["r"] = o.r;
  j["lora_alpha"] = o.alpha;
  j["lora_dropout"] = o.dropout;
  j["use_rslora"] = o.rslora;
  j["bias"] = std::string(to_string(o.bias));
  j["init_lora_weights"] = o.init == init_mode::gaussian ? nlohmann::ordered_json("gaussian") : nlohmann::ordered_json(o.init == init_mode::kaiming);
  // A list entry matches every path ending in "." + it; if that would take more modules than
  // the wrapped ones, the targets go as one anchored regular expression (PEFT full-matches a
  // string) so that the file names exactly these layers.
  std::vector<std::string> every;
  for_each_module(a.model(), [&](const torch::nn::Module&, std::string_view p) { every.emplace_back(p); });
  bool exact = std::none_of(every.begin(), every.end(), [&](const std::string& p) {
    return std::find(targets.begin(), targets.end(), p) == targets.end() && detail::peft_matches(std::nullopt, targets, p, "target_modules");
  });
  if (exact) {
    j["target_modules"] = targets;
  } else {
    std::string re;
    for (auto& t : targets) re += (re.empty() ? "" : "|") + RE2::QuoteMeta(t);
    j["target_modules"] = "(?:" + re + ")";
  }
  j["modules_to_save"] = a.report().modules_to_save.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(a.report().modules_to_save);
  auto patterns = [](const auto& ps) {
    nlohmann::ordered_json p = nlohmann::ordered_json::object();
    for (auto& e : ps) p[e.pattern] = e.value;
    return p;
  };
  j["rank_pattern"] = patterns(o.rank_pattern);
  j["alpha_pattern"] = patterns(o.alpha_pattern);
  j["fan_in_fan_out"] = false;
  j["use_dora"] = false;
  j["inference_mode"] = true;
  return j;
}

/// What save() and load() name the adapter's files.
struct save_options {
  std::string base_model_name_or_path{};  ///< recorded in the config (PEFT's field of that name)
  std::string prefix{peft_prefix};        ///< prepended to each model path in the file
};

/// Writes the adapters as a PEFT adapter folder: `folder`/adapter_config.json and
/// `folder`/adapter_model.safetensors (metadata {"format": "pt"}), each written atomically.
/// PEFT's PeftModel.from_pretrained(model, folder) loads it.
inline void save(const adapters& a, const std::string& folder, const save_options& opts = {}) {
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
  std::string text;
  try {
    text = peft_config_json(a, opts.base_model_name_or_path).dump(2) + "\n";
  } catch (const nlohmann::json::exception&) {
    throw format_error(fmt::format("cannot save to '{}': a module path or base_model_name_or_path is not valid UTF-8", folder),
                       {.file = folder, .file_in_message = true});
  }
  std::error_code ec;
  fs::create_directories(folder, ec);
  if (ec) throw io_error(fmt::format("cannot create the folder '{}': {}", folder, ec.message()), {.file = folder, .file_in_message = true});
  auto tensors = peft_tensors(a, opts.prefix);
  for (auto& [k, t] : tensors) t = t.detach();
  write_safetensors((fs::path(folder) / "adapter_model.safetensors").string(), tensors, {{"format", "pt"}});
  auto config = (fs::path(folder) / "adapter_config.json").string();
  graft::detail::write_atomically(config, [&](graft::detail::atomic_file& out) { out.write(text.data(), text.size()); });
}

namespace detail {

/// The adapter file of a folder: adapter_model.safetensors, else adapter_model.bin.
inline std::string adapter_weights_file(const std::string& folder) {
  namespace fs = std::filesystem;
  for (auto* name : {"adapter_model.safetensors", "adapter_model.bin"})
    if (auto p = fs::path(folder) / name; fs::exists(p)) return p.string();
  throw io_error(fmt::format("no adapter_model.safetensors or adapter_model.bin in '{}'", folder), {.file = folder});
}

/// One tensor of an adapter file, with what it is for.
struct adapter_entry {
  enum class role { lora_A, lora_B, bias, whole } what;
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
        take("lora_embedding_A", adapter_entry::role::lora_A, true) || take("lora_embedding_B", adapter_entry::role::lora_B, true))
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

} // namespace detail

/// How load() reads a folder.
struct load_options {
  std::string prefix{peft_prefix};  ///< stripped from each key of the file
};

/// Reads a PEFT adapter folder onto `model`: the layers its config targets (PEFT's matching
/// rules) get adapters with its ranks and scales and the file's weights; its modules_to_save
/// and biases are copied in. Every key of the file must land somewhere (a key_error names one
/// that matches no layer), every target layer must have both factors, and every shape must
/// agree (a shape_error names the key and both shapes). Transactional: on any error the model
/// is unchanged.
inline adapters load(torch::nn::Module& model, const std::string& folder, const load_options& opts = {}) {
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
  std::map<std::string, std::pair<const detail::adapter_entry*, const detail::adapter_entry*>> factors;
  std::vector<const detail::adapter_entry*> copies;
  for (auto& e : entries) {
    if (e.what == detail::adapter_entry::role::lora_A || e.what == detail::adapter_entry::role::lora_B) {
      auto it = std::find_if(plan.begin(), plan.end(), [&](auto& p) { return p.path == e.path; });
      if (it == plan.end())
        throw key_error(fmt::format("'{}' matches no LoRA layer of the model: '{}' is not among the layers target_modules picks", e.key, e.path),
                        err_ctx(e.key));
      auto& slot = factors[e.path];
      (e.what == detail::adapter_entry::role::lora_A ? slot.first : slot.second) = &e;
      continue;
    }
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
      throw shape_error(fmt::format("'{}' has shape {} but the model's '{}' has {}", e.key, e.tensor.sizes(), e.path, p->second.sizes()),
                        err_ctx(e.key));
    copies.push_back(&e);
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
        throw shape_error(fmt::format("'{}' has shape {} but the {} of '{}' ({} of rank {}) has [{}]", e->key, e->tensor.sizes(), name, p.path,
                                      graft::detail::short_type_name(typeid(*p.module)), r, fmt::join(want, ", ")),
                          err_ctx(e->key));
      if ((kind == layer_kind::embedding) != e->embedding)
        throw key_error(fmt::format("'{}' is {} factor but '{}' is {}", e->key, e->embedding ? "an embedding" : "a linear/conv",
                                    p.path, graft::detail::short_type_name(typeid(*p.module))),
                        err_ctx(e->key));
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
  opts_in.init = init_mode::none;  // the file's weights replace them
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
    }
    for (auto* e : copies) params.at(e->path).copy_(e->tensor);
  }
  out.refresh();
  return out;
}

/// What merge_into() did.
struct merge_report {
  std::vector<std::string> merged;    ///< weights the adapter was folded into
  std::vector<std::string> replaced;  ///< tensors replaced by the adapter's (biases, modules_to_save)
};

/// Folds the adapter folder into a plain state dict (keys = the model's paths): each target
/// layer's weight += scale·ΔW (a 4-D lora_A is a convolution's), biases and modules_to_save
/// tensors replaced. Needs no model. A key of the adapter that matches nothing in `sd` is a
/// key_error naming it; a shape that disagrees a shape_error. `sd` is unchanged on any error.
inline merge_report merge_into(state_dict& sd, const std::string& folder, const load_options& opts = {}) {
  auto config = read_adapter_config(folder);
  auto file = detail::adapter_weights_file(folder);
  auto entries = detail::adapter_entries(detail::read_adapter_weights(file), opts.prefix, file);
  std::map<std::string, std::pair<const detail::adapter_entry*, const detail::adapter_entry*>> factors;
  auto missing = [&](const std::string& key, const std::string& path) {
    auto near = graft::detail::nearest_names(path, sd.keys(), 1, true);
    return key_error(fmt::format("'{}' matches no tensor of the checkpoint (as '{}'){}", key, path,
                                 near.empty() ? std::string() : fmt::format("; nearest: '{}'", near[0])),
                     {.file = file, .key = key});
  };
  std::vector<std::pair<std::string, torch::Tensor>> updates;  // computed first, applied last
  merge_report rep;
  for (auto& e : entries) {
    if (e.what == detail::adapter_entry::role::lora_A || e.what == detail::adapter_entry::role::lora_B) {
      auto& slot = factors[e.path];
      (e.what == detail::adapter_entry::role::lora_A ? slot.first : slot.second) = &e;
      continue;
    }
    auto* target = sd.find(e.path);
    if (!target) throw missing(e.key, e.path);
    if (!target->tensor.sizes().equals(e.tensor.sizes()))
      throw shape_error(fmt::format("'{}' has shape {} but the checkpoint's '{}' has {}", e.key, e.tensor.sizes(), e.path, target->tensor.sizes()),
                        {.file = file, .key = e.key});
    updates.emplace_back(e.path, e.tensor.to(target->tensor.dtype()));
    rep.replaced.push_back(e.path);
  }
  for (auto& [path, f] : factors) {
    if (!f.first || !f.second)
      throw key_error(fmt::format("'{}' has {} for '{}' but not {}", file, f.first ? "lora_A" : "lora_B", path, f.first ? "lora_B" : "lora_A"),
                      {.file = file, .key = path, .file_in_message = true});
    auto key = path.empty() ? std::string("weight") : path + ".weight";
    auto* target = sd.find(key);
    if (!target) throw missing(f.first->key, key);
    const auto& w = target->tensor;
    auto a = f.first->tensor, b = f.second->tensor;
    bool emb = f.first->embedding;
    auto misfit = [&](std::string_view why) {
      return shape_error(fmt::format("'{}' {} and '{}' {} do not fit '{}' {}: {}", f.first->key, a.sizes(), f.second->key, b.sizes(), key,
                                     w.sizes(), why),
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
    updates.emplace_back(key, (w.to(torch::kFloat) + d).to(w.dtype()));
    rep.merged.push_back(key);
  }
  std::map<std::string, torch::Tensor, std::less<>> by_key(updates.begin(), updates.end());
  auto entries_out = sd.release_entries();
  for (auto& e : entries_out)
    if (auto it = by_key.find(e.key); it != by_key.end()) e.tensor = it->second;
  for (auto& e : entries_out) sd.insert(std::move(e));
  return rep;
}

} // namespace graft::lora
