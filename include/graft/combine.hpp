#pragma once
// Weight-space combinations of whole checkpoints: WiSE-FT interpolation, model soups (uniform,
// weighted, greedy), task arithmetic, TIES, DARE and SLERP, written one tensor at a time or
// used as a pipeline source (docs/combine.md).
#include <graft/combine/combine.hpp>
