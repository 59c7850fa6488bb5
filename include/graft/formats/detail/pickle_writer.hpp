#pragma once
// The pickler: a graft::value as the protocol-2 pickle torch.save writes, with tensors as
// _rebuild_tensor_v2 calls over persistent storage ids. Tensors that share a storage in C++
// name one storage record, so Python sees them sharing memory too.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/formats/detail/pickle_globals.hpp>
#include <graft/formats/detail/pickle_opcodes.hpp>
#include <graft/state_dict/value.hpp>

namespace graft::detail {

/// A storage the pickle names by key; its bytes become the record "data/<key>".
struct storage_record {
  std::string key;
  c10::Storage storage;
  std::int64_t numel;  ///< the element count its persistent id gives
};

/// Pickles one graft::value. `file` names the destination in error messages.
class pickler {
public:
  explicit pickler(std::string_view file) : file_(file) { out_.reserve(1 << 12); }
  /// For torch.save's legacy format: persistent ids carry view metadata (None), and dtypes
  /// without a legacy storage class are refused.
  struct legacy_t {};
  static constexpr legacy_t legacy{};
  pickler(std::string_view file, legacy_t) : pickler(file) { legacy_ = true; }

  /// Pickles `v` whole: PROTO 2 ... STOP.
  void dump(const value& v) {
    emit(pickle_op::proto);
    out_ += '\x02';  // the protocol
    write(v);
    emit(pickle_op::stop);
  }
  /// The pickle bytes.
  const std::string& bytes() const noexcept { return out_; }
  /// The storages the pickle names, in key order.
  const std::vector<storage_record>& storages() const noexcept { return storages_; }

private:
  void emit(pickle_op op) { out_ += op_byte(op); }
  void u32(std::uint32_t v) {
    char b[4];
    for (int i = 0; i < 4; ++i) b[i] = static_cast<char>(v >> (8 * i));
    out_.append(b, 4);
  }
  void text(std::string_view s) {
    if (s.size() > 0xFFFFFFFFu) fail("a string longer than 4 GiB cannot be pickled");
    emit(pickle_op::binunicode);
    u32(static_cast<std::uint32_t>(s.size()));
    out_ += s;
  }
  void integer(std::int64_t v) {
    if (v >= 0 && v < 256) {
      emit(pickle_op::binint1);
      out_ += static_cast<char>(v);
    } else if (v >= 0 && v < 65536) {
      emit(pickle_op::binint2);
      out_ += static_cast<char>(v & 0xFF);
      out_ += static_cast<char>(v >> 8);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      emit(pickle_op::binint);
      u32(static_cast<std::uint32_t>(static_cast<std::int32_t>(v)));
    } else {
      // LONG1: the shortest little-endian two's complement that keeps the sign.
      char b[8];
      auto u = static_cast<std::uint64_t>(v);
      for (int i = 0; i < 8; ++i) b[i] = static_cast<char>(u >> (8 * i));
      int n = 8;
      while (n > 1 && ((b[n - 1] == 0 && !(b[n - 2] & 0x80)) || (b[n - 1] == char(0xFF) && (b[n - 2] & 0x80)))) --n;
      emit(pickle_op::long1);
      out_ += static_cast<char>(n);
      out_.append(b, n);
    }
  }
  void floating(double d) {
    std::uint64_t bits;
    std::memcpy(&bits, &d, 8);
    emit(pickle_op::binfloat);
    for (int i = 7; i >= 0; --i) out_ += static_cast<char>(bits >> (8 * i));
  }
  // A global, memoized on first use so each is spelled once.
  void global(std::string_view module, std::string_view name) {
    std::string full = fmt::format("{}\n{}\n", module, name);
    if (auto it = memo_.find(full); it != memo_.end()) return get(it->second);
    emit(pickle_op::global);
    out_ += full;
    auto id = static_cast<std::uint32_t>(memo_.size());
    memo_.emplace(std::move(full), id);
    if (id < 256) {
      emit(pickle_op::binput);
      out_ += static_cast<char>(id);
    } else {
      emit(pickle_op::long_binput);
      u32(id);
    }
  }
  void get(std::uint32_t id) {
    if (id < 256) {
      emit(pickle_op::binget);
      out_ += static_cast<char>(id);
    } else {
      emit(pickle_op::long_binget);
      u32(id);
    }
  }
  void int_tuple(c10::IntArrayRef xs) {
    if (xs.empty()) return emit(pickle_op::empty_tuple);
    if (xs.size() > 3) emit(pickle_op::mark);
    for (auto x : xs) integer(x);
    close_tuple(xs.size());
  }
  // Ends a tuple of n items: TUPLE1..3 take them off the stack, a longer one needs its MARK.
  void close_tuple(std::size_t n) {
    emit(n == 1 ? pickle_op::tuple1 : n == 2 ? pickle_op::tuple2 : n == 3 ? pickle_op::tuple3 : pickle_op::tuple);
  }
  void empty_ordered_dict() {
    global("collections", "OrderedDict");
    emit(pickle_op::empty_tuple);
    emit(pickle_op::reduce);
  }

  [[noreturn]] void fail(std::string_view what) const {
    throw format_error(fmt::format("cannot write '{}': {}{}", file_, what,
                                   path_.empty() ? std::string() : fmt::format(" (at '{}')", path_)));
  }

  void write(const value& v) {
    if (v.is_none()) emit(pickle_op::none);
    else if (v.is_bool()) emit(v.as_bool() ? pickle_op::newtrue : pickle_op::newfalse);
    else if (v.is_int()) integer(v.as_int());
    else if (v.is_float()) floating(v.as_number());
    else if (v.is_string()) text(v.as_string());
    else if (v.is_bytes()) {
      // As Python's protocol 2 writes bytes: _codecs.encode(<latin-1 text>, 'latin1'), which
      // torch.load's weights_only unpickler accepts (it refuses protocol 3's BINBYTES).
      auto& b = std::get<value::bytes>(v.raw()).data;
      std::string latin1;
      latin1.reserve(b.size());
      for (unsigned char c : b) {
        if (c < 0x80) {
          latin1 += static_cast<char>(c);
        } else {
          latin1 += static_cast<char>(0xC0 | (c >> 6));
          latin1 += static_cast<char>(0x80 | (c & 0x3F));
        }
      }
      global("_codecs", "encode");
      text(latin1);
      text("latin1");
      emit(pickle_op::tuple2);
      emit(pickle_op::reduce);
    } else if (v.is_tensor()) tensor(v.as_tensor());
    else if (v.is_sequence()) sequence_of(v.as_sequence());
    else if (v.is_dict()) dict_of(v.as_dict());
  }

  void sequence_of(const sequence& s) {
    const auto n = s.items.size();
    auto item = [&](std::size_t i) {
      auto keep = path_.size();
      path_ += (path_.empty() ? "" : ".") + std::to_string(i);
      write(s.items[i]);
      path_.resize(keep);
    };
    if (s.is_tuple) {
      if (n == 0) return emit(pickle_op::empty_tuple);
      if (n > 3) emit(pickle_op::mark);
      for (std::size_t i = 0; i < n; ++i) item(i);
      close_tuple(n);
      return;
    }
    emit(pickle_op::empty_list);
    if (n == 0) return;
    emit(pickle_op::mark);
    for (std::size_t i = 0; i < n; ++i) item(i);
    emit(pickle_op::appends);
  }

  // A dict of tensors (a state dict) is written as the OrderedDict state_dict() returns; any
  // other dict as a plain dict, as Python writes checkpoints and optimizer states.
  void dict_of(const dict& d) {
    bool state_dict = !d.empty();
    for (auto& [k, v] : d) state_dict &= v.is_tensor();
    if (state_dict) empty_ordered_dict();
    else emit(pickle_op::empty_dict);
    if (d.empty()) return;
    emit(pickle_op::mark);
    for (auto& [k, v] : d) {
      write(k);
      auto keep = path_.size();
      path_ += (path_.empty() ? "" : ".") + (k.is_string() || k.is_int() ? k.key_text() : std::string(k.type_name()));
      write(v);
      path_.resize(keep);
    }
    emit(pickle_op::setitems);
  }

  void tensor(torch::Tensor t) {
    if (!t.defined()) { emit(pickle_op::none); return; }
    if (t.layout() != torch::kStrided) fail(fmt::format("a tensor of layout {} cannot be saved; only strided (dense) tensors can", c10::str(t.layout())));
    // Dtypes with a legacy storage class are written as PyTorch 1.x and 2.x write them
    // (_rebuild_tensor_v2 over a typed storage); the 2.x-only dtypes (uint16, float8, ...) as
    // PyTorch 2.x does (_rebuild_tensor_v3 over an untyped storage, naming the dtype).
    auto type = storage_type_name(t.scalar_type());
    auto python = find_dtype(t.scalar_type());
    if (!type && !python)
      fail(fmt::format("dtype {} has no torch storage type graft can write", c10::toString(t.scalar_type())));
    if (!type && legacy_)
      fail(fmt::format("dtype {} has no legacy storage class, so torch.save's legacy format cannot hold it; save in "
                       "the zip format", c10::toString(t.scalar_type())));
    // A meta tensor stands in for data written later (a streamed write): its storage has
    // the size and identity the pickle needs, and no bytes.
    if (!t.device().is_cpu() && !t.is_meta()) t = t.cpu();
    if (t.is_conj()) t = t.resolve_conj();
    if (t.is_neg()) t = t.resolve_neg();
    const auto itemsize = static_cast<std::int64_t>(t.element_size());
    auto storage = t.storage();
    auto [it, fresh] = keys_.try_emplace(storage.unsafeGetStorageImpl(), storages_.size());
    const std::int64_t numel = static_cast<std::int64_t>(storage.nbytes()) / (type ? itemsize : 1);
    if (fresh) storages_.push_back({std::to_string(storages_.size()), storage, numel});
    const auto& key = storages_[it->second].key;

    global("torch._utils", type ? "_rebuild_tensor_v2" : "_rebuild_tensor_v3");
    emit(pickle_op::mark);
    emit(pickle_op::mark);
    text("storage");
    if (type) global("torch", *type);
    else global("torch.storage", "UntypedStorage");
    text(key);
    text("cpu");
    integer(numel);
    if (legacy_) emit(pickle_op::none);  // no view
    emit(pickle_op::tuple);
    emit(pickle_op::binpersid);
    integer(t.storage_offset());
    int_tuple(t.sizes());
    int_tuple(t.strides());
    emit(t.requires_grad() ? pickle_op::newtrue : pickle_op::newfalse);
    empty_ordered_dict();  // backward hooks
    if (!type) global("torch", python->python);
    emit(pickle_op::tuple);
    emit(pickle_op::reduce);
  }

  std::string_view file_;
  bool legacy_ = false;
  std::string out_;
  std::string path_;
  std::unordered_map<std::string, std::uint32_t> memo_;
  std::unordered_map<const c10::StorageImpl*, std::size_t> keys_;
  std::vector<storage_record> storages_;
};

} // namespace graft::detail
