#pragma once
// The definitions of torch_save/write.hpp.

#include <cstddef>
#include <string>

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

} // namespace graft
