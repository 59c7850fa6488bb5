#pragma once
// State dicts and the pipelines that read, reshape and merge them.
#include <graft/state_dict/value.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/stages.hpp>
#include <graft/state_dict/adapt.hpp>
#include <graft/state_dict/policy.hpp>
#include <graft/state_dict/report.hpp>
#include <graft/state_dict/merge.hpp>
#include <graft/state_dict/reinit.hpp>
