#pragma once
// read(path): a checkpoint of any format graft knows, as a pipeline source. The format comes
// from the file's bytes, not its name: a Python torch.save zip, a safetensors file (or a
// sharded checkpoint's *.safetensors.index.json), or a libtorch archive. save(path) is the
// matching sink.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/error.hpp>
#include <graft/formats/libtorch_archive.hpp>
#include <graft/formats/mapped_file.hpp>
#include <graft/formats/safetensors.hpp>
#include <graft/formats/torch_save.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft {

/// The checkpoint formats graft reads and writes.
enum class checkpoint_format { torch_save, safetensors, safetensors_index, libtorch_archive };

constexpr std::string_view to_string(checkpoint_format f) noexcept {
  switch (f) {
    case checkpoint_format::torch_save: return "torch.save";
    case checkpoint_format::safetensors: return "safetensors";
    case checkpoint_format::safetensors_index: return "safetensors (sharded)";
    case checkpoint_format::libtorch_archive: return "libtorch archive";
  }
  return "unknown";
}

namespace detail {
inline bool is_zip(const mapped_file& f) noexcept { return f.size() >= 4 && f.bytes(0, 4) == std::string_view("PK\x03\x04", 4); }

inline checkpoint_format detect_format(const std::string& path, const mapped_file& f) {
  if (is_torch_save_file(f)) return checkpoint_format::torch_save;
  if (is_safetensors_file(f)) return checkpoint_format::safetensors;
  if (is_zip(f)) return checkpoint_format::libtorch_archive;  // TorchScript zips (constants.pkl)
  if (f.size() >= 2 && static_cast<unsigned char>(f.bytes(0, 1)[0]) == 0x80)
    throw format_error(fmt::format("'{}' is a legacy (pre-1.6) torch.save file, a bare pickle; re-save it with "
                                   "torch.save(obj, path) from PyTorch 1.6 or later, which writes the zip format",
                                   path));
  std::string head;
  for (std::size_t i = 0; i < f.size() && i < 8; ++i) head += fmt::format("{:02x} ", static_cast<unsigned char>(f.bytes(i, 1)[0]));
  throw format_error(fmt::format("'{}' is not a checkpoint graft can read (a torch.save zip, safetensors, or a libtorch "
                                 "archive); its first bytes are {}({} bytes in all)",
                                 path, head, f.size()));
}
} // namespace detail

/// Detects the format of the checkpoint at `path` from its bytes.
inline checkpoint_format detect_format(const std::string& path) {
  if (path.ends_with(".json")) return checkpoint_format::safetensors_index;
  return detail::detect_format(path, *mapped_file::open(path));
}

/// Reads the checkpoint at `path`, of any format graft knows, as an object tree.
inline value read_value(const std::string& path) {
  if (path.ends_with(".json")) return read_safetensors(path);
  auto file = mapped_file::open(path);
  switch (detail::detect_format(path, *file)) {
    case checkpoint_format::torch_save: return read_torch_save(file);
    case checkpoint_format::safetensors: return read_safetensors(file);
    default: return read_libtorch_archive(path);
  }
}

/// The source read(path) makes.
class file_source : public pipe_base {
public:
  explicit file_source(std::string path) : path_(std::move(path)) {}
  /// Reads the file; tensors view the mapped file where the format allows.
  state_dict load() const { return state_dict::from_value(read_value(path_)); }
  std::string describe() const { return fmt::format("read(\"{}\")", path_); }
  const std::string& path() const noexcept { return path_; }

private:
  std::string path_;
};

/// A checkpoint file as a pipeline source: read("model.pth") | at("model") | ...
/// Nested dicts become dotted keys; non-tensor values become the state dict's extras.
inline file_source read(std::string path) { return file_source(std::move(path)); }

/// Writes `sd` to `path` in `format`, atomically (a failure leaves any old file as it was).
/// torch_save writes what Python's torch.load reads back (extras included); safetensors and
/// libtorch archives hold the tensors only.
inline void save(const state_dict& sd, const std::string& path, checkpoint_format format) {
  switch (format) {
    case checkpoint_format::torch_save: write_torch_save(path, sd.to_value()); return;
    case checkpoint_format::safetensors: {
      std::vector<std::pair<std::string, torch::Tensor>> tensors;
      tensors.reserve(sd.size());
      for (auto& e : sd) tensors.emplace_back(e.key, e.tensor);
      write_safetensors(path, tensors);
      return;
    }
    case checkpoint_format::libtorch_archive: {
      dict d;
      for (auto& e : sd) d.append(e.key, e.tensor);
      write_libtorch_archive(path, d);
      return;
    }
    case checkpoint_format::safetensors_index: break;
  }
  throw option_error(fmt::format("cannot save '{}' as {}: write the shards as safetensors files", path, to_string(format)));
}

/// The format a file name asks for: ".safetensors" → safetensors, anything else torch.save.
inline checkpoint_format format_for(std::string_view path) noexcept {
  return path.ends_with(".safetensors") ? checkpoint_format::safetensors : checkpoint_format::torch_save;
}

/// Writes `sd` to `path` in the format its name asks for (see format_for).
inline void save(const state_dict& sd, const std::string& path) { save(sd, path, format_for(path)); }

/// The sink save(path) makes.
class save_sink : public pipe_base {
public:
  save_sink(std::string path, checkpoint_format f) : path_(std::move(path)), format_(f) {}
  /// Writes and returns the state dict that was written.
  state_dict consume(state_dict&& sd) const {
    save(sd, path_, format_);
    return std::move(sd);
  }

private:
  std::string path_;
  checkpoint_format format_;
};
/// Ends a pipeline by writing its state dict to `path` (format from the name, or given).
inline save_sink save(std::string path) { auto f = format_for(path); return {std::move(path), f}; }
inline save_sink save(std::string path, checkpoint_format f) { return {std::move(path), f}; }

} // namespace graft
