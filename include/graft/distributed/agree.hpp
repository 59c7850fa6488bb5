#pragma once
// Agreement across ranks: exchange small strings and check that every rank describes the same
// thing (the same tensors under the same names, shapes and dtypes) before a collective relies
// on it. A mismatch raises the same distributed_error on every rank, naming the first
// differing entry, where a raw collective would pair up wrong tensors or wait forever.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include <graft/detail/join.hpp>
#include <graft/distributed/group.hpp>
#include <graft/error.hpp>
#include <graft/select/select.hpp>

namespace graft::dist::detail {

/// Every rank's `mine`, indexed by rank.
inline std::vector<std::string> allgather_strings(c10d::ProcessGroup& pg, const std::string& mine, std::string_view what) {
  auto dev = aux_device(pg);
  int n = pg.getSize();
  auto i64 = torch::TensorOptions().dtype(torch::kInt64).device(dev);
  std::vector<torch::Tensor> len_in{torch::full({1}, static_cast<std::int64_t>(mine.size()), i64)};
  std::vector<std::vector<torch::Tensor>> len_out(1);
  for (int r = 0; r < n; ++r) len_out[0].push_back(torch::empty({1}, i64));
  wait(pg, start(pg, what, [&] { return pg.allgather(len_out, len_in); }), what);
  std::vector<std::int64_t> lens;
  for (auto& t : len_out[0]) lens.push_back(t.cpu().item<std::int64_t>());
  std::int64_t longest = std::max<std::int64_t>(1, *std::max_element(lens.begin(), lens.end()));
  auto bytes = torch::zeros({longest}, torch::kUInt8);
  std::memcpy(bytes.data_ptr(), mine.data(), mine.size());
  std::vector<torch::Tensor> in{bytes.to(dev)};
  std::vector<std::vector<torch::Tensor>> out(1);
  auto u8 = torch::TensorOptions().dtype(torch::kUInt8).device(dev);
  for (int r = 0; r < n; ++r) out[0].push_back(torch::empty({longest}, u8));
  wait(pg, start(pg, what, [&] { return pg.allgather(out, in); }), what);
  std::vector<std::string> all;
  for (int r = 0; r < n; ++r) {
    auto t = out[0][r].cpu();
    all.emplace_back(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(lens[r]));
  }
  return all;
}

/// `text` as rank `root` has it, on every rank.
inline std::string broadcast_string(c10d::ProcessGroup& pg, const std::string& text, int root, std::string_view what) {
  auto dev = aux_device(pg);
  c10d::BroadcastOptions o;
  o.rootRank = root;
  std::vector<torch::Tensor> len{torch::full({1}, static_cast<std::int64_t>(text.size()), torch::TensorOptions().dtype(torch::kInt64).device(dev))};
  wait(pg, start(pg, what, [&] { return pg.broadcast(len, o); }), what);
  auto n = len[0].cpu().item<std::int64_t>();
  if (n == 0) return {};
  auto bytes = torch::empty({n}, torch::kUInt8);
  if (pg.getRank() == root) std::memcpy(bytes.data_ptr(), text.data(), text.size());
  std::vector<torch::Tensor> data{bytes.to(dev)};
  wait(pg, start(pg, what, [&] { return pg.broadcast(data, o); }), what);
  auto t = data[0].cpu();
  return std::string(static_cast<const char*>(t.data_ptr()), static_cast<std::size_t>(n));
}

/// One line per selected tensor: "path [shape] dtype".
inline std::string describe_tensors(const selection& s) {
  std::string d;
  for (auto& t : s)
    d += fmt::format("{} [{}] {}\n", t.path, graft::detail::join(t.tensor.sizes(), ", "), c10::toString(t.tensor.scalar_type()));
  return d;
}

inline std::vector<std::string_view> lines(std::string_view s) {
  std::vector<std::string_view> out;
  while (!s.empty()) {
    auto nl = s.find('\n');
    out.push_back(s.substr(0, nl));
    s = nl == std::string_view::npos ? std::string_view{} : s.substr(nl + 1);
  }
  return out;
}

/// Checks that every rank's `description` (lines from describe_tensors) equals rank 0's;
/// otherwise throws, on every rank, an error naming the first rank and line that differ.
inline void require_same_tensors(c10d::ProcessGroup& pg, const std::string& description, std::string_view what) {
  auto all = allgather_strings(pg, description, what);
  for (std::size_t r = 1; r < all.size(); ++r) {
    if (all[r] == all[0]) continue;
    auto a = lines(all[0]), b = lines(all[r]);
    std::size_t i = 0;
    while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
    auto entry = [](const std::vector<std::string_view>& l, std::size_t i) {
      return i < l.size() ? fmt::format("'{}'", l[i]) : std::string("nothing (its list ends)");
    };
    throw distributed_error(fmt::format(
        "{}: {}: ranks disagree on the selected tensors: at position {}, rank 0 has {} and rank {} has {} "
        "(rank 0 selects {} tensors, rank {} selects {}); build the model and the selection identically on every rank",
        who(pg), what, i, entry(a, i), r, entry(b, i), a.size(), r, b.size()));
  }
}

} // namespace graft::dist::detail
