#pragma once
// Python torch.save files (zip format): read them into a graft::value tree, write one back.
#include <graft/formats/torch_save/read.hpp>
#include <graft/formats/torch_save/write.hpp>
