// libFuzzer target for the safetensors reader: any bytes must give a dict of tensors or a
// graft::format_error, never a crash, a foreign exception, an out-of-bounds view or a huge
// allocation. Not built by CMake; see docs/formats-safetensors.md for the command line.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

#include <graft/formats/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The reader maps a file: each input goes through one per-process temp file.
  static const std::string path = "/tmp/fuzz_safetensors_" + std::to_string(::getpid()) + ".safetensors";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  } else {
    std::abort();
  }
  for (bool mmap : {true, false}) {
    try {
      auto v = graft::read_safetensors(path, {.mmap = mmap});
      // Touch every byte of every tensor so a view past the map would be caught by ASan.
      for (auto& [k, t] : v.as_dict()) {
        const auto& x = t.as_tensor();
        if (x.numel() > 0)
          (void)torch::from_blob(x.data_ptr(), {x.numel() * static_cast<std::int64_t>(x.element_size())}, torch::kUInt8)
              .sum()
              .item<std::int64_t>();
      }
      (void)graft::read_safetensors_metadata(path);
    } catch (const graft::format_error&) {
    }
  }
  return 0;
}
