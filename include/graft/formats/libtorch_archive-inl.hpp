#pragma once
// The definitions of formats/libtorch_archive.hpp.

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/io/detail/atomic_file.hpp>
#include <graft/formats/detail/pickle_reader.hpp>
#include <graft/formats/detail/torch_zip.hpp>
#include <graft/io/mapped_file.hpp>
#include <graft/formats/libtorch_archive.hpp>
#include <graft/io/detail/zip.hpp>
#include <graft/state_dict/value.hpp>

namespace graft {

namespace detail {

// One `__parameters__` or `__buffers__` list of a code record (`list` is what follows the
// " = "), as TorchScript prints it: `["weight", "bias", ]`, each name quoted and followed by
// a comma, or `[]`.
inline std::vector<std::string> parse_state_names(const zip_archive& zip, const zip_record& r, std::string_view what,
                                                  std::string_view list) {
  std::vector<std::string> names;
  bool ok = list.size() >= 2 && list.front() == '[' && list.back() == ']';
  for (auto rest = ok ? list.substr(1, list.size() - 2) : std::string_view(); ok && !rest.empty();) {
    if (rest.front() == ' ') {
      rest.remove_prefix(1);
      continue;
    }
    const auto close = rest.front() == '"' ? rest.find('"', 1) : std::string_view::npos;
    ok = close != std::string_view::npos && close > 1 && (close + 1 == rest.size() || rest[close + 1] == ',');
    if (ok) names.emplace_back(rest.substr(1, close - 1));
    if (ok) rest.remove_prefix(std::min(close + 2, rest.size()));
  }
  if (!ok) zip.fail(fmt::format("record '{}' has a malformed {} list: {}", r.name, what, list.substr(0, 200)));
  return names;
}

// The parameters and buffers each module class of the archive's code declares. A record
// "<archive>/code/__torch__/torch/nn/modules/conv.py" holds module __torch__.torch.nn.modules.conv,
// and its line `class Conv2d(Module):` the class data.pkl names __torch__.torch.nn.modules.conv.Conv2d
// (a mangled class, `__torch__.___torch_mangle_3.Foo`, has its own record). Only the class lines
// and their `__parameters__` / `__buffers__` lines are read: the code is never compiled or run.
inline script_module_states read_script_modules(const zip_archive& zip, const std::string& prefix) {
  script_module_states modules;
  const std::string dir = prefix + "code/";
  std::string inflated;
  for (const zip_record& r : zip.records()) {
    if (!r.name.starts_with(dir) || !r.name.ends_with(".py")) continue;
    std::string module(r.name.substr(dir.size(), r.name.size() - dir.size() - 3));
    std::replace(module.begin(), module.end(), '/', '.');
    std::string cls;  // the qualified name of the class being read; empty outside one
    std::vector<std::string> parameters;
    for (std::string_view text = zip.bytes(r, inflated); !text.empty();) {
      const auto eol = std::min(text.find('\n'), text.size());
      const std::string_view line = text.substr(0, eol);
      text.remove_prefix(std::min(eol + 1, text.size()));
      const bool is_parameters = line.starts_with("  __parameters__ = ");
      if (line.starts_with("class ")) {
        cls = fmt::format("{}.{}", module, line.substr(6, line.find_first_of("(:") - 6));
        parameters.clear();
      } else if (!line.empty() && line.front() != ' ') {
        cls.clear();  // a function or anything else at the top level ends the class
      } else if (is_parameters || line.starts_with("  __buffers__ = ")) {
        const std::string_view what = is_parameters ? "__parameters__" : "__buffers__";
        if (cls.empty()) zip.fail(fmt::format("record '{}' declares {} outside a class", r.name, what));
        auto names = parse_state_names(zip, r, what, line.substr(what.size() + 5));
        // A class counts as declared once it lists its buffers, which TorchScript prints after
        // its parameters: a class without the line keeps all its attributes (pickle_reader.hpp).
        if (is_parameters) parameters = std::move(names);
        else modules.insert_or_assign(cls, script_state_names{std::exchange(parameters, {}), std::move(names)});
      }
    }
  }
  return modules;
}

/// The archive's "<archive>/data.pkl" as a scripted module's state, by dotted name.
inline dict read_libtorch_zip(const std::shared_ptr<const mapped_file>& file) {
  zip_archive zip(*file);
  const zip_record* pkl = find_pickle_record(zip);
  if (!pkl) zip.fail("no '<archive>/data.pkl' record");
  const std::string prefix(pkl->name.substr(0, pkl->name.size() - 8));
  if (!zip.find(prefix + "constants.pkl"))
    zip.fail(fmt::format("no '{}constants.pkl' record: a Python torch.save file or another zip, not a TorchScript archive",
                         prefix));
  // constants.pkl and code/ serve the module's TorchScript code, which graft never compiles
  // or runs; the saved state is all in data.pkl and the data/ records it names, and code/
  // says which of a module's tensor attributes are its parameters and buffers.
  const auto modules = read_script_modules(zip, prefix);
  // The pickle is parsed in place when it is stored, which is what TorchScript does.
  std::string inflated;
  const auto pickle = zip.bytes(*pkl, inflated);
  zip_storage_loader storages{file, zip, prefix, pkl->name, true};
  unpickler reader(pickle, file->path(), pkl->name, std::ref(storages), pickle_dialect::torchscript);
  // nn.Module's bookkeeping attributes, which TorchScript keeps on every module, are not state
  // (Python's load_state_dict refuses them as unexpected keys).
  return reader.run_flattened({"training", "_is_full_backward_hook"}, modules);
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

GRAFT_FUNC value read_libtorch_archive(const std::string& path) {
  auto file = mapped_file::open(path);
  auto refuse = [&](std::string_view why) {
    return format_error(fmt::format("'{}': not a readable libtorch archive (torch::save / torch.jit.save): {}", path, why));
  };
  try {
    return detail::read_libtorch_zip(file);
  } catch (const format_error& e) {
    // The zip reader's and unpickler's errors name the file; say it once, with what it is.
    throw refuse(e.context().file == path ? e.text_in_file() : e.text());
  } catch (const graft::error&) {
    throw;
  } catch (const c10::Error& e) {
    throw refuse(e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    throw format_error(fmt::format("'{}': out of memory while reading", path));
  }
}

GRAFT_FUNC void write_libtorch_archive(const std::string& path, const dict& entries) {
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
