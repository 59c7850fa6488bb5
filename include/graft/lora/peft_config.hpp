#pragma once
// PEFT's adapter_config.json: reading it (with PEFT's rules for target_modules,
// exclude_modules, modules_to_save and rank/alpha patterns) and writing it for a set of adapters.
// Defined in peft_config-inl.hpp (compiled once in the separately compiled mode).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <torch/nn/module.h>

#include <graft/config.hpp>
#include <graft/lora/adapters.hpp>
#include <graft/lora/options.hpp>

namespace graft::lora {

/// An adapter_config.json, as far as LoRA uses it. PEFT's other keys are kept in `json` and
/// otherwise ignored, as PEFT ignores keys it does not know. graft's headers do not expose a
/// JSON type: parse `json` with any JSON library to read other keys.
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
  /// The whole file as read: JSON text.
  std::string json{};
};

/// Where the tensors of an adapter sit in the model PEFT saw: "base_model.model." + path.
inline constexpr std::string_view peft_prefix = "base_model.model.";

/// Reads `folder`/adapter_config.json (or a config file given directly). A format_error names
/// the file and the key for anything LoRA cannot honour (another peft_type, fan_in_fan_out,
/// layers_to_transform, lora_bias).
GRAFT_FUNC adapter_config read_adapter_config(const std::string& folder);

/// The module paths of `model` that `config` targets, by PEFT's rules, in the model's order:
/// target_modules matches (or "all-linear": every Linear), exclude_modules does not, and the
/// module is not one of modules_to_save.
GRAFT_FUNC std::vector<std::string> peft_targets(const torch::nn::Module& model, const adapter_config& config);

/// The adapter_config.json PEFT writes for these adapters, as the text lora::save writes (keys
/// in PEFT's order, two-space indent, a final newline): target_modules lists the wrapped
/// layers' full paths, modules_to_save the modules trained whole. A format_error naming the
/// string if a module path, pattern key or base_model_name_or_path is not valid UTF-8.
GRAFT_FUNC std::string peft_config_json(const adapters& a, std::string_view base_model_name_or_path = {});

/// The adapter_config.json for adapters with options `o` on exactly the layers `paths` (without
/// a model: target_modules is one anchored regular expression naming those paths), with
/// `modules_to_save`. A format_error as above.
GRAFT_FUNC std::string peft_config_json(const options& o, const std::vector<std::string>& paths,
                                        const std::vector<std::string>& modules_to_save = {},
                                        std::string_view base_model_name_or_path = {});

} // namespace graft::lora

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/lora/peft_config-inl.hpp>
#endif
