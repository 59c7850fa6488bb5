// libFuzzer target for the torch.save reader: any bytes must give a value or a graft::error,
// never a crash, a foreign exception or a huge allocation. Not built by CMake; see
// docs/formats-torch-save.md for the command line.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include <graft/formats/torch_save.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The reader maps a file: each input goes through one per-process temp file.
  static const std::string path = [] {
    std::string p = "/tmp/fuzz_torch_save_" + std::to_string(::getpid()) + ".pt";
    return p;
  }();
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    std::abort();
  }
  for (bool mmap : {true, false}) {
    try {
      auto v = graft::read_torch_save(path, {.mmap = mmap});
      // Touch every tensor's bytes so an out-of-bounds view would be caught by ASan.
      std::function<void(const graft::value&)> walk = [&](const graft::value& x) {
        if (x.is_tensor()) (void)x.as_tensor().clone();
        else if (x.is_dict()) for (auto& [k, e] : x.as_dict()) walk(e);
        else if (x.is_sequence()) for (auto& e : x.as_sequence().items) walk(e);
      };
      walk(v);
    } catch (const graft::error&) {
    }
  }
  return 0;
}
