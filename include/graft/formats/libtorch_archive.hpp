#pragma once
// libtorch archives: the files torch::save(module) and torch::serialize::OutputArchive write.
// They are TorchScript zip archives holding one scripted module per archive level, whose
// attributes are the parameters, buffers and nested archives (submodules).

#include <algorithm>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <caffe2/serialize/read_adapter_interface.h>
#include <fmt/format.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/formats/atomic_file.hpp>
#include <graft/formats/mapped_file.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

namespace detail {

// Lets torch::jit::load read from graft's mapping, so opening errors are graft's io_errors.
class mapped_read_adapter final : public caffe2::serialize::ReadAdapterInterface {
public:
  explicit mapped_read_adapter(std::shared_ptr<const mapped_file> f) : file_(std::move(f)) {}
  size_t size() const override { return file_->size(); }
  size_t read(uint64_t pos, void* buf, size_t n, const char*) const override {
    if (pos >= file_->size()) return 0;
    n = std::min<std::uint64_t>(n, file_->size() - pos);
    std::memcpy(buf, file_->data() + pos, n);
    return n;
  }

private:
  std::shared_ptr<const mapped_file> file_;
};

// A TorchScript attribute value as a graft value; nullopt for what graft cannot represent.
inline std::optional<value> from_ivalue(const c10::IValue& v) {
  if (v.isNone()) return value();
  if (v.isTensor()) return value(v.toTensor());
  if (v.isBool()) return value(v.toBool());
  if (v.isInt()) return value(v.toInt());
  if (v.isDouble()) return value(v.toDouble());
  if (v.isString()) return value(v.toStringRef());
  if (v.isList() || v.isTuple()) {
    sequence s{{}, v.isTuple()};
    auto items = v.isTuple() ? v.toTupleRef().elements().vec() : v.toListRef().vec();
    for (const auto& e : items) {
      auto x = from_ivalue(e);
      if (!x) return std::nullopt;
      s.items.push_back(std::move(*x));
    }
    return value(std::move(s));
  }
  if (v.isGenericDict()) {
    dict d;
    for (const auto& e : v.toGenericDict()) {
      auto k = from_ivalue(e.key());
      auto x = from_ivalue(e.value());
      if (!k || !(k->is_string() || k->is_int()) || !x) return std::nullopt;
      d.append(std::move(*k), std::move(*x));
    }
    return value(std::move(d));
  }
  return std::nullopt;
}

// Flattens one archive level into `out`: tensors and values by dotted name, nested archives
// (submodules) by recursion. `training` is the scripted module's own flag, not saved state.
inline void collect_archive(const std::string& path, const torch::jit::Module& m, std::string& prefix, dict& out) {
  const auto& type = m.type();
  const auto& obj = m._ivalue();
  for (std::size_t i = 0; i < type->numAttributes(); ++i) {
    const auto& name = type->getAttributeName(i);
    const auto& v = obj->getSlot(i);
    const auto size = prefix.size();
    prefix += name;
    if (v.isObject() && v.toObjectRef().type()->is_module()) {
      prefix += '.';
      collect_archive(path, torch::jit::Module(v.toObject()), prefix, out);
    } else if (v.isTensor()) {
      if (v.toTensor().defined()) out.append(prefix, v.toTensor());  // an absent bias is saved undefined
    } else if (name != "training") {
      auto x = from_ivalue(v);
      if (!x)
        throw format_error(fmt::format("'{}': entry '{}' holds a TorchScript {}, which graft cannot represent", path, prefix,
                                       v.type()->str()));
      out.append(prefix, std::move(*x));
    }
    prefix.resize(size);
  }
}

// A nested OutputArchive per dotted prefix, as Module::save writes one per submodule.
struct archive_node {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::vector<std::pair<std::string, c10::IValue>> values;
  std::vector<std::pair<std::string, std::unique_ptr<archive_node>>> children;

  archive_node* child(std::string_view name) {
    for (auto& [n, c] : children)
      if (n == name) return c.get();
    return children.emplace_back(std::string(name), std::make_unique<archive_node>()).second.get();
  }
  bool has_leaf(std::string_view name) const {
    return std::any_of(tensors.begin(), tensors.end(), [&](auto& e) { return e.first == name; }) ||
           std::any_of(values.begin(), values.end(), [&](auto& e) { return e.first == name; });
  }
  bool has_child(std::string_view name) const {
    return std::any_of(children.begin(), children.end(), [&](auto& e) { return e.first == name; });
  }
  void write(torch::serialize::OutputArchive& a) const {
    for (const auto& [n, t] : tensors) a.write(n, t);
    for (const auto& [n, v] : values) a.write(n, v);
    for (const auto& [n, c] : children) {
      torch::serialize::OutputArchive sub(a.compilation_unit());
      c->write(sub);
      a.write(n, sub);
    }
  }
};

inline c10::IValue to_ivalue(const std::string& path, const std::string& key, const value& v) {
  if (v.is_none()) return {};
  if (v.is_bool()) return v.as_bool();
  if (v.is_int()) return v.as_int();
  if (v.is_float()) return v.as_number();
  if (v.is_string()) return v.as_string();
  throw format_error(fmt::format("cannot write '{}': '{}' is a {}, which a libtorch archive entry cannot hold here", path,
                                 key, v.type_name()));
}

} // namespace detail

/// Reads a libtorch archive (written by torch::save(module) or an OutputArchive) into a dict of
/// dotted name → tensor, submodules' entries under their names ("fc.weight",
/// "bn.running_mean"), in the order the archive holds them: each module's parameters, then its
/// buffers, then its submodules. Non-tensor entries an OutputArchive holds (ints, strings, ...)
/// come as their values. Tensors are copies (TorchScript loads records into fresh memory).
/// Throws io_error if the file cannot be opened, format_error naming the file otherwise.
inline value read_libtorch_archive(const std::string& path) {
  auto file = mapped_file::open(path);
  try {
    auto m = torch::jit::load(std::make_shared<detail::mapped_read_adapter>(file), torch::kCPU);
    dict out;
    std::string prefix;
    detail::collect_archive(path, m, prefix, out);
    return out;
  } catch (const graft::error&) {
    throw;
  } catch (const c10::Error& e) {
    throw format_error(fmt::format("'{}': not a readable libtorch archive (torch::save / torch.jit.save): {}", path,
                                   e.what_without_backtrace()));
  } catch (const std::bad_alloc&) {
    throw format_error(fmt::format("'{}': out of memory while reading", path));
  } catch (const std::exception& e) {
    // The TorchScript importer reports some malformed code with std::runtime_error.
    throw format_error(fmt::format("'{}': not a readable libtorch archive (torch::save / torch.jit.save): {}", path, e.what()));
  }
}

/// Writes `entries` as a libtorch archive that torch::load(module, path) reads: dotted names
/// become nested archives, as torch::save(module) writes submodules. Values are tensors (saved
/// as parameters; libtorch's loader does not tell them from buffers) or None/bool/int/float/str;
/// nested dicts are flattened into dotted names. Atomic: on any error `path` is untouched.
/// Throws format_error for a value an archive cannot hold, key_error if a name is both an entry
/// and a prefix of another ("fc" and "fc.weight"), io_error if the file cannot be written.
inline void write_libtorch_archive(const std::string& path, const dict& entries) {
  detail::archive_node root;
  std::string key;
  auto add = [&](auto& self, const dict& d) -> void {
    for (const auto& [k, v] : d) {
      const auto size = key.size();
      key += k.key_text();
      if (v.is_dict()) {
        key += '.';
        self(self, v.as_dict());
      } else {
        // Walk the dotted path down to its node; every segment but the last names an archive.
        detail::archive_node* node = &root;
        std::string_view rest = key;
        for (auto dot = rest.find('.'); dot != std::string_view::npos; dot = rest.find('.')) {
          auto seg = rest.substr(0, dot);
          if (seg.empty() || node->has_leaf(seg))
            throw key_error(fmt::format("cannot write '{}': '{}' needs '{}' to be a nested archive, but it is {}", path, key,
                                        key.substr(0, static_cast<std::size_t>(seg.data() - key.data()) + seg.size()),
                                        seg.empty() ? "an empty name" : "an entry"));
          node = node->child(seg);
          rest.remove_prefix(dot + 1);
        }
        if (rest.empty() || node->has_leaf(rest) || node->has_child(rest))
          throw key_error(fmt::format("cannot write '{}': '{}' is {}", path, key,
                                      rest.empty() ? "an empty name" : "given twice, or also a prefix of other names"));
        if (v.is_tensor()) {
          if (!v.as_tensor().defined()) throw format_error(fmt::format("cannot write '{}': tensor '{}' is undefined", path, key));
          node->tensors.emplace_back(std::string(rest), v.as_tensor());
        } else {
          node->values.emplace_back(std::string(rest), detail::to_ivalue(path, key, v));
        }
      }
      key.resize(size);
    }
  };
  add(add, entries);

  try {
    torch::serialize::OutputArchive archive;
    root.write(archive);
    detail::write_atomically(path, [&](detail::atomic_file& out) {
      archive.save_to([&](const void* buf, std::size_t n) { return out.write(buf, n); });
    });
  } catch (const graft::error&) {
    throw;
  } catch (const c10::Error& e) {
    throw io_error(fmt::format("cannot write '{}': {}", path, e.what_without_backtrace()));
  }
}

} // namespace graft
