// The libFuzzer entry point of one target in targets.hpp, named at compile time by
// GRAFT_FUZZ_TARGET (tests/fuzz/CMakeLists.txt builds one fuzz_<name> per target).

#include "targets.hpp"

#ifndef GRAFT_FUZZ_TARGET
#error "define GRAFT_FUZZ_TARGET to the name of a function in targets.hpp"
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return graft::fuzz::GRAFT_FUZZ_TARGET(data, size);
}
