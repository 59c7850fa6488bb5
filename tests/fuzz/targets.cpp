// The fuzz entry points declared in targets.hpp. Each writes its input where the parser under
// test expects it (a file in a private scratch folder, or a byte range for the unpickler), runs
// the parser in every mode it has, and then checks what came back: every tensor must lie inside
// its storage, a storage viewing the mapped file must lie inside the file, and every byte of
// every storage is read here, in instrumented code, so AddressSanitizer sees an overrun.

#include "targets.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <unordered_map>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <graft/error.hpp>
#include <graft/formats/detail/pickle_reader.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/read.hpp>
#include <graft/formats/safetensors.hpp>
#include <graft/formats/torch_save.hpp>
#include <graft/io/detail/zip.hpp>

namespace graft::fuzz {
namespace {

std::string& current_input() {
  static std::string name;
  return name;
}

// A harness-detected bug: say what and where, then abort so libFuzzer (or ctest) records it.
[[noreturn]] void bug(std::string_view what) {
  std::fprintf(stderr, "\ngraft fuzz: BUG%s%s: %.*s\n", current_input().empty() ? "" : " in ", current_input().c_str(),
               static_cast<int>(what.size()), what.data());
  std::fflush(stderr);
  std::abort();
}

// A folder of this process's own (tmpfs when there is one: every input is written to a file).
const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    std::string base = "/tmp";
    if (const char* t = std::getenv("TMPDIR"); t && *t) base = t;
    else if (std::filesystem::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0) base = "/dev/shm";
    std::string templ = base + "/graft-fuzz-XXXXXX";
    if (!::mkdtemp(templ.data())) bug(fmt::format("cannot create a scratch folder under {}", base));
    torch::set_num_threads(1);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch(), ec);
    });
    return std::filesystem::path(templ);
  }();
  return dir;
}

std::string write_input(const std::filesystem::path& path, const std::uint8_t* data, std::size_t size) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0)
    bug(fmt::format("cannot write the input to {}", path.string()));
  return path.string();
}

// GRAFT_FUZZ_VERBOSE=1 prints each graft::error a target swallows, to see why an input is refused.
void refused(const graft::error& e) {
  static const bool verbose = [] {
    const char* v = std::getenv("GRAFT_FUZZ_VERBOSE");
    return v && *v && std::string_view(v) != "0";
  }();
  if (verbose) std::fprintf(stderr, "%s\n", e.what());
}

volatile unsigned sink;

// Every check a returned tensor must pass; `file` is the mapping the reader was given, if known.
void check_tensor(const torch::Tensor& t, const mapped_file* file) {
  if (!t.defined()) bug("a reader returned an undefined tensor");
  if (!t.device().is_cpu() || !t.has_storage()) bug("a reader returned a tensor that is not a dense CPU tensor");
  const auto& st = t.storage();
  const std::size_t nbytes = st.nbytes();
  const auto* p = static_cast<const unsigned char*>(st.data_ptr().get());
  if (nbytes && !p) bug(fmt::format("a storage of {} bytes has no data", nbytes));

  if (t.numel() > 0) {
    // The lowest and highest element the tensor reaches, as storage indices.
    std::int64_t lo = t.storage_offset(), hi = lo, end = 0;
    bool overflow = false;
    for (std::int64_t d = 0; d < t.dim(); ++d) {
      std::int64_t span = 0;
      overflow |= __builtin_mul_overflow(t.size(d) - 1, t.stride(d), &span);
      overflow |= span < 0 ? __builtin_add_overflow(lo, span, &lo) : __builtin_add_overflow(hi, span, &hi);
    }
    overflow |= __builtin_add_overflow(hi, 1, &end) || __builtin_mul_overflow(end, t.element_size(), &end);
    if (overflow || lo < 0 || static_cast<std::uint64_t>(end) > nbytes)
      bug(fmt::format("a {} tensor of size {}, stride {}, offset {} reaches past its storage of {} bytes",
                      c10::toString(t.scalar_type()), t.sizes(), t.strides(), t.storage_offset(), nbytes));
  }

  if (file && nbytes) {
    const auto b = reinterpret_cast<std::uintptr_t>(file->data()), e = b + file->size();
    const auto s = reinterpret_cast<std::uintptr_t>(p);
    if (s >= b && s < e && nbytes > e - s)
      bug(fmt::format("a storage of {} bytes at file offset {} runs past the end of the mapped file ({} bytes)", nbytes,
                      s - b, file->size()));
    if (s < b && s + nbytes > b) bug("a storage overlaps the start of the mapped file");
  }

  unsigned sum = 0;
  for (std::size_t i = 0; i < nbytes; ++i) sum += p[i];
  sink = sum;
  // libtorch reads it too; bounded, since a stride-0 tensor can be valid and enormous.
  if (t.numel() <= (1 << 16)) (void)t.contiguous();
}

void check_value(const value& v, const mapped_file* file) {
  if (v.is_tensor()) check_tensor(v.as_tensor(), file);
  else if (v.is_dict())
    for (const auto& [k, e] : v.as_dict()) {
      check_value(k, file);
      check_value(e, file);
    }
  else if (v.is_sequence())
    for (const auto& e : v.as_sequence().items) check_value(e, file);
}

void touch(std::string_view s) {
  unsigned sum = 0;
  for (char c : s) sum += static_cast<unsigned char>(c);
  sink = sum;
}

// Runs `read(mmap)` with the file memory-mapped and copied, checking what it returns.
template <class Read>
void read_both_ways(Read&& read, const mapped_file* file) {
  for (bool mmap : {true, false}) {
    try {
      check_value(read(mmap), file);
    } catch (const graft::error& e) {
      refused(e);
    }
  }
}

void read_metadata(const std::string& path) {
  try {
    for (const auto& [k, v] : read_safetensors_metadata(path)) touch(k), touch(v);
  } catch (const graft::error& e) {
    refused(e);
  }
}

} // namespace

void set_current_input(std::string_view name) { current_input() = name; }

int torch_save(const std::uint8_t* data, std::size_t size) {
  auto file = mapped_file::open(write_input(scratch() / "input.pt", data, size));
  (void)is_torch_save_file(*file);
  read_both_ways([&](bool mmap) { return read_torch_save(file, {.mmap = mmap}); }, file.get());
  return 0;
}

int torch_save_legacy(const std::uint8_t* data, std::size_t size) {
  auto file = mapped_file::open(write_input(scratch() / "input.pt", data, size));
  (void)is_legacy_torch_save_file(*file);
  try {
    check_value(read_torch_save_legacy(file), file.get());
  } catch (const graft::error& e) {
    refused(e);
  }
  return 0;
}

int safetensors(const std::uint8_t* data, std::size_t size) {
  auto path = write_input(scratch() / "input.safetensors", data, size);
  auto file = mapped_file::open(path);
  (void)is_safetensors_file(*file);
  read_both_ways([&](bool mmap) { return read_safetensors(file, {.mmap = mmap}); }, file.get());
  read_metadata(path);
  return 0;
}

int safetensors_index(const std::uint8_t* data, std::size_t size) {
  // Two valid shards beside the index, written once; the fuzzed index decides what is read.
  static const std::filesystem::path dir = [] {
    auto d = scratch() / "index";
    std::filesystem::create_directories(d);
    write_safetensors((d / "a.safetensors").string(),
                      {{"x", torch::arange(6, torch::kFloat32).reshape({2, 3})}, {"y", torch::arange(4, torch::kInt64)}});
    write_safetensors((d / "b.safetensors").string(),
                      {{"z", torch::zeros({0, 2}, torch::kFloat16)}, {"w", torch::ones({1}, torch::kBFloat16)}},
                      {{"format", "pt"}});
    return d;
  }();
  auto path = write_input(dir / "model.safetensors.index.json", data, size);
  read_both_ways([&](bool mmap) { return read_safetensors(path, {.mmap = mmap}); }, nullptr);
  read_metadata(path);
  return 0;
}

int zip(const std::uint8_t* data, std::size_t size) {
  auto file = mapped_file::open(write_input(scratch() / "input.zip", data, size));
  const auto b = reinterpret_cast<std::uintptr_t>(file->data()), e = b + file->size();
  try {
    detail::zip_archive zip(*file);
    for (const auto& r : zip.records()) {
      touch(r.name);
      if (!zip.find(r.name)) bug(fmt::format("record '{}' is listed but not found by name", r.name));
      try {
        auto start = zip.data_offset(r);
        if (start > file->size() || r.compressed_size > file->size() - start)
          bug(fmt::format("record '{}' ({} bytes at {}) passes data_offset but lies outside the file", r.name,
                          r.compressed_size, start));
        if (r.method == 0) {
          auto v = zip.stored_bytes(r);
          const auto s = reinterpret_cast<std::uintptr_t>(v.data());
          if (v.size() && (s < b || s > e || v.size() > e - s))
            bug(fmt::format("stored record '{}' views {} bytes outside the file", r.name, v.size()));
          touch(v);
        }
        touch(zip.read(r));
      } catch (const graft::error& e) {
        refused(e);
      }
    }
  } catch (const graft::error& e) {
    refused(e);
  }
  return 0;
}

int pickle(const std::uint8_t* data, std::size_t size) {
  // Every storage key names a 4 KiB record, as if the archive held one of that size; a storage
  // claiming more elements than fit is refused, as read_torch_save refuses a short record.
  constexpr std::int64_t record_bytes = 4096;
  std::unordered_map<std::string, c10::Storage> storages;
  auto load = [&](std::string_view key, torch::Dtype dtype, std::int64_t numel, std::size_t) -> c10::Storage {
    std::int64_t nbytes = 0;
    if (__builtin_mul_overflow(numel, static_cast<std::int64_t>(c10::elementSize(dtype)), &nbytes) || nbytes > record_bytes)
      throw format_error(fmt::format("storage '{}' of {} elements does not fit its record", key, numel));
    auto [it, fresh] = storages.try_emplace(std::string(key));
    if (fresh) it->second = torch::arange(record_bytes, torch::kInt64).remainder(251).to(torch::kUInt8).storage();
    return it->second;
  };
  try {
    std::string_view bytes(reinterpret_cast<const char*>(data), size);
    detail::unpickler reader(bytes, "fuzz", "data.pkl", load);
    check_value(reader.run(), nullptr);
  } catch (const graft::error& e) {
    refused(e);
  } catch (const c10::Error&) {
    // read_torch_save turns a libtorch error into a format_error; the unpickler alone may pass one on.
  }
  return 0;
}

int read(const std::uint8_t* data, std::size_t size) {
  auto path = write_input(scratch() / "input.ckpt", data, size);
  try {
    (void)detect_format(path);
    auto sd = graft::read(path).load();
    for (const auto& e : sd) {
      touch(e.key);
      check_tensor(e.tensor, nullptr);
    }
  } catch (const graft::error& e) {
    refused(e);
  }
  return 0;
}

} // namespace graft::fuzz
