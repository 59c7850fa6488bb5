#pragma once
// The module-tree walk: every parameter and buffer with its dotted path, in PyTorch's order.
#include <graft/walk/tensor_view.hpp>
#include <graft/walk/walk.hpp>
