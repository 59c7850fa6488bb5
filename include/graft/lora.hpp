#pragma once
// LoRA adapters on the layers a selector picks (on libtorch's layers or graft's own layer
// types), PEFT's adapter folders, and weighted merging of adapter folders.
#include <graft/lora/adapters.hpp>
#include <graft/lora/layers.hpp>
#include <graft/lora/loraplus.hpp>
#include <graft/lora/options.hpp>
#include <graft/lora/peft.hpp>
#include <graft/lora/peft_config.hpp>
#include <graft/lora/weighted.hpp>
