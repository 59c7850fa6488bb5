#pragma once
// The unpickler's opcode machine: reads a pickle's opcodes to its STOP, keeping the stack, the
// marks and the memo, and hands globals, calls, persistent ids and object states to the
// allow-listed rebuilds. Opcodes that construct arbitrary classes or need Python are refused.

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/formats/detail/pickle_opcodes.hpp>
#include <graft/formats/detail/pickle_rebuilds.hpp>

namespace graft::detail {

/// The rebuilds plus the opcodes that drive them.
class pickle_machine : protected pickle_rebuilds {
protected:
  using pickle_rebuilds::pickle_rebuilds;

  // Runs the pickle to its STOP; returns the node of the object it built.
  std::uint32_t parse() {
    for (;;) {
      at_ = pos_;
      if (pos_ >= n_) fail("the pickle ends without a STOP opcode (truncated?)");
      const unsigned char op = d_[pos_++];
      switch (static_cast<pickle_op>(op)) {
        case pickle_op::proto: need(1, "PROTO"); ++pos_; break;
        case pickle_op::frame: need(8, "FRAME"); pos_ += 8; break;  // framing only
        case pickle_op::stop: return pop();
        case pickle_op::mark: marks_.push_back(stack_.size()); break;
        case pickle_op::pop: pop(); break;
        case pickle_op::pop_mark: stack_.resize(pop_mark("POP_MARK")); break;
        case pickle_op::dup: push_index(top("DUP")); break;
        case pickle_op::none: push(kind::none); break;
        case pickle_op::newtrue: push_bool(true); break;
        case pickle_op::newfalse: push_bool(false); break;
        case pickle_op::binint1: need(1, "BININT1"); push_int(d_[pos_]); pos_ += 1; break;
        case pickle_op::binint2: need(2, "BININT2"); push_int(le(2)); pos_ += 2; break;
        case pickle_op::binint: need(4, "BININT"); push_int(std::int32_t(le(4))); pos_ += 4; break;
        case pickle_op::long1: { need(1, "LONG1"); std::size_t k = d_[pos_++]; long_int(k, "LONG1"); break; }
        case pickle_op::long4: { need(4, "LONG4"); std::size_t k = le(4); pos_ += 4; long_int(k, "LONG4"); break; }
        case pickle_op::int_text: text_int(false); break;
        case pickle_op::long_text: text_int(true); break;
        case pickle_op::binfloat: {  // big-endian
          need(8, "BINFLOAT");
          std::uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = bits << 8 | d_[pos_ + k];
          pos_ += 8;
          double v;
          std::memcpy(&v, &bits, 8);
          push_float(v);
          break;
        }
        case pickle_op::float_text: {
          auto line = read_line("FLOAT");
          double v = 0;
          auto r = std::from_chars(line.data(), line.data() + line.size(), v);
          if (r.ec != std::errc() || r.ptr != line.data() + line.size()) fail(fmt::format("bad FLOAT text '{}'", line));
          push_float(v);
          break;
        }
        case pickle_op::binunicode: push_text(kind::str, le_len(4, "BINUNICODE"), "BINUNICODE"); break;
        case pickle_op::short_binunicode: push_text(kind::str, le_len(1, "SHORT_BINUNICODE"), "SHORT_BINUNICODE"); break;
        case pickle_op::binunicode8: push_text(kind::str, le_len(8, "BINUNICODE8"), "BINUNICODE8"); break;
        case pickle_op::binstring: push_text(kind::str, le_len(4, "BINSTRING"), "BINSTRING"); break;
        case pickle_op::short_binstring: push_text(kind::str, le_len(1, "SHORT_BINSTRING"), "SHORT_BINSTRING"); break;
        case pickle_op::binbytes: push_text(kind::bytes, le_len(4, "BINBYTES"), "BINBYTES"); break;
        case pickle_op::short_binbytes: push_text(kind::bytes, le_len(1, "SHORT_BINBYTES"), "SHORT_BINBYTES"); break;
        case pickle_op::binbytes8: push_text(kind::bytes, le_len(8, "BINBYTES8"), "BINBYTES8"); break;
        case pickle_op::bytearray8: push_text(kind::bytes, le_len(8, "BYTEARRAY8"), "BYTEARRAY8"); break;
        case pickle_op::empty_list: push(kind::list); break;
        case pickle_op::empty_tuple: push(kind::tuple); break;
        case pickle_op::empty_dict: push(kind::dict); break;
        case pickle_op::empty_set: push(kind::list); break;  // read as a list
        case pickle_op::list: collect(kind::list, "LIST"); break;
        case pickle_op::tuple: collect(kind::tuple, "TUPLE"); break;
        case pickle_op::frozenset: collect(kind::list, "FROZENSET"); break;
        case pickle_op::dict: collect(kind::dict, "DICT"); break;
        case pickle_op::tuple1: small_tuple(1, "TUPLE1"); break;
        case pickle_op::tuple2: small_tuple(2, "TUPLE2"); break;
        case pickle_op::tuple3: small_tuple(3, "TUPLE3"); break;
        case pickle_op::append: {
          auto x = pop();
          auto& c = container(top("APPEND"), kind::list, "APPEND");
          c.items.push_back(x);
          break;
        }
        case pickle_op::appends: extend("APPENDS"); break;
        case pickle_op::additems: extend("ADDITEMS"); break;
        case pickle_op::setitem: {
          auto v = pop(), k = pop();
          auto& c = container(top("SETITEM"), kind::dict, "SETITEM");
          c.items.push_back(k);
          c.items.push_back(v);
          break;
        }
        case pickle_op::setitems: {
          auto start = pop_mark("SETITEMS");
          if ((stack_.size() - start) % 2) fail("SETITEMS with an odd number of items");
          if (start == 0) fail("stack underflow: SETITEMS has no dict below its MARK");
          auto& c = container(stack_[start - 1], kind::dict, "SETITEMS");
          c.items.insert(c.items.end(), stack_.begin() + start, stack_.end());
          stack_.resize(start);
          break;
        }
        case pickle_op::binput: need(1, "BINPUT"); put(d_[pos_]); pos_ += 1; break;
        case pickle_op::long_binput: need(4, "LONG_BINPUT"); put(le(4)); pos_ += 4; break;
        case pickle_op::memoize: put(memo_count_); break;
        case pickle_op::put: put(text_index(read_line("PUT"))); break;
        case pickle_op::binget: need(1, "BINGET"); get(d_[pos_]); pos_ += 1; break;
        case pickle_op::long_binget: need(4, "LONG_BINGET"); get(le(4)); pos_ += 4; break;
        case pickle_op::get: get(text_index(read_line("GET"))); break;
        case pickle_op::global: {  // module\nname\n
          auto module = read_line("GLOBAL");
          auto name = read_line("GLOBAL");
          push_global(module, name);
          break;
        }
        case pickle_op::stack_global: {
          auto name = pop(), module = pop();
          if (nodes_[name].k != kind::str || nodes_[module].k != kind::str) fail("STACK_GLOBAL needs two strings");
          push_global(nodes_[module].sv(), nodes_[name].sv());
          break;
        }
        case pickle_op::reduce: { auto args = pop(), fn = pop(); call(fn, args, "REDUCE"); break; }
        case pickle_op::newobj: { auto args = pop(), cls = pop(); call(cls, args, "NEWOBJ"); break; }
        case pickle_op::build: { auto state = pop(); set_state(top("BUILD"), state); break; }
        case pickle_op::binpersid: persistent_id(); break;
        case pickle_op::persid: fail("unsupported pickle opcode PERSID (text persistent id)");
        case pickle_op::string: fail("unsupported pickle opcode STRING (quoted text string)");
        case pickle_op::unicode: fail("unsupported pickle opcode UNICODE (raw-unicode-escape text)");
        case pickle_op::inst: fail("unsupported pickle opcode INST (it constructs an arbitrary class)");
        case pickle_op::obj: fail("unsupported pickle opcode OBJ (it constructs an arbitrary class)");
        case pickle_op::newobj_ex: fail("unsupported pickle opcode NEWOBJ_EX (it constructs an arbitrary class)");
        case pickle_op::ext1: case pickle_op::ext2: case pickle_op::ext4: fail("unsupported pickle opcode EXT (extension registry)");
        case pickle_op::next_buffer: fail("unsupported pickle opcode NEXT_BUFFER (out-of-band buffer)");
        case pickle_op::readonly_buffer: fail("unsupported pickle opcode READONLY_BUFFER (out-of-band buffer)");
        default: fail(fmt::format("unknown pickle opcode 0x{:02x}", op));
      }
    }
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


  std::vector<std::uint32_t> memo_;
  std::uint64_t memo_count_ = 0;
};

} // namespace graft::detail
