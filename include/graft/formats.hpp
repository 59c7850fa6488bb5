#pragma once
// Checkpoint formats: Python torch.save files, safetensors, libtorch archives; read(path) and
// save(path) for pipelines.
#include <graft/io/mapped_file.hpp>
#include <graft/formats/torch_save.hpp>
#include <graft/formats/safetensors.hpp>
#include <graft/formats/libtorch_archive.hpp>
#include <graft/formats/read.hpp>
