#pragma once
// Everything graft offers: selectors, freezing, param groups and schedules, state-dict
// pipelines, checkpoint formats and LoRA adapters.
#include <graft/error.hpp>
#include <graft/walk.hpp>
#include <graft/select.hpp>
#include <graft/transforms.hpp>
#include <graft/optim.hpp>
#include <graft/state_dict.hpp>
#include <graft/formats.hpp>
#include <graft/lora.hpp>
