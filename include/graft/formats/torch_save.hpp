#pragma once
// Python torch.save files (the zip format and the legacy one): read them into a graft::value
// tree, write one back.
#include <graft/formats/torch_save/read.hpp>
#include <graft/formats/torch_save/write.hpp>
