#pragma once
// The unpickler's allow-listed rebuilds: globals resolve only through pickle_globals.hpp's
// table and are never imported or called; each REDUCE or NEWOBJ of one runs its fixed C++
// rebuild (an OrderedDict, a tensor over a persistent storage, a parameter, a TorchScript
// object, ...), and BUILD sets only the states graft understands.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/formats/detail/pickle_globals.hpp>
#include <graft/formats/detail/pickle_tensors.hpp>

namespace graft::detail {

/// Storages and tensors plus what the pickle's globals, calls, persistent ids and object states build.
class pickle_rebuilds : protected pickle_tensors {
protected:
  using pickle_tensors::pickle_tensors;

  void push_global(std::string_view module, std::string_view name) {
    if (dialect_ == pickle_dialect::torchscript && is_script_class_module(module)) {
      auto i = push(kind::global);
      nodes_[i].g = global_id::script_class;
      nodes_[i].owned = fmt::format("{}.{}", module, name);
      return;
    }
    auto g = find_global(module, name);
    // TorchScript's typed-container tags are written by libtorch's torch::pickle_save too, in
    // files Python's torch.load reads: allowed in both dialects (each returns its argument).
    if (!g) g = find_script_global(module, name);
    if (!g)
      fail(fmt::format("global '{}.{}' is not allowed; graft rebuilds only tensors, storages and plain containers "
                       "and never runs code from a file",
                       module, name));
    if (g->id == global_id::dtype_name) {
      // torch.float32 and friends: kept as their Python name.
      auto text = fmt::format("{}.{}", module, name);
      auto i = push(kind::str);
      nodes_[i].owned = std::move(text);
      nodes_[i].owns = true;
      return;
    }
    auto i = push(kind::global);
    nodes_[i].g = g->id;
    nodes_[i].dtype = g->dtype;
  }


  // REDUCE / NEWOBJ: calls are resolved to the fixed rebuilds of the allow-list.
  void call(std::uint32_t fn, std::uint32_t args, std::string_view op) {
    if (nodes_[fn].k != kind::global) fail(fmt::format("{} calls a {}, which is not callable", op, kind_name(nodes_[fn].k)));
    if (nodes_[args].k != kind::tuple) fail(fmt::format("{} arguments must be a tuple, not {}", op, kind_name(nodes_[args].k)));
    const std::size_t argc = nodes_[args].items.size();
    const global_id g = nodes_[fn].g;
    auto arity = [&](std::size_t lo, std::size_t hi) {
      if (argc < lo || argc > hi)
        fail(fmt::format("{} takes {} arguments, not {}", global_name(g), lo == hi ? fmt::format("{}", lo) : fmt::format("{} to {}", lo, hi), argc));
    };
    switch (g) {
      case global_id::ordered_dict: {
        arity(0, 1);
        auto d = make(kind::dict);
        if (argc == 1) {  // OrderedDict([(k, v), ...]); its own __reduce__ pickles [[k, v], ...]
          auto& src = arg(args, 0);
          if (src.k != kind::list && src.k != kind::tuple) fail("OrderedDict's argument must be a list of pairs");
          std::vector<std::uint32_t> items;
          for (auto p : src.items) {
            if ((nodes_[p].k != kind::tuple && nodes_[p].k != kind::list) || nodes_[p].items.size() != 2)
              fail("OrderedDict's argument must be a list of pairs");
            items.push_back(nodes_[p].items[0]);
            items.push_back(nodes_[p].items[1]);
          }
          nodes_[d].items = std::move(items);
        }
        return push_index(d);
      }
      case global_id::counter: {  // Counter({key: count, ...}): the dict itself
        arity(0, 1);
        if (argc == 0) return push_index(make(kind::dict));
        if (arg(args, 0).k != kind::dict) fail(fmt::format("Counter's argument must be a dict, not a {}", kind_name(arg(args, 0).k)));
        return push_index(nodes_[args].items[0]);
      }
      case global_id::set: {
        arity(0, 1);
        auto l = make(kind::list);
        if (argc == 1) {
          auto& src = arg(args, 0);
          if (src.k != kind::list && src.k != kind::tuple) fail("set's argument must be a list");
          auto items = src.items;
          nodes_[l].items = std::move(items);
        }
        return push_index(l);
      }
      case global_id::bytes_type:
        arity(0, 0);
        push(kind::bytes);
        return;
      case global_id::codecs_encode: return encode_latin1(args, argc);
      case global_id::device: {
        arity(1, 2);
        if (arg(args, 0).k != kind::str) fail("torch.device's first argument must be a str");
        std::string text(arg(args, 0).sv());
        if (argc == 2 && arg(args, 1).k != kind::none) text += fmt::format(":{}", int_arg(args, 1, "a device index"));
        auto i = push(kind::str);
        nodes_[i].owned = std::move(text);
        nodes_[i].owns = true;
        return;
      }
      case global_id::size: {
        arity(1, 1);
        auto sizes = ints_arg(args, 0, "torch.Size's argument");
        auto t = push(kind::tuple);
        for (auto v : sizes) {
          auto e = make(kind::integer);
          nodes_[e].i = v;
          nodes_[t].items.push_back(e);
        }
        return;
      }
      case global_id::rebuild_tensor: {
        // PyTorch's rebuild before _rebuild_tensor_v2 (still on its weights_only allow-list):
        // storage, offset, size, stride; never requires grad.
        arity(4, 4);
        auto& st = arg(args, 0);
        if (st.k != kind::storage) fail(fmt::format("_rebuild_tensor needs a storage, not a {}", kind_name(st.k)));
        auto t = rebuild(st, int_arg(args, 1, "a storage offset"), ints_arg(args, 2, "a tensor size"),
                         ints_arg(args, 3, "a tensor stride"));
        nodes_[push(kind::tensor)].tensor = std::move(t);
        return;
      }
      case global_id::rebuild_tensor_v2: {
        arity(6, 7);  // storage, offset, size, stride, requires_grad, backward_hooks[, metadata]
        auto& st = arg(args, 0);
        if (st.k != kind::storage) fail(fmt::format("_rebuild_tensor_v2 needs a storage, not a {}", kind_name(st.k)));
        auto t = rebuild(st, int_arg(args, 1, "a storage offset"), ints_arg(args, 2, "a tensor size"),
                         ints_arg(args, 3, "a tensor stride"));
        set_requires_grad(t, int_arg(args, 4, "requires_grad") != 0);
        nodes_[push(kind::tensor)].tensor = std::move(t);
        return;
      }
      case global_id::rebuild_tensor_v3: {
        // PyTorch 2.x, for dtypes without a legacy storage class (uint16, float8, ...):
        // storage, offset, size, stride, requires_grad, backward_hooks, dtype[, metadata].
        arity(7, 8);
        auto st = arg(args, 0);
        if (st.k != kind::storage) fail(fmt::format("_rebuild_tensor_v3 needs a storage, not a {}", kind_name(st.k)));
        auto& dt = arg(args, 6);
        if (dt.k != kind::str || !dt.sv().starts_with("torch."))
          fail(fmt::format("_rebuild_tensor_v3 needs a torch dtype, not a {}", kind_name(dt.k)));
        auto known = find_python_dtype(dt.sv().substr(6));
        if (!known) fail(fmt::format("_rebuild_tensor_v3 names an unknown dtype {}", dt.sv()));
        if (!known->dtype)
          fail(fmt::format("tensor of dtype {}, which libtorch {} cannot represent", dt.sv(), torch_release));
        st.i = retype(st, *known->dtype);
        st.off = st.off * static_cast<std::int64_t>(c10::elementSize(st.dtype)) /
                 static_cast<std::int64_t>(c10::elementSize(*known->dtype));
        st.dtype = *known->dtype;
        auto t = rebuild(st, int_arg(args, 1, "a storage offset"), ints_arg(args, 2, "a tensor size"),
                         ints_arg(args, 3, "a tensor stride"));
        set_requires_grad(t, int_arg(args, 4, "requires_grad") != 0);
        nodes_[push(kind::tensor)].tensor = std::move(t);
        return;
      }
      case global_id::rebuild_parameter:
      case global_id::rebuild_parameter_with_state: {
        // (data, requires_grad, backward_hooks[, state]): a Parameter is its tensor here.
        if (g == global_id::rebuild_parameter) arity(3, 3); else arity(4, 4);
        auto& data = arg(args, 0);
        if (data.k != kind::tensor) fail(fmt::format("_rebuild_parameter needs a tensor, not a {}", kind_name(data.k)));
        auto t = data.tensor;
        set_requires_grad(t, int_arg(args, 1, "requires_grad") != 0);
        nodes_[push(kind::tensor)].tensor = std::move(t);
        return;
      }
      case global_id::script_class: {
        // TorchScript writes an object as NEWOBJ(cls, ()) and then BUILD with its attributes.
        if (op != "NEWOBJ" || argc != 0)
          fail(fmt::format("{} of TorchScript class {}: only NEWOBJ with no arguments is supported", op, nodes_[fn].owned));
        std::string cls = nodes_[fn].owned;
        auto o = push(kind::dict);
        nodes_[o].object = true;
        nodes_[o].owned = std::move(cls);
        return;
      }
      case global_id::script_list: {  // build_intlist([...]) and friends: the list itself
        arity(1, 1);
        if (arg(args, 0).k != kind::list) fail(fmt::format("{} needs a list, not a {}", global_name(g), kind_name(arg(args, 0).k)));
        return push_index(nodes_[args].items[0]);
      }
      case global_id::restore_type_tag:  // (container, "Dict[str, int]"): the container
        arity(2, 2);
        if (arg(args, 1).k != kind::str) fail("restore_type_tag's type must be a str");
        return push_index(nodes_[args].items[0]);
      case global_id::storage_type:
      case global_id::untyped_storage:
      case global_id::dtype_name: break;
    }
    fail(fmt::format("{} of {}: it is only valid inside a persistent id", op, global_name(g)));
  }

  // Protocol 2 pickles bytes as _codecs.encode(latin-1 text, 'latin1').
  void encode_latin1(std::uint32_t args, std::size_t argc) {
    if (argc != 2 || arg(args, 0).k != kind::str || arg(args, 1).k != kind::str ||
        (arg(args, 1).sv() != "latin1" && arg(args, 1).sv() != "latin-1"))
      fail("_codecs.encode is only allowed as encode(str, 'latin1')");
    std::string_view s = arg(args, 0).sv();
    std::string out;
    out.reserve(s.size());
    for (std::size_t k = 0; k < s.size(); ++k) {
      auto c = static_cast<unsigned char>(s[k]);
      if (c < 0x80) out += char(c);
      else if ((c & 0xFE) == 0xC2 && k + 1 < s.size()) out += char(((c & 0x03) << 6) | (static_cast<unsigned char>(s[++k]) & 0x3F));
      else fail("_codecs.encode text is not latin-1");
    }
    auto i = push(kind::bytes);
    nodes_[i].owned = std::move(out);
    nodes_[i].owns = true;
  }

  // BUILD: sets an object's state. A TorchScript object's state is the dict of its attributes;
  // any other object must be a dict (an OrderedDict), whose state may carry the state dict's
  // {'_metadata': {module: {'version': n}}}.
  void set_state(std::uint32_t obj, std::uint32_t state) {
    if (nodes_[obj].object) {
      if (nodes_[state].k != kind::dict)
        fail(fmt::format("BUILD of TorchScript object {} with a {} state (a class with __setstate__) is not supported",
                         nodes_[obj].owned, kind_name(nodes_[state].k)));
      auto items = nodes_[state].items;
      nodes_[obj].items = std::move(items);
      return;
    }
    if (nodes_[obj].k != kind::dict)
      fail(fmt::format("BUILD (setting object state) on a {} is not supported", kind_name(nodes_[obj].k)));
    if (nodes_[state].k == kind::dict) {
      const auto& items = nodes_[state].items;
      for (std::size_t k = 0; k + 1 < items.size(); k += 2)
        if (nodes_[items[k]].k == kind::str && nodes_[items[k]].sv() == "_metadata" && nodes_[items[k + 1]].k == kind::dict)
          nodes_[obj].meta = items[k + 1];
    }
  }
};

} // namespace graft::detail
