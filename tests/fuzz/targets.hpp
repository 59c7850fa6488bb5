#pragma once
// The fuzz entry points for graft's checkpoint parsers. Each takes arbitrary bytes and must
// either read them or throw one graft::error, which it swallows; anything else (a crash, a
// sanitizer report, a foreign exception, a tensor reaching outside its storage or the mapped
// file, a huge allocation) is a bug. The same functions run under libFuzzer
// (fuzz_entry.cpp, built by tests/fuzz/CMakeLists.txt with clang) and under replay.cpp, which
// the normal test build runs over the checked-in corpus and every saved reproducer.
//
// Declarations only, so the per-target libFuzzer translation units stay cheap to compile.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace graft::fuzz {

using entry_point = int (*)(const std::uint8_t* data, std::size_t size);

/// torch.save zip → read_torch_save (mmap and copy) and is_torch_save_file.
int torch_save(const std::uint8_t* data, std::size_t size);
/// A legacy torch.save stream → read_torch_save_legacy and is_legacy_torch_save_file.
int torch_save_legacy(const std::uint8_t* data, std::size_t size);
/// One safetensors file → read_safetensors (mmap and copy) and read_safetensors_metadata.
int safetensors(const std::uint8_t* data, std::size_t size);
/// A sharded checkpoint's model.safetensors.index.json, beside two fixed, valid shards.
int safetensors_index(const std::uint8_t* data, std::size_t size);
/// The zip reader alone: every record's local header, stored view and inflated bytes.
int zip(const std::uint8_t* data, std::size_t size);
/// The unpickler alone, over the bytes directly; storages come from a fixed-size stand-in.
int pickle(const std::uint8_t* data, std::size_t size);
/// graft::detect_format and graft::read(path).load(), every format behind one path.
int read(const std::uint8_t* data, std::size_t size);

struct target {
  std::string_view name;
  entry_point run;
};

inline constexpr target targets[] = {
    {"torch_save", torch_save}, {"torch_save_legacy", torch_save_legacy}, {"safetensors", safetensors},
    {"safetensors_index", safetensors_index}, {"zip", zip}, {"pickle", pickle}, {"read", read},
};

/// What the harness reports a bug against (a file name in replay, empty under libFuzzer).
void set_current_input(std::string_view name);

} // namespace graft::fuzz
