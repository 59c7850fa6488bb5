#pragma once
// LoRA adapters on the layers a selector picks, and PEFT's adapter folders.
#include <graft/lora/adapters.hpp>
#include <graft/lora/peft.hpp>
