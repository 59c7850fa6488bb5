#pragma once
// Weighted merging of LoRA adapters, PEFT's add_weighted_adapter over adapter folders: several
// adapters trained on one base model become one adapter folder, by any of PEFT's combination
// types. Defined in weighted-inl.hpp (compiled once in the separately compiled mode).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <graft/config.hpp>

namespace graft::lora {

/// PEFT's combination_type values. Those without "_svd" combine lora_A and lora_B apart (each
/// weighted by ±√|weight·scale|): linear, ties, dare_* and magnitude_prune need one rank in
/// every input; cat stacks the factors (the ranks add up); the "_svd" types (and svd) combine
/// each layer's scale·B·A and factor the result again by SVD to the output rank.
enum class adapter_combination {
  svd,
  linear,
  cat,
  ties,
  ties_svd,
  dare_linear,
  dare_ties,
  dare_linear_svd,
  dare_ties_svd,
  magnitude_prune,
  magnitude_prune_svd
};
GRAFT_FUNC std::string_view to_string(adapter_combination c) noexcept;
/// The combination named as PEFT names it ("ties_svd"); an option_error listing the names otherwise.
GRAFT_FUNC adapter_combination adapter_combination_from_string(std::string_view name);

/// How TIES elects each element's sign: by the sum of the values (PEFT's "total") or of their
/// signs ("frequency").
enum class majority_sign { total, frequency };

/// add_weighted_adapter's settings, named as PEFT names them.
struct weighted_options {
  adapter_combination combination = adapter_combination::svd;  ///< combination_type (PEFT's default: svd)
  /// density: the fraction of each tensor kept, in [0, 1] (required by the ties, dare and
  /// magnitude_prune types; 1 keeps everything).
  std::optional<double> density{};
  lora::majority_sign majority = lora::majority_sign::total;  ///< majority_sign_method
  std::optional<std::int64_t> svd_rank{};  ///< the output rank of the SVD types (default: the largest input rank)
  std::optional<double> svd_clamp{};       ///< clamps the SVD factors to this quantile of their values, in [0, 1]
  /// The seed of the DARE types' random masks (PEFT draws them from torch's global generator):
  /// one seed, one result.
  std::uint64_t seed = 0;
  std::string base_model_name_or_path{};  ///< recorded in the written config
};

/// What combine_adapters() wrote.
struct weighted_report {
  adapter_combination combination;      ///< the combination used (linear for one input, as PEFT)
  std::int64_t r = 0;                   ///< the output's rank (lora_alpha = r: scale 1)
  std::vector<std::string> layers;      ///< the output's layers, sorted by path
  std::vector<std::string> partial;     ///< layers some inputs do not adapt (combined from those that do)
};

/// Combines the LoRA adapter folders `inputs` (made for one base model), weighted by `weights`
/// (one per input; negative weights subtract), into a new adapter folder `out`
/// (adapter_config.json + adapter_model.safetensors, each written atomically), as PEFT's
/// add_weighted_adapter makes a new adapter from loaded ones: its layers are every layer an
/// input adapts; its rank is the inputs' rank (cat: their sum; SVD types: svd_rank or the
/// largest), lora_alpha equal to it (scale 1). PeftModel.from_pretrained and lora::load read it;
/// graft-ckpt lora-merge folds it into a checkpoint. DoRA adapters and inputs that also carry
/// biases or modules_to_save tensors are refused by name (PEFT cannot weigh those either), as
/// are inputs whose factors for one layer disagree in shape; nothing is written then.
GRAFT_FUNC weighted_report combine_adapters(const std::vector<std::string>& inputs, const std::vector<double>& weights,
                                            const std::string& out, const weighted_options& options = {});

} // namespace graft::lora

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/lora/weighted-inl.hpp>
#endif
