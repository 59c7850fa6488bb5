#pragma once
// read(path): a checkpoint of any format graft knows, as a pipeline source. The format comes
// from the file's bytes, not its name: a Python torch.save file (zip or legacy), a safetensors
// file, a sharded checkpoint's index (*.safetensors.index.json, pytorch_model.bin.index.json),
// a libtorch archive, or a Hugging Face model folder. save(path) is the matching sink.
// Defined in read-inl.hpp (compiled once in the separately compiled mode).

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/formats/libtorch_archive.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/safetensors.hpp>
#include <graft/formats/torch_save.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

/// The checkpoint formats graft reads and writes.
enum class checkpoint_format {
  torch_save,         ///< Python's torch.save, the zip format of PyTorch >= 1.6
  safetensors,        ///< one safetensors file
  safetensors_index,  ///< a sharded safetensors checkpoint's model.safetensors.index.json
  libtorch_archive,   ///< a libtorch OutputArchive (torch::save), a TorchScript zip
  torch_save_legacy,  ///< torch.save's legacy format (PyTorch < 1.6, _use_new_zipfile_serialization=False)
  torch_save_index,   ///< a sharded torch.save checkpoint's pytorch_model.bin.index.json
};

constexpr std::string_view to_string(checkpoint_format f) noexcept {
  switch (f) {
    case checkpoint_format::torch_save: return "torch.save";
    case checkpoint_format::safetensors: return "safetensors";
    case checkpoint_format::safetensors_index: return "safetensors (sharded)";
    case checkpoint_format::libtorch_archive: return "libtorch archive";
    case checkpoint_format::torch_save_legacy: return "torch.save (legacy)";
    case checkpoint_format::torch_save_index: return "torch.save (sharded)";
  }
  return "unknown";
}

/// The checkpoint file `path` names: `path` itself, or for a folder (a Hugging Face model
/// folder) the first of model.safetensors.index.json, model.safetensors,
/// pytorch_model.bin.index.json and pytorch_model.bin it holds, the order transformers prefers.
/// An io_error if a folder holds none of them.
GRAFT_FUNC std::string checkpoint_file(const std::string& path);

/// Detects the format of the checkpoint at `path` from its bytes (an index ".json" from the
/// shards it names; a folder from the checkpoint file it holds).
GRAFT_FUNC checkpoint_format detect_format(const std::string& path);

/// Reads the checkpoint at `path`, of any format graft knows, as an object tree. `path` may be
/// a sharded checkpoint's index (either kind of shard) or a Hugging Face model folder, read
/// through the first of model.safetensors.index.json, model.safetensors,
/// pytorch_model.bin.index.json, pytorch_model.bin it holds.
GRAFT_FUNC value read_value(const std::string& path);

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
GRAFT_FUNC file_source read(std::string path);

/// Writes `sd` to `path` in `format`, atomically (a failure leaves any old file as it was).
/// torch_save writes what Python's torch.load reads back (extras included); safetensors and
/// libtorch archives hold the tensors only.
GRAFT_FUNC void save(const state_dict& sd, const std::string& path, checkpoint_format format);

/// The format a file name asks for: ".safetensors" → safetensors, anything else torch.save.
GRAFT_FUNC checkpoint_format format_for(std::string_view path) noexcept;

/// Writes `sd` to `path` in the format its name asks for (see format_for).
GRAFT_FUNC void save(const state_dict& sd, const std::string& path);

/// Writes tensors to `path` in `format` one at a time, never holding the whole dict: the
/// tensors `specs` announce, each made by `produce(i)` when the writer needs it (in the order
/// the format lays data out; each index once). safetensors and torch.save (zip) only, else an
/// option_error. See write_safetensors and write_torch_save with specs for the checks.
GRAFT_FUNC void save(const std::vector<tensor_spec>& specs, const std::function<torch::Tensor(std::size_t)>& produce,
                     const std::string& path, checkpoint_format format);
/// The sink save(path) makes.
class save_sink : public pipe_base {
public:
  save_sink(std::string path, checkpoint_format f) : path_(std::move(path)), format_(f) {}
  const std::string& path() const noexcept { return path_; }
  checkpoint_format format() const noexcept { return format_; }
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
GRAFT_FUNC save_sink save(std::string path);
/// Ends a pipeline by writing its state dict to `path` in `f`.
GRAFT_FUNC save_sink save(std::string path, checkpoint_format f);

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/formats/read-inl.hpp>
#endif
