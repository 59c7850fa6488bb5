#pragma once
// Checkpoint formats: Python torch.save files, safetensors, libtorch archives.
#include <graft/formats/mapped_file.hpp>
