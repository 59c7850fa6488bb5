#pragma once
// safetensors files (single or sharded): read as memory-mapped tensor views, written atomically.
#include <graft/formats/safetensors/read.hpp>
#include <graft/formats/safetensors/write.hpp>
