#pragma once
// The io layer under the state dicts and the checkpoint formats: memory-mapped files (public),
// and in io/detail/ atomic writes, direct file-to-tensor copies and the zip container.
#include <graft/io/mapped_file.hpp>
