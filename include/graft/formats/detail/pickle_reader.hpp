#pragma once
// The unpickler for what torch.save writes: the opcode machine (pickle_machine.hpp) runs the
// pickle over the allow-listed rebuilds (pickle_rebuilds.hpp, pickle_tensors.hpp), and here the
// arena it built becomes a graft::value at STOP, or a TorchScript module's attributes by
// dotted name. Every copy is bounded, since Python shares what a value tree copies.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/formats/detail/pickle_machine.hpp>
#include <graft/state_dict/value.hpp>

namespace graft::detail {

/// What a TorchScript module class declares as its state: the names its code's
/// `__parameters__` and `__buffers__` lists give, in their order.
struct script_state_names {
  std::vector<std::string> parameters, buffers;
};
/// An archive's module classes, by the qualified name data.pkl gives their objects
/// (`__torch__.torch.nn.modules.conv.Conv2d`, `__torch__.___torch_mangle_3.Foo`).
using script_module_states = std::unordered_map<std::string, script_state_names>;

/// Parses one pickle (a zip record's bytes) into a graft::value.
class unpickler : private pickle_machine {
public:
  /// `file` and `record` only name the input in error messages, which give byte offsets
  /// from `base` (the pickle's offset in `record`, for a pickle that is part of a stream).
  unpickler(std::string_view data, std::string_view file, std::string_view record, storage_loader load,
            pickle_dialect dialect = pickle_dialect::torch_save, std::size_t base = 0)
      : pickle_machine(data, file, record, std::move(load), dialect, base) {}

  /// Runs the pickle to its STOP and returns the object it built. A TorchScript object
  /// (torchscript dialect) becomes the dict of its attributes.
  value run() { return to_value(parse(), 0); }

  /// After run(): the bytes the pickle took, its STOP included (a stream of pickles, as the
  /// legacy torch.save format is, goes on from there).
  std::size_t consumed() const noexcept { return pos_; }

  /// For a TorchScript archive's data.pkl, whose root is a scripted module: runs the pickle and
  /// returns the module's attributes by dotted name, the attributes of an object held directly
  /// in an attribute (a submodule) under "<attribute>.<name>". An object whose class `modules`
  /// declares gives, as Python's state_dict does, its parameters, then its buffers, in their
  /// declared order, and leaves out its other tensor attributes; its other attributes
  /// (submodules, plain values) follow in the pickle's (slot) order. An attribute named in
  /// `skip` (nn.Module's bookkeeping: `training`, `_is_full_backward_hook`) is left out at
  /// every level.
  dict run_flattened(std::initializer_list<std::string_view> skip, const script_module_states& modules) {
    auto root = parse();
    if (!nodes_[root].object)
      fail(fmt::format("the pickle holds a {}, not a TorchScript module", kind_name(nodes_[root].k)));
    dict out;
    std::unordered_set<std::string> seen;
    std::string prefix;
    flatten(root, skip, modules, prefix, seen, out, 0);
    return out;
  }

private:
  void flatten(std::uint32_t obj, std::initializer_list<std::string_view> skip, const script_module_states& modules,
               std::string& prefix, std::unordered_set<std::string>& seen, dict& out, int depth) {
    if (depth > max_depth) fail(fmt::format("objects nest deeper than {} levels (or contain themselves)", max_depth));
    // An object whose class the code does not declare (code/ records without `__buffers__`,
    // as PyTorch printed them before it told buffers from other tensor attributes, or a
    // TorchScript class that is not a module) keeps every attribute: nothing says which of its
    // tensors are state, and leaving one out could lose a buffer.
    const auto declared = modules.find(nodes_[obj].owned);
    const script_state_names* state = declared == modules.end() ? nullptr : &declared->second;
    if (state) built_ += state->parameters.size() + state->buffers.size();  // the lookups below
    if (++built_ > max_built())
      fail(fmt::format("the pickle's shared references expand to more than {} objects", max_built()));
    const auto items = nodes_[obj].items;
    auto skipped = [&](std::string_view name) { return std::find(skip.begin(), skip.end(), name) != skip.end(); };
    std::unordered_map<std::string_view, std::size_t> at;  // a declared class's attributes by name
    for (std::size_t k = 0; k + 1 < items.size(); k += 2) {
      const node& key = nodes_[items[k]];
      if (key.k != kind::str)
        fail(fmt::format("an attribute name of TorchScript object {} is a {}, not a str", nodes_[obj].owned, kind_name(key.k)));
      if (state && !at.emplace(key.sv(), k).second) fail(fmt::format("attribute '{}{}' is given twice", prefix, key.sv()));
    }
    std::vector<bool> taken(items.size() / 2, false);
    auto take = [&](std::size_t k) {
      taken[k / 2] = true;
      const auto size = prefix.size();
      prefix += nodes_[items[k]].sv();
      count_text(prefix.size());
      if (nodes_[items[k + 1]].object) {
        prefix += '.';
        flatten(items[k + 1], skip, modules, prefix, seen, out, depth + 1);
      } else {
        if (!seen.insert(prefix).second) fail(fmt::format("attribute '{}' is given twice", prefix));
        out.append(prefix, to_value(items[k + 1], depth + 1));
      }
      prefix.resize(size);
    };
    if (state)
      for (const auto* names : {&state->parameters, &state->buffers})
        for (const std::string& name : *names)
          if (auto it = at.find(name); it != at.end() && !taken[it->second / 2] && !skipped(name)) take(it->second);
    for (std::size_t k = 0; k + 1 < items.size(); k += 2) {
      if (taken[k / 2] || skipped(nodes_[items[k]].sv())) continue;
      // A declared class's tensor attribute that is neither a parameter nor a buffer (a plain
      // `self.x = torch.zeros(3)` of its __init__) is not state.
      if (state && nodes_[items[k + 1]].k == kind::tensor) continue;
      take(k);
    }
  }

  value to_value(std::uint32_t i, int depth) {
    if (depth > max_depth) fail(fmt::format("objects nest deeper than {} levels (or contain themselves)", max_depth));
    // A graft::value tree copies what Python shares, so a pickle that references one list from
    // many places (each of them shared again) grows exponentially as a tree: bound it by the
    // pickle's size, far above what a real checkpoint's shared references need.
    if (++built_ > max_built())
      fail(fmt::format("the pickle's shared references expand to more than {} objects", max_built()));
    node& n = nodes_[i];
    switch (n.k) {
      case kind::none: return {};
      case kind::boolean: return value(n.i != 0);
      case kind::integer: return value(n.i);
      case kind::floating: return value(n.f);
      case kind::str: count_text(n.sv().size()); return value(std::string(n.sv()));
      case kind::bytes: count_text(n.sv().size()); return value(value::bytes{std::string(n.sv())});
      case kind::tensor: return value(n.tensor);
      case kind::list:
      case kind::tuple: {
        sequence s;
        s.is_tuple = n.k == kind::tuple;
        s.items.reserve(n.items.size());
        for (std::size_t k = 0; k < nodes_[i].items.size(); ++k) s.items.push_back(to_value(nodes_[i].items[k], depth + 1));
        return value(std::move(s));
      }
      case kind::dict: {
        dict d;
        d.reserve(n.items.size() / 2);
        for (std::size_t k = 0; k + 1 < nodes_[i].items.size(); k += 2)
          d.append(to_value(nodes_[i].items[k], depth + 1), to_value(nodes_[i].items[k + 1], depth + 1));
        if (nodes_[i].meta != no_entry) d.set_module_versions(module_versions(nodes_[i].meta));
        return value(std::move(d));
      }
      case kind::storage:  // a storage saved on its own reads as a 1-D tensor of its elements
        return value(torch::empty({0}, torch::TensorOptions().dtype(n.dtype)).set_(n.storage, n.off, {n.i}, {1}));
      case kind::global: break;
    }
    fail(fmt::format("the pickle returns the global {} itself", global_name(n.g)));
  }

  // A state dict's _metadata ({module prefix: {'version': n, ...}}) as prefix → version;
  // entries without an integer version are left out.
  std::vector<std::pair<std::string, std::int64_t>> module_versions(std::uint32_t meta) {
    std::vector<std::pair<std::string, std::int64_t>> out;
    const auto& items = nodes_[meta].items;
    for (std::size_t k = 0; k + 1 < items.size(); k += 2) {
      const node& prefix = nodes_[items[k]];
      const node& info = nodes_[items[k + 1]];
      if (prefix.k != kind::str || info.k != kind::dict) continue;
      for (std::size_t j = 0; j + 1 < info.items.size(); j += 2)
        if (nodes_[info.items[j]].k == kind::str && nodes_[info.items[j]].sv() == "version" &&
            nodes_[info.items[j + 1]].k == kind::integer) {
          count_text(prefix.sv().size());
          out.emplace_back(std::string(prefix.sv()), nodes_[info.items[j + 1]].i);
        }
    }
    return out;
  }

};

} // namespace graft::detail
