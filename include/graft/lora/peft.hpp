#pragma once
// PEFT's adapter folders: adapter_config.json and adapter_model.safetensors (or the older
// adapter_model.bin, a torch.save file). save() writes what PeftModel.from_pretrained loads;
// load() reads what PEFT's save_pretrained writes, matching target_modules as PEFT does; and
// merge_into() folds an adapter folder into a plain checkpoint, with no model at all.
// Defined in peft-inl.hpp (compiled once in the separately compiled mode).

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <graft/config.hpp>
#include <graft/lora/adapters.hpp>
#include <graft/lora/peft_config.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft::lora {

/// The adapter's tensors under the keys PEFT saves them with: prefix + path, lora_A.weight /
/// lora_B.weight (lora_embedding_A / _B for an embedding), a wrapped layer's bias as
/// base_layer.bias, other biases and modules_to_save tensors under their own paths.
GRAFT_FUNC std::vector<std::pair<std::string, torch::Tensor>> peft_tensors(const adapters& a, std::string_view prefix = peft_prefix);

/// What save() and load() name the adapter's files.
struct save_options {
  std::string base_model_name_or_path{};  ///< recorded in the config (PEFT's field of that name)
  std::string prefix{peft_prefix};        ///< prepended to each model path in the file
  /// PiSSA and OLoRA adapters (whose base weights are residuals): write a plain LoRA adapter
  /// for the original weights instead, as PEFT's path_initial_model_for_weight_conversion does:
  /// A' = [A; A0], B' = [B, -B0] (the starting factors), twice the rank, the same scale. A
  /// "pissa_niter_N" adapter must be saved so: no load can repeat its random SVD.
  bool convert_to_lora = false;
};

/// Writes the adapters as a PEFT adapter folder: `folder`/adapter_config.json and
/// `folder`/adapter_model.safetensors (metadata {"format": "pt"}), each written atomically.
/// PEFT's PeftModel.from_pretrained(model, folder) loads it onto the original model (PiSSA and
/// OLoRA folders included: PEFT, as lora::load, turns the base into the residual again).
GRAFT_FUNC void save(const adapters& a, const std::string& folder, const save_options& opts = {});

/// How load() reads a folder.
struct load_options {
  std::string prefix{peft_prefix};  ///< stripped from each key of the file
};

/// Reads a PEFT adapter folder onto `model`: the layers its config targets (PEFT's matching
/// rules) get adapters with its ranks and scales and the file's weights; its modules_to_save
/// and biases are copied in. Every key of the file must land somewhere (a key_error names one
/// that matches no layer), every target layer must have both factors, and every shape must
/// agree (a shape_error names the key and both shapes). A "pissa" or "olora" folder first turns
/// each target's weight into the residual PEFT trained against, as PEFT's load does.
/// Transactional: on any error the model is unchanged.
GRAFT_FUNC adapters load(torch::nn::Module& model, const std::string& folder, const load_options& opts = {});

/// What hot_swap() did.
struct swap_report {
  std::vector<std::string> swapped;  ///< layers that took the folder's factors
  std::vector<std::string> padded;   ///< of those, layers whose rank in the folder was smaller (zero-padded)
  std::vector<std::string> zeroed;   ///< layers the folder does not adapt: their adapters now add nothing
};

/// Replaces the weights of loaded or attached adapters in place with those of another adapter
/// folder made for the same model, as peft.utils.hotswap.hotswap_adapter: the same tensors
/// (an optimizer, a scheduler or a serving loop holding them goes on with the new values, no
/// rebuild), each layer's scale taken from the folder's config. The folder may adapt fewer
/// layers (theirs are zeroed, adding nothing) or use a smaller rank (zero-padded, the same
/// product); a layer these adapters do not wrap, a larger rank, another DoRA setting, a PiSSA
/// or OLoRA folder (its base weights differ), or a tensor that is not one these adapters save
/// is refused by name, and a shape that disagrees is a shape_error, all before anything
/// changes. Merged adapters are refused (a state_error): unmerge() first.
GRAFT_FUNC swap_report hot_swap(adapters& a, const std::string& folder, const load_options& opts = {});

/// What merge_into() did.
struct merge_report {
  std::vector<std::string> merged;    ///< weights the adapter was folded into
  std::vector<std::string> replaced;  ///< tensors replaced by the adapter's (biases, modules_to_save)
};

/// Folds the adapter folder into a plain state dict (keys = the model's paths): each target
/// layer's weight += scale·ΔW (a 4-D lora_A is a convolution's; DoRA rescales the rows; PiSSA
/// and OLoRA first take their starting product off the weight, as PEFT's load does), biases
/// and modules_to_save tensors replaced. Needs no model. A key of the adapter that matches nothing in `sd` is a
/// key_error naming it; a shape that disagrees a shape_error. `sd` is unchanged on any error.
GRAFT_FUNC merge_report merge_into(state_dict& sd, const std::string& folder, const load_options& opts = {});

} // namespace graft::lora

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/lora/peft-inl.hpp>
#endif
