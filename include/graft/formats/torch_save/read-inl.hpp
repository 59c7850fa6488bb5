#pragma once
// The definitions of torch_save/read.hpp.

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/formats/detail/pickle_reader.hpp>
#include <graft/formats/detail/rethrow.hpp>
#include <graft/formats/detail/torch_zip.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/torch_save/legacy.hpp>
#include <graft/formats/torch_save/read.hpp>
#include <graft/io/detail/zip.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

namespace detail {

inline value read_torch_save_zip(const std::shared_ptr<const mapped_file>& file, const torch_save_options& opts) {
  const auto& path = file->path();
  zip_archive zip(*file);
  const zip_record* pkl = find_pickle_record(zip);
  if (!pkl) zip.fail("no '<archive>/data.pkl' record: not a torch.save file");
  const std::string prefix(pkl->name.substr(0, pkl->name.size() - 8));
  if (zip.find(prefix + "constants.pkl"))
    zip.fail("a TorchScript archive (it has constants.pkl), not a torch.save file");
  if (auto* order = zip.find(prefix + "byteorder")) {
    if (order->size > 16) zip.fail(fmt::format("record '{}' is not 'little' or 'big'", order->name));
    auto text = zip.read(*order);
    if (text != "little")
      zip.fail(fmt::format("record '{}' says '{}'; graft reads little-endian files only", order->name, text));
  }

  // The pickle is parsed in place when it is stored, which is what torch.save does.
  std::string inflated;
  const auto pickle = zip.bytes(*pkl, inflated);

  zip_storage_loader storages{file, zip, prefix, pkl->name, opts.mmap};
  detail::unpickler reader(pickle, path, pkl->name, std::ref(storages));
  return reader.run();
}

} // namespace detail

GRAFT_FUNC bool is_torch_save_file(const mapped_file& file) noexcept {
  try {
    detail::zip_archive zip(file);
    auto* pkl = detail::find_pickle_record(zip);
    return pkl && !zip.find(std::string(pkl->name.substr(0, pkl->name.size() - 8)) + "constants.pkl");
  } catch (...) {
    return false;
  }
}

GRAFT_FUNC value read_torch_save(const std::shared_ptr<const mapped_file>& file, const torch_save_options& opts) {
  if (is_legacy_torch_save_file(*file)) return read_torch_save_legacy(file);
  return detail::rethrow_as_format_error(file->path(), [&] { return detail::read_torch_save_zip(file, opts); });
}

GRAFT_FUNC value read_torch_save(const std::string& path, const torch_save_options& opts) {
  return read_torch_save(mapped_file::open(path), opts);
}

} // namespace graft
