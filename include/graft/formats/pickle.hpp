#pragma once
// The pickle subset torch.save writes: an allow-listed unpickler and a protocol-2 pickler.
#include <graft/formats/detail/pickle_reader.hpp>
#include <graft/formats/detail/pickle_writer.hpp>
