#pragma once
// The unpickler's state: the pickle's bytes and a cursor over them, the arena of objects the
// pickle builds (indexed by the stack and the memo, so containers filled after they were
// memoized are seen filled through every reference, as in Python), and the errors, which name
// the file, the record and the offset of the opcode at fault.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/error.hpp>
#include <graft/formats/detail/pickle_globals.hpp>

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

/// The objects a pickle builds and the input it reads them from.
class pickle_arena {
protected:
  pickle_arena(std::string_view data, std::string_view file, std::string_view record, storage_loader load,
               pickle_dialect dialect, std::size_t base)
      : d_(reinterpret_cast<const unsigned char*>(data.data())), n_(data.size()), base_(base), file_(file), record_(record),
        load_(std::move(load)), dialect_(dialect) {
    nodes_.reserve(n_ / 6 + 16);
    stack_.reserve(64);
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
