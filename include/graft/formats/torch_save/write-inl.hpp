#pragma once
// The definitions of torch_save/write.hpp.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

#include <caffe2/serialize/inline_container.h>
#include <fmt/format.h>

#include <graft/error.hpp>
#include <graft/io/detail/atomic_file.hpp>
#include <graft/formats/detail/pickle_writer.hpp>
#include <graft/formats/torch_save/write.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

GRAFT_FUNC void write_torch_save(const std::string& path, const value& obj) {
  detail::pickler pickle(path);
  pickle.dump(obj);  // before touching the disk: an unsavable value leaves no trace

  detail::write_atomically(path, [&](detail::atomic_file& file) {
    // The writer's sink must not report failure to miniz (its destructor would throw):
    // atomic_file keeps the first error and reports it after the archive is closed.
    try {
      caffe2::serialize::PyTorchStreamWriter writer([&](const void* buf, std::size_t n) { return file.write(buf, n); });
      writer.writeRecord("data.pkl", pickle.bytes().data(), pickle.bytes().size());
      std::string name;
      for (const auto& s : pickle.storages()) {
        name.assign("data/").append(s.key);
        writer.writeRecord(name, s.storage.data(), s.storage.nbytes());
      }
      writer.writeEndOfFile();
    } catch (const c10::Error& e) {
      throw io_error(fmt::format("cannot write '{}': {}", path, e.what_without_backtrace()));
    }
  });
}

GRAFT_FUNC void write_torch_save(const std::string& path, const std::vector<tensor_spec>& specs,
                                 const std::function<torch::Tensor(std::size_t)>& produce) {
  // The pickle needs each tensor's dtype, shape and storage size, not its data: tensors on the
  // meta device stand in for them, one storage each, so the records come in the specs' order.
  dict placeholders;
  std::unordered_set<std::string_view> names;
  for (const auto& spec : specs) {
    if (!names.insert(spec.name).second)
      throw key_error(fmt::format("cannot write '{}': tensor '{}' is given twice", path, spec.name),
                      {.file = path, .key = spec.name, .file_in_message = true});
    placeholders.append(spec.name, torch::empty(spec.shape, torch::TensorOptions().dtype(spec.dtype).device(torch::kMeta)));
  }
  detail::pickler pickle(path);
  pickle.dump(value(std::move(placeholders)));
  if (pickle.storages().size() != specs.size())
    throw format_error(fmt::format("cannot write '{}': {} storages for {} tensors", path, pickle.storages().size(), specs.size()),
                       {.file = path, .file_in_message = true});

  detail::write_atomically(path, [&](detail::atomic_file& file) {
    try {
      caffe2::serialize::PyTorchStreamWriter writer([&](const void* buf, std::size_t n) { return file.write(buf, n); });
      writer.writeRecord("data.pkl", pickle.bytes().data(), pickle.bytes().size());
      std::string name;
      for (std::size_t i = 0; i < specs.size(); ++i) {
        auto t = detail::produce_announced(path, specs, produce, i);
        name.assign("data/").append(pickle.storages()[i].key);
        writer.writeRecord(name, t.data_ptr(), static_cast<std::size_t>(t.numel()) * t.element_size());
        if (file.failed()) break;
      }
      writer.writeEndOfFile();
    } catch (const c10::Error& e) {
      throw io_error(fmt::format("cannot write '{}': {}", path, e.what_without_backtrace()), {.file = path, .file_in_message = true});
    }
  });
}

} // namespace graft
