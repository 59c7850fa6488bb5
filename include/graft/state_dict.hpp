#pragma once
// State dicts and the pipelines that read, reshape and merge them.
#include <graft/state_dict/value.hpp>
