#pragma once
// TorchScript modules as graft module trees: graft::script_module.
#include <graft/script/module.hpp>
