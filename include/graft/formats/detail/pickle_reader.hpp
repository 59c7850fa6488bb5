#pragma once
// The unpickler for what torch.save writes. Objects are built in an arena indexed by the
// stack and the memo, so containers filled after they were memoized are seen filled through
// every reference, as in Python; the arena becomes a graft::value at STOP. Globals come from an
// allow-list and are never imported or called: each one names a fixed C++ rebuild.

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/formats/detail/pickle_globals.hpp>
#include <graft/state_dict/value.hpp>

namespace graft::detail {

/// Resolves the storage a BINPERSID names: ('storage', torch.<T>Storage, key, location, numel).
/// Receives the pickle offset of the BINPERSID for its messages; throws format_error.
using storage_loader =
    std::function<c10::Storage(std::string_view key, torch::Dtype dtype, std::int64_t numel, std::size_t offset)>;

/// What a pickle may hold beyond plain containers and tensors.
enum class pickle_dialect : std::uint8_t {
  torch_save,   ///< Python's torch.save: the allow-list of pickle_globals.hpp
  torchscript,  ///< a TorchScript archive's data.pkl: also `__torch__.*` objects and torch.jit._pickle's builders
};

/// Parses one pickle (a zip record's bytes) into a graft::value.
class unpickler {
public:
  /// `file` and `record` only name the input in error messages, which give byte offsets
  /// from `base` (the pickle's offset in `record`, for a pickle that is part of a stream).
  unpickler(std::string_view data, std::string_view file, std::string_view record, storage_loader load,
            pickle_dialect dialect = pickle_dialect::torch_save, std::size_t base = 0)
      : d_(reinterpret_cast<const unsigned char*>(data.data())), n_(data.size()), base_(base), file_(file), record_(record),
        load_(std::move(load)), dialect_(dialect) {
    nodes_.reserve(n_ / 6 + 16);
    stack_.reserve(64);
  }

  /// Runs the pickle to its STOP and returns the object it built. A TorchScript object
  /// (torchscript dialect) becomes the dict of its attributes.
  value run() { return to_value(parse(), 0); }

  /// After run(): the bytes the pickle took, its STOP included (a stream of pickles, as the
  /// legacy torch.save format is, goes on from there).
  std::size_t consumed() const noexcept { return pos_; }

  /// For a TorchScript archive's data.pkl, whose root is a scripted module: runs the pickle and
  /// returns the module's attributes by dotted name, the attributes of an object held directly
  /// in an attribute (a submodule) under "<attribute>.<name>", in the pickle's (slot) order. An
  /// attribute named in `skip` (nn.Module's bookkeeping: `training`, `_is_full_backward_hook`)
  /// is left out at every level.
  dict run_flattened(std::initializer_list<std::string_view> skip) {
    auto root = parse();
    if (!nodes_[root].object)
      fail(fmt::format("the pickle holds a {}, not a TorchScript module", kind_name(nodes_[root].k)));
    dict out;
    std::unordered_set<std::string> seen;
    std::string prefix;
    flatten(root, skip, prefix, seen, out, 0);
    return out;
  }

private:
  // Runs the pickle to its STOP; returns the node of the object it built.
  std::uint32_t parse() {
    for (;;) {
      at_ = pos_;
      if (pos_ >= n_) fail("the pickle ends without a STOP opcode (truncated?)");
      const unsigned char op = d_[pos_++];
      switch (op) {
        case 0x80: need(1, "PROTO"); ++pos_; break;                        // PROTO
        case 0x95: need(8, "FRAME"); pos_ += 8; break;                     // FRAME: framing only
        case '.': return pop();                                             // STOP
        case '(': marks_.push_back(stack_.size()); break;                  // MARK
        case '0': pop(); break;                                             // POP
        case '1': stack_.resize(pop_mark("POP_MARK")); break;               // POP_MARK
        case '2': push_index(top("DUP")); break;                            // DUP
        case 'N': push(kind::none); break;
        case 0x88: push_bool(true); break;                                  // NEWTRUE
        case 0x89: push_bool(false); break;                                 // NEWFALSE
        case 'K': need(1, "BININT1"); push_int(d_[pos_]); pos_ += 1; break;
        case 'M': need(2, "BININT2"); push_int(le(2)); pos_ += 2; break;
        case 'J': need(4, "BININT"); push_int(std::int32_t(le(4))); pos_ += 4; break;
        case 0x8a: { need(1, "LONG1"); std::size_t k = d_[pos_++]; long_int(k, "LONG1"); break; }
        case 0x8b: { need(4, "LONG4"); std::size_t k = le(4); pos_ += 4; long_int(k, "LONG4"); break; }
        case 'I': text_int(false); break;                                   // INT
        case 'L': text_int(true); break;                                    // LONG
        case 'G': {                                                         // BINFLOAT, big-endian
          need(8, "BINFLOAT");
          std::uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = bits << 8 | d_[pos_ + k];
          pos_ += 8;
          double v;
          std::memcpy(&v, &bits, 8);
          push_float(v);
          break;
        }
        case 'F': {                                                         // FLOAT, text
          auto line = read_line("FLOAT");
          double v = 0;
          auto r = std::from_chars(line.data(), line.data() + line.size(), v);
          if (r.ec != std::errc() || r.ptr != line.data() + line.size()) fail(fmt::format("bad FLOAT text '{}'", line));
          push_float(v);
          break;
        }
        case 'X': push_text(kind::str, le_len(4, "BINUNICODE"), "BINUNICODE"); break;
        case 0x8c: push_text(kind::str, le_len(1, "SHORT_BINUNICODE"), "SHORT_BINUNICODE"); break;
        case 0x8d: push_text(kind::str, le_len(8, "BINUNICODE8"), "BINUNICODE8"); break;
        case 'T': push_text(kind::str, le_len(4, "BINSTRING"), "BINSTRING"); break;
        case 'U': push_text(kind::str, le_len(1, "SHORT_BINSTRING"), "SHORT_BINSTRING"); break;
        case 'B': push_text(kind::bytes, le_len(4, "BINBYTES"), "BINBYTES"); break;
        case 'C': push_text(kind::bytes, le_len(1, "SHORT_BINBYTES"), "SHORT_BINBYTES"); break;
        case 0x8e: push_text(kind::bytes, le_len(8, "BINBYTES8"), "BINBYTES8"); break;
        case 0x96: push_text(kind::bytes, le_len(8, "BYTEARRAY8"), "BYTEARRAY8"); break;
        case ']': push(kind::list); break;                                  // EMPTY_LIST
        case ')': push(kind::tuple); break;                                 // EMPTY_TUPLE
        case '}': push(kind::dict); break;                                  // EMPTY_DICT
        case 0x8f: push(kind::list); break;                                 // EMPTY_SET, read as a list
        case 'l': collect(kind::list, "LIST"); break;
        case 't': collect(kind::tuple, "TUPLE"); break;
        case 0x91: collect(kind::list, "FROZENSET"); break;
        case 'd': collect(kind::dict, "DICT"); break;
        case 0x85: small_tuple(1, "TUPLE1"); break;
        case 0x86: small_tuple(2, "TUPLE2"); break;
        case 0x87: small_tuple(3, "TUPLE3"); break;
        case 'a': {                                                         // APPEND
          auto x = pop();
          auto& c = container(top("APPEND"), kind::list, "APPEND");
          c.items.push_back(x);
          break;
        }
        case 'e': case 0x90: extend(op == 'e' ? "APPENDS" : "ADDITEMS"); break;
        case 's': {                                                         // SETITEM
          auto v = pop(), k = pop();
          auto& c = container(top("SETITEM"), kind::dict, "SETITEM");
          c.items.push_back(k);
          c.items.push_back(v);
          break;
        }
        case 'u': {                                                         // SETITEMS
          auto start = pop_mark("SETITEMS");
          if ((stack_.size() - start) % 2) fail("SETITEMS with an odd number of items");
          if (start == 0) fail("stack underflow: SETITEMS has no dict below its MARK");
          auto& c = container(stack_[start - 1], kind::dict, "SETITEMS");
          c.items.insert(c.items.end(), stack_.begin() + start, stack_.end());
          stack_.resize(start);
          break;
        }
        case 'q': need(1, "BINPUT"); put(d_[pos_]); pos_ += 1; break;
        case 'r': need(4, "LONG_BINPUT"); put(le(4)); pos_ += 4; break;
        case 0x94: put(memo_count_); break;                                 // MEMOIZE
        case 'p': put(text_index(read_line("PUT"))); break;
        case 'h': need(1, "BINGET"); get(d_[pos_]); pos_ += 1; break;
        case 'j': need(4, "LONG_BINGET"); get(le(4)); pos_ += 4; break;
        case 'g': get(text_index(read_line("GET"))); break;
        case 'c': {                                                         // GLOBAL module\nname\n
          auto module = read_line("GLOBAL");
          auto name = read_line("GLOBAL");
          push_global(module, name);
          break;
        }
        case 0x93: {                                                        // STACK_GLOBAL
          auto name = pop(), module = pop();
          if (nodes_[name].k != kind::str || nodes_[module].k != kind::str) fail("STACK_GLOBAL needs two strings");
          push_global(nodes_[module].sv(), nodes_[name].sv());
          break;
        }
        case 'R': { auto args = pop(), fn = pop(); call(fn, args, "REDUCE"); break; }
        case 0x81: { auto args = pop(), cls = pop(); call(cls, args, "NEWOBJ"); break; }
        case 'b': {                                                         // BUILD
          auto state = pop();
          auto obj = top("BUILD");
          if (nodes_[obj].object) {  // a TorchScript object: its state is the dict of its attributes
            if (nodes_[state].k != kind::dict)
              fail(fmt::format("BUILD of TorchScript object {} with a {} state (a class with __setstate__) is not supported",
                               nodes_[obj].owned, kind_name(nodes_[state].k)));
            auto items = nodes_[state].items;
            nodes_[obj].items = std::move(items);
            break;
          }
          // Otherwise the state is an OrderedDict's {'_metadata': {module: {'version': n}}}.
          if (nodes_[obj].k != kind::dict)
            fail(fmt::format("BUILD (setting object state) on a {} is not supported", kind_name(nodes_[obj].k)));
          if (nodes_[state].k == kind::dict) {
            const auto& items = nodes_[state].items;
            for (std::size_t k = 0; k + 1 < items.size(); k += 2)
              if (nodes_[items[k]].k == kind::str && nodes_[items[k]].sv() == "_metadata" && nodes_[items[k + 1]].k == kind::dict)
                nodes_[obj].meta = items[k + 1];
          }
          break;
        }
        case 'Q': persistent_id(); break;                                   // BINPERSID
        case 'P': fail("unsupported pickle opcode PERSID (text persistent id)");
        case 'S': fail("unsupported pickle opcode STRING (quoted text string)");
        case 'V': fail("unsupported pickle opcode UNICODE (raw-unicode-escape text)");
        case 'i': fail("unsupported pickle opcode INST (it constructs an arbitrary class)");
        case 'o': fail("unsupported pickle opcode OBJ (it constructs an arbitrary class)");
        case 0x92: fail("unsupported pickle opcode NEWOBJ_EX (it constructs an arbitrary class)");
        case 0x82: case 0x83: case 0x84: fail("unsupported pickle opcode EXT (extension registry)");
        case 0x97: fail("unsupported pickle opcode NEXT_BUFFER (out-of-band buffer)");
        case 0x98: fail("unsupported pickle opcode READONLY_BUFFER (out-of-band buffer)");
        default: fail(fmt::format("unknown pickle opcode 0x{:02x}", op));
      }
    }
  }

  enum class kind : std::uint8_t { none, boolean, integer, floating, str, bytes, tensor, list, tuple, dict, global, storage };

  // One pickled object. `text` views the pickle unless `owned` holds decoded text.
  struct node {
    kind k = kind::none;
    bool owns = false;
    bool object = false;  // a dict that is a TorchScript object's attributes; `owned` names its class
    global_id g = global_id::ordered_dict;
    torch::Dtype dtype = torch::kFloat;
    std::int64_t i = 0;  // int, bool, storage numel
    std::int64_t off = 0;  // a storage view's first element in its storage (legacy view metadata)
    std::uint32_t meta = std::numeric_limits<std::uint32_t>::max();  // a dict's _metadata dict
    double f = 0;
    std::string_view text;
    std::string owned;
    torch::Tensor tensor;
    c10::Storage storage;
    std::vector<std::uint32_t> items;  // list/tuple elements; dict keys and values interleaved
    // The text of a str or bytes node (owned text is read here, never cached: nodes move).
    std::string_view sv() const noexcept { return owns ? std::string_view(owned) : text; }
  };

  static constexpr std::uint32_t no_entry = std::numeric_limits<std::uint32_t>::max();
  static constexpr int max_depth = 1000;

  static std::string_view kind_name(kind k) {
    static constexpr std::string_view names[] = {"None", "bool", "int", "float", "str", "bytes",
                                                 "Tensor", "list", "tuple", "dict", "global", "storage"};
    return names[static_cast<int>(k)];
  }

  [[noreturn]] void fail(std::string_view what) const {
    throw format_error(what, {.file = std::string(file_), .record = std::string(record_), .offset = base_ + at_});
  }

  void need(std::size_t k, std::string_view op) const {
    if (n_ - pos_ < k) fail(fmt::format("the pickle is truncated inside {}", op));
  }
  std::uint64_t le(std::size_t k) const {
    std::uint64_t v = 0;
    for (std::size_t b = k; b-- > 0;) v = v << 8 | d_[pos_ + b];
    return v;
  }
  // A length prefix; checked against the bytes left so a huge claim never allocates.
  std::size_t le_len(std::size_t k, std::string_view op) {
    need(k, op);
    std::uint64_t len = le(k);
    pos_ += k;
    if (len > n_ - pos_)
      fail(fmt::format("{} claims {} bytes but only {} remain in the pickle", op, len, n_ - pos_));
    return static_cast<std::size_t>(len);
  }
  std::string_view read_line(std::string_view op) {
    const void* nl = std::memchr(d_ + pos_, '\n', n_ - pos_);
    if (!nl) fail(fmt::format("the pickle is truncated inside {} (no end of line)", op));
    auto end = static_cast<const unsigned char*>(nl) - d_;
    std::string_view line(reinterpret_cast<const char*>(d_ + pos_), end - pos_);
    pos_ = end + 1;
    return line;
  }

  std::uint32_t make(kind k) {
    if (nodes_.size() >= no_entry) fail("too many objects");
    nodes_.emplace_back().k = k;
    return static_cast<std::uint32_t>(nodes_.size() - 1);
  }
  void push_index(std::uint32_t i) { stack_.push_back(i); }
  std::uint32_t push(kind k) {
    auto i = make(k);
    stack_.push_back(i);
    return i;
  }
  void push_bool(bool b) { nodes_[push(kind::boolean)].i = b; }
  void push_int(std::int64_t v) { nodes_[push(kind::integer)].i = v; }
  void push_float(double v) { nodes_[push(kind::floating)].f = v; }
  void push_text(kind k, std::size_t len, std::string_view) {
    auto i = push(k);
    nodes_[i].text = std::string_view(reinterpret_cast<const char*>(d_ + pos_), len);
    pos_ += len;
  }

  // LONG1/LONG4: little-endian two's complement of k bytes; graft holds 64-bit integers.
  void long_int(std::size_t k, std::string_view op) {
    if (k > n_ - pos_) fail(fmt::format("{} claims {} bytes but only {} remain in the pickle", op, k, n_ - pos_));
    if (k > 8) fail(fmt::format("{} integer of {} bytes does not fit in 64 bits", op, k));
    std::uint64_t v = le(k);
    if (k > 0 && k < 8 && (d_[pos_ + k - 1] & 0x80)) v |= ~std::uint64_t(0) << (8 * k);  // sign-extend
    pos_ += k;
    push_int(static_cast<std::int64_t>(v));
  }
  void text_int(bool is_long) {
    auto line = read_line(is_long ? "LONG" : "INT");
    if (!is_long && (line == "00" || line == "01")) return push_bool(line == "01");
    if (is_long && !line.empty() && line.back() == 'L') line.remove_suffix(1);
    std::int64_t v = 0;
    auto r = std::from_chars(line.data(), line.data() + line.size(), v);
    if (r.ec != std::errc() || r.ptr != line.data() + line.size())
      fail(fmt::format("bad {} text '{}' (or out of 64-bit range)", is_long ? "LONG" : "INT", line));
    push_int(v);
  }
  std::uint64_t text_index(std::string_view line) {
    std::uint64_t v = 0;
    auto r = std::from_chars(line.data(), line.data() + line.size(), v);
    if (r.ec != std::errc() || r.ptr != line.data() + line.size()) fail(fmt::format("bad memo index '{}'", line));
    return v;
  }

  std::uint32_t pop() {
    if (stack_.empty() || (!marks_.empty() && marks_.back() == stack_.size()))
      fail(fmt::format("stack underflow at opcode '{}'", static_cast<char>(d_[at_])));
    auto i = stack_.back();
    stack_.pop_back();
    return i;
  }
  std::uint32_t top(std::string_view op) const {
    if (stack_.empty()) fail(fmt::format("stack underflow at {}", op));
    return stack_.back();
  }
  std::size_t pop_mark(std::string_view op) {
    if (marks_.empty()) fail(fmt::format("{} without a MARK", op));
    auto m = marks_.back();
    marks_.pop_back();
    return m;
  }
  node& container(std::uint32_t i, kind k, std::string_view op) {
    if (nodes_[i].k != k) fail(fmt::format("{} on a {}, not a {}", op, kind_name(nodes_[i].k), kind_name(k)));
    return nodes_[i];
  }
  void collect(kind k, std::string_view op) {
    auto start = pop_mark(op);
    if (k == kind::dict && (stack_.size() - start) % 2) fail("DICT with an odd number of items");
    std::vector<std::uint32_t> items(stack_.begin() + start, stack_.end());
    stack_.resize(start);
    nodes_[push(k)].items = std::move(items);
  }
  void small_tuple(std::size_t k, std::string_view op) {
    std::size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() - floor < k) fail(fmt::format("stack underflow at {}", op));
    std::vector<std::uint32_t> items(stack_.end() - k, stack_.end());
    stack_.resize(stack_.size() - k);
    nodes_[push(kind::tuple)].items = std::move(items);
  }
  void extend(std::string_view op) {
    auto start = pop_mark(op);
    if (start == 0) fail(fmt::format("stack underflow: {} has no list below its MARK", op));
    auto& c = container(stack_[start - 1], kind::list, op);
    c.items.insert(c.items.end(), stack_.begin() + start, stack_.end());
    stack_.resize(start);
  }

  // Memo ids of a real pickle are dense and below its length; a larger id is corrupt and
  // must not size the memo.
  void put(std::uint64_t id) {
    auto v = top("PUT");
    if (id >= n_ + 1) fail(fmt::format("memo index {} is larger than the pickle", id));
    if (id >= memo_.size()) memo_.resize(id + 1, no_entry);
    memo_[id] = v;
    memo_count_ = std::max<std::uint64_t>(memo_count_, id + 1);
  }
  void get(std::uint64_t id) {
    if (id >= memo_.size() || memo_[id] == no_entry) fail(fmt::format("memo entry {} is read before it is stored", id));
    stack_.push_back(memo_[id]);
  }

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

  const node& arg(std::uint32_t args, std::size_t k) const { return nodes_[nodes_[args].items[k]]; }
  std::int64_t int_arg(std::uint32_t args, std::size_t k, std::string_view what) const {
    auto& n = arg(args, k);
    if (n.k != kind::integer && n.k != kind::boolean) fail(fmt::format("{} must be an int, not {}", what, kind_name(n.k)));
    return n.i;
  }
  c10::SmallVector<std::int64_t, 6> ints_arg(std::uint32_t args, std::size_t k, std::string_view what) const {
    auto& t = arg(args, k);
    if (t.k != kind::tuple && t.k != kind::list) fail(fmt::format("{} must be a tuple of ints, not {}", what, kind_name(t.k)));
    c10::SmallVector<std::int64_t, 6> out;
    for (auto e : t.items) {
      if (nodes_[e].k != kind::integer) fail(fmt::format("{} must be a tuple of ints", what));
      out.push_back(nodes_[e].i);
    }
    return out;
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
        if (argc == 1) {  // OrderedDict([(k, v), ...])
          auto& src = arg(args, 0);
          if (src.k != kind::list && src.k != kind::tuple) fail("OrderedDict's argument must be a list of pairs");
          std::vector<std::uint32_t> items;
          for (auto p : src.items) {
            if (nodes_[p].k != kind::tuple || nodes_[p].items.size() != 2) fail("OrderedDict's argument must be a list of pairs");
            items.push_back(nodes_[p].items[0]);
            items.push_back(nodes_[p].items[1]);
          }
          nodes_[d].items = std::move(items);
        }
        return push_index(d);
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

  void set_requires_grad(torch::Tensor& t, bool on) {
    if (!on) return;
    if (!c10::isFloatingType(t.scalar_type()) && !c10::isComplexType(t.scalar_type()))
      fail(fmt::format("only floating-point and complex tensors can require grad, not {}", c10::toString(t.scalar_type())));
    t.requires_grad_(true);
  }

  // The element count of storage `st` (of bytes, or of one dtype) seen as `dtype`.
  std::int64_t retype(const node& st, torch::Dtype dtype) {
    const auto from = static_cast<std::int64_t>(c10::elementSize(st.dtype));
    const auto to = static_cast<std::int64_t>(c10::elementSize(dtype));
    const std::int64_t bytes = st.i * from;
    if (bytes % to != 0 || st.off * from % to != 0)
      fail(fmt::format("storage '{}' of {} bytes does not hold whole {} elements", st.owned, bytes, c10::toString(dtype)));
    return bytes / to;
  }

  // A tensor over a storage; every index it can reach must lie inside the storage.
  torch::Tensor rebuild(const node& st, std::int64_t offset, c10::ArrayRef<std::int64_t> sizes,
                        c10::ArrayRef<std::int64_t> strides) {
    if (sizes.size() != strides.size())
      fail(fmt::format("tensor size {} and stride {} differ in length", fmt::join(sizes, ","), fmt::join(strides, ",")));
    if (offset < 0) fail(fmt::format("negative storage offset {}", offset));
    bool empty = false;
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      if (sizes[k] < 0 || strides[k] < 0)
        fail(fmt::format("negative tensor size or stride (size [{}], stride [{}])", fmt::join(sizes, ", "), fmt::join(strides, ", ")));
      empty |= sizes[k] == 0;
    }
    std::int64_t last = offset;  // the largest element index the tensor reaches
    bool overflow = false;
    if (!empty)
      for (std::size_t k = 0; k < sizes.size(); ++k) {
        std::int64_t span = 0;
        overflow |= __builtin_mul_overflow(sizes[k] - 1, strides[k], &span);
        overflow |= __builtin_add_overflow(last, span, &last);
      }
    std::int64_t numel = 1;
    for (auto s : sizes) overflow |= __builtin_mul_overflow(numel, s, &numel);
    if (overflow || (empty ? offset > st.i : last >= st.i))
      fail(fmt::format("tensor of size [{}], stride [{}] at offset {} reaches past its storage '{}' of {} elements",
                       fmt::join(sizes, ", "), fmt::join(strides, ", "), offset, st.owned, st.i));
    try {
      return torch::empty({0}, torch::TensorOptions().dtype(st.dtype)).set_(st.storage, st.off + offset, sizes, strides);
    } catch (const c10::Error& e) {
      fail(fmt::format("cannot rebuild a tensor: {}", e.what_without_backtrace()));
    }
  }

  void persistent_id() {
    auto pid = pop();
    auto& t = nodes_[pid];
    // torch.save's zip format: ('storage', type, key, location, numel); its legacy format adds
    // view metadata, None or (view_key, offset, numel) of a part of the storage.
    if (t.k != kind::tuple || (t.items.size() != 5 && t.items.size() != 6) || arg(pid, 0).k != kind::str ||
        arg(pid, 0).sv() != "storage")
      fail("persistent id is not a ('storage', type, key, location, numel[, view]) tuple");
    auto& type = arg(pid, 1);
    if (type.k != kind::global || (type.g != global_id::storage_type && type.g != global_id::untyped_storage))
      fail("persistent id does not name a torch storage type");
    if (arg(pid, 2).k != kind::str || arg(pid, 3).k != kind::str)
      fail("persistent id's storage key and location must be strings");
    std::int64_t numel = int_arg(pid, 4, "a storage's element count");
    if (numel < 0) fail(fmt::format("negative storage size {}", numel));
    auto dtype = type.dtype;
    std::string key(arg(pid, 2).sv());
    auto storage = load_(key, dtype, numel, at_);
    std::int64_t off = 0;
    if (t.items.size() == 6 && arg(pid, 5).k != kind::none) {
      const auto view = nodes_[pid].items[5];
      if (nodes_[view].k != kind::tuple || nodes_[view].items.size() != 3 || arg(view, 0).k != kind::str)
        fail("a storage's view metadata is not a (view_key, offset, numel) tuple");
      off = int_arg(view, 1, "a storage view's offset");
      const auto size = int_arg(view, 2, "a storage view's size");
      if (off < 0 || size < 0 || off > numel || size > numel - off)
        fail(fmt::format("view '{}' of elements [{}, {}) lies outside its storage '{}' of {} elements", arg(view, 0).sv(), off,
                         off + size, key, numel));
      numel = size;
    }
    auto i = push(kind::storage);
    nodes_[i].storage = std::move(storage);
    nodes_[i].dtype = dtype;
    nodes_[i].i = numel;
    nodes_[i].off = off;
    nodes_[i].owned = std::move(key);
  }

  void flatten(std::uint32_t obj, std::initializer_list<std::string_view> skip, std::string& prefix, std::unordered_set<std::string>& seen, dict& out,
               int depth) {
    if (depth > max_depth) fail(fmt::format("objects nest deeper than {} levels (or contain themselves)", max_depth));
    if (++built_ > max_built())
      fail(fmt::format("the pickle's shared references expand to more than {} objects", max_built()));
    const auto items = nodes_[obj].items;
    for (std::size_t k = 0; k + 1 < items.size(); k += 2) {
      const node& key = nodes_[items[k]];
      if (key.k != kind::str)
        fail(fmt::format("an attribute name of TorchScript object {} is a {}, not a str", nodes_[obj].owned, kind_name(key.k)));
      if (std::find(skip.begin(), skip.end(), key.sv()) != skip.end()) continue;
      const auto size = prefix.size();
      prefix += key.sv();
      count_text(prefix.size());
      if (nodes_[items[k + 1]].object) {
        prefix += '.';
        flatten(items[k + 1], skip, prefix, seen, out, depth + 1);
      } else {
        if (!seen.insert(prefix).second) fail(fmt::format("attribute '{}' is given twice", prefix));
        out.append(prefix, to_value(items[k + 1], depth + 1));
      }
      prefix.resize(size);
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

  const unsigned char* d_;
  std::size_t n_;
  std::size_t pos_ = 0, at_ = 0;
  std::size_t base_ = 0;
  std::string_view file_, record_;
  storage_loader load_;
  pickle_dialect dialect_;
  std::vector<node> nodes_;
  std::vector<std::uint32_t> stack_;
  std::vector<std::size_t> marks_;
  std::vector<std::uint32_t> memo_;
  std::uint64_t memo_count_ = 0;
  std::size_t built_ = 0;  // graft::values made by to_value (and objects flattened)
  std::size_t max_built() const noexcept { return (std::size_t(1) << 20) + 64 * n_; }
  std::size_t text_built_ = 0;  // bytes of text copied into graft::values and flattened names
  std::size_t max_text() const noexcept { return (std::size_t(1) << 26) + 64 * n_; }
  // One string shared from many places is copied to each: bound the bytes, as max_built bounds
  // the objects.
  void count_text(std::size_t k) {
    text_built_ += k;
    if (text_built_ > max_text())
      fail(fmt::format("the pickle's shared references expand to more than {} bytes of text", max_text()));
  }
};

} // namespace graft::detail
