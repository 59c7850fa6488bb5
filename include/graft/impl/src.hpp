#pragma once
// graft's separately compiled part: the definitions of every GRAFT_FUNC function (the
// checkpoint readers and writers, read()/save(), merge, and the non-template code beneath the
// selectors, param groups, errors, state dicts and schedulers) and the walks graft uses.
// Include this header in exactly one translation unit of a program whose every unit defines
// GRAFT_SEPARATE_COMPILATION; CMake's graft::compiled target does that for you.
#ifndef GRAFT_SEPARATE_COMPILATION
#error "graft/impl/src.hpp is the separately compiled part of graft: define GRAFT_SEPARATE_COMPILATION for every translation unit (or link CMake's graft::compiled instead)"
#endif

#include <graft/combine/combine-inl.hpp>
#include <graft/error-inl.hpp>
#include <graft/formats/libtorch_archive-inl.hpp>
#include <graft/formats/read-inl.hpp>
#include <graft/formats/safetensors/read-inl.hpp>
#include <graft/formats/safetensors/write-inl.hpp>
#include <graft/formats/torch_save/legacy-inl.hpp>
#include <graft/formats/torch_save/read-inl.hpp>
#include <graft/formats/torch_save/write-inl.hpp>
#include <graft/lora/peft-inl.hpp>
#include <graft/lora/peft_config-inl.hpp>
#include <graft/lora/weighted-inl.hpp>
#include <graft/optim/detail/named_param_groups-inl.hpp>
#include <graft/optim/detail/param_group_spec-inl.hpp>
#include <graft/optim/schedules/concepts-inl.hpp>
#include <graft/optim/schedules/scheduler-inl.hpp>
#include <graft/select/glob-inl.hpp>
#include <graft/select/regex-inl.hpp>
#include <graft/select/select-inl.hpp>
#include <graft/state_dict/merge-inl.hpp>
#include <graft/state_dict/report-inl.hpp>
#include <graft/state_dict/stages-inl.hpp>
#include <graft/state_dict/state_dict-inl.hpp>
#include <graft/state_dict/value-inl.hpp>
#include <graft/walk/walk-inl.hpp>
