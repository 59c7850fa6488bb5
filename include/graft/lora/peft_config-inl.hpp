#pragma once
// The definitions of lora/peft_config.hpp.

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
#include <graft/lora/peft_config.hpp>
#include <graft/lora/adapters.hpp>
#include <graft/walk/walk.hpp>

namespace graft::lora {

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
  if (regex) return graft::detail::full_match(*regex, path, what);
  return std::any_of(names.begin(), names.end(), [&](const std::string& n) {
    return path == n || (path.size() > n.size() && path.ends_with(n) && path[path.size() - n.size() - 1] == '.');
  });
}

} // namespace detail

GRAFT_FUNC adapter_config read_adapter_config(const std::string& folder) {
  namespace fs = std::filesystem;
  std::string file = fs::is_directory(folder) ? (fs::path(folder) / "adapter_config.json").string() : folder;
  if (!fs::exists(file)) throw io_error(fmt::format("no adapter_config.json in '{}'", folder), {.file = file});
  adapter_config c;
  nlohmann::ordered_json j;
  try {
    c.json = detail::read_text(file);
    j = nlohmann::ordered_json::parse(c.json);
  } catch (const nlohmann::json::exception& e) {
    throw format_error(fmt::format("'{}' is not valid JSON: {}", file, e.what()), {.file = file, .file_in_message = true});
  }
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
/// PEFT never puts an adapter in or on a modules_to_save module: a path with a listed name as
/// one of its segments.
inline bool inside_saved(const adapter_config& c, std::string_view path) {
  return std::any_of(c.modules_to_save.begin(), c.modules_to_save.end(), [&](const std::string& n) {
    return graft::detail::full_match(fmt::format("(^|.*\\.){}($|\\..*)", n), path, "modules_to_save");
  });
}
} // namespace detail

GRAFT_FUNC std::vector<std::string> peft_targets(const torch::nn::Module& model, const adapter_config& config) {
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

GRAFT_FUNC std::string peft_config_json(const adapters& a, std::string_view base_model_name_or_path) {
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
  try {
    return j.dump(2) + "\n";
  } catch (const nlohmann::json::exception&) {
    throw format_error("a module path or base_model_name_or_path is not valid UTF-8");
  }
}

} // namespace graft::lora
