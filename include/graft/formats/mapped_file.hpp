#pragma once
// graft::mapped_file is part of the io layer, <graft/io/mapped_file.hpp>; this path still works.
#include <graft/io/mapped_file.hpp>
