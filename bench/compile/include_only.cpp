// Compile-cost probe: the baseline unit, including graft but not using it.
#include <graft/graft.hpp>

#include "torch_only.cpp"
