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
#include <type_traits>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <re2/re2.h>

#include <graft/error.hpp>
#include <graft/formats/detail/json.hpp>
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

using graft::detail::json;

[[noreturn]] inline void bad_config(const std::string& file, std::string_view key, std::string_view why) {
  throw format_error(fmt::format("'{}': {} {}", file, key, why), {.file = file, .key = std::string(key), .file_in_message = true});
}

inline std::vector<std::string> strings_of(const json& v, const std::string& file, const char* name) {
  std::vector<std::string> out;
  if (!v.is_array()) bad_config(file, name, fmt::format("is a JSON {}, not a list of strings", v.type_name()));
  for (const auto& e : v.elements()) {
    if (!e.is_string()) bad_config(file, name, fmt::format("holds a JSON {}, not only strings", e.type_name()));
    out.push_back(e.as_string());
  }
  return out;
}

template <class T>
std::vector<pattern_value<T>> read_patterns(const json& j, const char* name, const std::string& file) {
  std::vector<pattern_value<T>> out;
  const auto* patterns = j.find_set(name);
  if (!patterns) return out;
  if (!patterns->is_object()) bad_config(file, name, fmt::format("is a JSON {}, not an object", patterns->type_name()));
  for (const auto& [k, v] : patterns->members()) {
    if constexpr (std::is_integral_v<T>) {
      if (!v.as_integer()) bad_config(file, fmt::format("{}['{}']", name, k), "is not an integer");
      out.push_back({k, *v.as_integer()});
    } else {
      if (!v.is_number()) bad_config(file, fmt::format("{}['{}']", name, k), "is not a number");
      out.push_back({k, v.as_double()});
    }
  }
  return out;
}

inline void read_targets(const json& j, const char* name, const std::string& file, std::optional<std::string>& regex,
                         std::vector<std::string>& names) {
  const auto* v = j.find_set(name);
  if (!v) return;
  if (v->is_string()) regex = v->as_string();
  else if (v->is_array()) names = strings_of(*v, file, name);
  else bad_config(file, name, fmt::format("is a JSON {}, not a string or a list of strings", v->type_name()));
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
  c.json = detail::read_text(file);
  const auto j = detail::json::parse(c.json, file, 0);
  auto bad = [&](std::string_view key, std::string_view why) { detail::bad_config(file, key, why); };
  if (!j.is_object()) bad("the file", fmt::format("is a JSON {}, not an object", j.type_name()));
  // The value of `key`, or `fallback` when it is absent or null; a value of another type than
  // the fallback's is an error naming the key.
  auto get = [&](const char* key, auto fallback) {
    using T = decltype(fallback);
    const auto* v = j.find_set(key);
    if (!v) return fallback;
    auto wrong = [&](std::string_view wanted) { bad(key, fmt::format("is a JSON {}, not {}", v->type_name(), wanted)); };
    if constexpr (std::is_same_v<T, bool>) {
      if (!v->is_boolean()) wrong("true or false");
      return v->as_bool();
    } else if constexpr (std::is_same_v<T, std::int64_t>) {
      if (!v->as_integer()) wrong("an integer");
      return *v->as_integer();
    } else if constexpr (std::is_same_v<T, double>) {
      if (!v->is_number()) wrong("a number");
      return v->as_double();
    } else if constexpr (std::is_same_v<T, std::string>) {
      if (!v->is_string()) wrong("a string");
      return v->as_string();
    } else {
      return detail::strings_of(*v, file, key);
    }
  };
  if (auto type = get("peft_type", std::string("LORA")); type != "LORA") bad("peft_type", fmt::format("is '{}'; graft reads LoRA adapters only", type));
  if (get("fan_in_fan_out", false)) bad("fan_in_fan_out", "is true: transposed (Conv1D-style) weights are not supported");
  if (get("lora_bias", false)) bad("lora_bias", "is true: LoRA biases on lora_B are not supported");
  if (j.find_set("layers_to_transform")) bad("layers_to_transform", "is set: it is not supported");
  if (j.find_set("target_parameters")) bad("target_parameters", "is set: it is not supported");
  c.options.r = get("r", std::int64_t{8});
  c.options.alpha = get("lora_alpha", 8.0);
  c.options.dropout = get("lora_dropout", 0.0);
  c.options.rslora = get("use_rslora", false);
  c.options.dora = get("use_dora", false);
  auto bias = get("bias", std::string("none"));
  if (bias == "none") c.options.bias = bias_mode::none;
  else if (bias == "all") c.options.bias = bias_mode::all;
  else if (bias == "lora_only") c.options.bias = bias_mode::lora_only;
  else bad("bias", fmt::format("is '{}'; it must be 'none', 'all' or 'lora_only'", bias));
  if (const auto* v = j.find("init_lora_weights")) {
    if (v->is_boolean()) c.options.init = v->as_bool() ? init_mode::kaiming : init_mode::none;
    else if (v->is_string() && v->as_string() == "gaussian") c.options.init = init_mode::gaussian;
    else if (v->is_string() && v->as_string() == "pissa") c.options.init = init_mode::pissa;
    else if (v->is_string() && v->as_string() == "olora") c.options.init = init_mode::olora;
    else if (v->is_string()) {
      // PiSSA and OLoRA change the base weights when PEFT creates the adapter (W minus the
      // initial B·A), and PEFT does that again when it loads such a folder onto the original
      // base; graft does the same for "pissa" and "olora", whose decompositions are exact. The
      // others are refused rather than loaded onto unchanged weights, which would compute other
      // outputs without a word: pissa_niter_N draws a random SVD, whose residual PEFT's load
      // cannot repeat either; CorDA needs the training data's covariance, LoftQ a quantizer.
      const auto& init = v->as_string();
      const bool changes_base = init.starts_with("pissa_niter_") || init == "corda" || init == "loftq";
      if (changes_base)
        bad("init_lora_weights",
            fmt::format("is '{}': PEFT changes the base weights for such an adapter and changes them again when it "
                        "loads the folder, {}; save the adapter as a plain LoRA adapter for the original weights "
                        "(graft's save_options::convert_to_lora, PEFT's path_initial_model_for_weight_conversion)",
                        init, init.starts_with("pissa_niter_") ? "from a random draw no load can repeat"
                                                               : "from data or a quantizer graft does not have"));
      bad("init_lora_weights", fmt::format("is '{}', an initialization graft does not know: it may change the base "
                                           "weights as PiSSA does, so the folder is refused", init));
    } else {
      bad("init_lora_weights", "is neither a boolean nor a string");
    }
  }
  c.options.rank_pattern = detail::read_patterns<std::int64_t>(j, "rank_pattern", file);
  c.options.alpha_pattern = detail::read_patterns<double>(j, "alpha_pattern", file);
  detail::read_targets(j, "target_modules", file, c.target_regex, c.target_names);
  detail::read_targets(j, "exclude_modules", file, c.exclude_regex, c.exclude_names);
  if (!c.target_regex && c.target_names.empty()) bad("target_modules", "is missing or empty");
  c.modules_to_save = get("modules_to_save", std::vector<std::string>{});
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

namespace detail {
// The text of an adapter_config.json, its target_modules given (a list or a regex).
inline std::string config_text(const options& o, const std::vector<std::string>& targets, json target_modules,
                               const std::vector<std::string>& saved, std::string_view base_model_name_or_path) {
  auto utf8 = [](std::string_view what, std::string_view s) {
    if (auto problem = graft::detail::not_utf8(what, s)) throw format_error(*problem + ", and JSON text must be");
  };
  utf8("base_model_name_or_path", base_model_name_or_path);
  for (const auto& t : targets) utf8("module path", t);
  for (const auto& m : saved) utf8("module path", m);
  for (const auto& p : o.rank_pattern) utf8("rank_pattern key", p.pattern);
  for (const auto& p : o.alpha_pattern) utf8("alpha_pattern key", p.pattern);

  auto j = json::object();
  j.append("peft_type", "LORA");
  j.append("task_type", nullptr);
  j.append("base_model_name_or_path", base_model_name_or_path.empty() ? json() : json(base_model_name_or_path));
  j.append("r", o.r);
  j.append("lora_alpha", o.alpha);
  j.append("lora_dropout", o.dropout);
  j.append("use_rslora", o.rslora);
  j.append("bias", to_string(o.bias));
  j.append("init_lora_weights", o.init == init_mode::gaussian ? json("gaussian")
                                : o.init == init_mode::olora  ? json("olora")
                                : o.init == init_mode::pissa  ? json(o.pissa_niter ? fmt::format("pissa_niter_{}", *o.pissa_niter) : "pissa")
                                                              : json(o.init == init_mode::kaiming));
  j.append("target_modules", std::move(target_modules));
  j.append("modules_to_save", saved.empty() ? json() : json::array_of(saved));
  auto patterns = [](const auto& ps) {
    auto p = json::object();
    for (auto& e : ps) p[e.pattern] = e.value;
    return p;
  };
  j.append("rank_pattern", patterns(o.rank_pattern));
  j.append("alpha_pattern", patterns(o.alpha_pattern));
  j.append("fan_in_fan_out", false);
  j.append("use_dora", o.dora);
  j.append("inference_mode", true);
  return j.dump(2) + "\n";
}
// One anchored regular expression naming exactly `paths` (PEFT full-matches a string).
inline std::string exact_targets(const std::vector<std::string>& paths) {
  std::string re;
  for (auto& t : paths) re += (re.empty() ? "" : "|") + RE2::QuoteMeta(t);
  return "(?:" + re + ")";
}
} // namespace detail

namespace detail {
// The adapter_config.json of `a`, with options `o` (the adapters' own, or those of a converted copy).
inline std::string adapters_config_text(const adapters& a, const options& o, std::string_view base_model_name_or_path);
} // namespace detail

GRAFT_FUNC std::string peft_config_json(const adapters& a, std::string_view base_model_name_or_path) {
  return detail::adapters_config_text(a, a.options(), base_model_name_or_path);
}

namespace detail {
inline std::string adapters_config_text(const adapters& a, const options& o, std::string_view base_model_name_or_path) {
  std::vector<std::string> targets;
  for (auto& l : a.layers()) targets.push_back(l.path);
  // A list entry matches every path ending in "." + it; if that would take more modules than
  // the wrapped ones, the targets go as one anchored regular expression so that the file names
  // exactly these layers.
  std::vector<std::string> every;
  for_each_module(a.model(), [&](const torch::nn::Module&, std::string_view p) { every.emplace_back(p); });
  bool exact = std::none_of(every.begin(), every.end(), [&](const std::string& p) {
    return std::find(targets.begin(), targets.end(), p) == targets.end() && detail::peft_matches(std::nullopt, targets, p, "target_modules");
  });
  auto target_modules = exact ? json::array_of(targets) : json(exact_targets(targets));
  return config_text(o, targets, std::move(target_modules), a.report().modules_to_save, base_model_name_or_path);
}
} // namespace detail

GRAFT_FUNC std::string peft_config_json(const options& o, const std::vector<std::string>& paths,
                                        const std::vector<std::string>& modules_to_save, std::string_view base_model_name_or_path) {
  return detail::config_text(o, paths, detail::json(detail::exact_targets(paths)), modules_to_save, base_model_name_or_path);
}

} // namespace graft::lora
