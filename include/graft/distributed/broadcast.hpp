#pragma once
// broadcast(pg, model, sel): copy one rank's selected tensors into every rank's model (load a
// checkpoint once, then share it). verify_identical(pg, model, sel): check that every rank
// holds bit-identical selected tensors, by a checksum per tensor, naming the first that differs.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <ATen/ops/flatten_dense_tensors.h>
#include <ATen/ops/unflatten_dense_tensors.h>
#include <torch/utils.h>

#include <graft/distributed/agree.hpp>
#include <graft/distributed/group.hpp>
#include <graft/error.hpp>
#include <graft/select/basic.hpp>
#include <graft/select/select.hpp>

namespace graft::dist {

/// Options of broadcast().
struct broadcast_options {
  int root = 0;                             ///< the rank whose tensors every rank receives
  bool buffers = true;                      ///< share buffers (BatchNorm statistics) too
  std::int64_t bucket_bytes = 32 << 20;     ///< tensors travel packed in buffers of about this size
};

/// What broadcast() moved.
struct broadcast_result {
  std::size_t tensors = 0;   ///< tensors shared
  std::int64_t bytes = 0;    ///< their bytes
  std::size_t calls = 0;     ///< collective calls it took
};

namespace detail {

/// Buckets of same-dtype, same-device tensors, each at most about `cap` bytes, keeping the
/// tensors' order within a dtype (a model's int64 counters do not split its float buckets).
inline std::vector<std::vector<torch::Tensor>> pack(const std::vector<torch::Tensor>& ts, std::int64_t cap) {
  std::vector<std::vector<torch::Tensor>> out;
  struct open_bucket {
    torch::ScalarType dtype;
    torch::Device device;
    std::size_t index;
    std::int64_t bytes;
  };
  std::vector<open_bucket> open;
  for (auto& t : ts) {
    std::int64_t b = t.numel() * static_cast<std::int64_t>(t.element_size());
    auto it = std::find_if(open.begin(), open.end(),
                           [&](auto& o) { return o.dtype == t.scalar_type() && o.device == t.device(); });
    if (it == open.end()) {
      open.push_back({t.scalar_type(), t.device(), out.size(), 0});
      it = open.end() - 1;
      out.emplace_back();
    } else if (it->bytes + b > cap) {
      it->index = out.size();
      it->bytes = 0;
      out.emplace_back();
    }
    out[it->index].push_back(t);
    it->bytes += b;
  }
  return out;
}

/// A 64-bit hash of a tensor's bytes (and shape), equal across ranks iff the bytes are (up to
/// hash collisions).
inline std::int64_t checksum(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).contiguous();
  const auto* p = static_cast<const unsigned char*>(c.data_ptr());
  std::size_t n = static_cast<std::size_t>(c.numel()) * c.element_size();
  std::uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  auto mix = [&h](std::uint64_t w) {
    h ^= w + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
  };
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    mix(w);
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, p + i, n - i);
  mix(tail);
  for (auto s : c.sizes()) mix(static_cast<std::uint64_t>(s));
  return static_cast<std::int64_t>(h);
}

inline walk_options state_options(bool buffers) { return {.parameters = true, .buffers = buffers}; }

} // namespace detail

/// Copies rank `o.root`'s tensors that `sel` selects (parameters, and buffers unless
/// o.buffers is false) into the same tensors of every other rank, in place. Every rank must
/// select the same names, shapes and dtypes, or all of them throw distributed_error naming the
/// first difference.
template <selector S = everything_t>
broadcast_result broadcast(const process_group& group, torch::nn::Module& module, const S& sel = everything,
                           broadcast_options o = {}) {
  c10d::ProcessGroup& pg = detail::group_of(group, "broadcast");
  if (o.root < 0 || o.root >= pg.getSize())
    throw option_error(fmt::format("broadcast root {} is outside a world of {} processes", o.root, pg.getSize()));
  auto chosen = graft::select(module, sel, detail::state_options(o.buffers));
  detail::require_same_tensors(pg, detail::describe_tensors(chosen), "broadcast");
  broadcast_result r;
  std::vector<torch::Tensor> ts;
  for (auto& t : chosen) {
    ts.push_back(t.tensor);
    r.bytes += t.tensor.numel() * static_cast<std::int64_t>(t.tensor.element_size());
  }
  r.tensors = ts.size();
  torch::NoGradGuard no_grad;
  c10d::BroadcastOptions bo;
  bo.rootRank = o.root;
  for (auto& group : detail::pack(ts, o.bucket_bytes)) {
    std::vector<torch::Tensor> flat{at::flatten_dense_tensors(group)};
    detail::wait(pg, detail::start(pg, "broadcast", [&] { return pg.broadcast(flat, bo); }), "broadcast");
    ++r.calls;
    if (pg.getRank() == o.root) continue;
    auto parts = at::unflatten_dense_tensors(flat[0], group);
    for (std::size_t i = 0; i < group.size(); ++i) group[i].copy_(parts[i]);
  }
  return r;
}

/// Checks that every rank holds bit-identical tensors where `sel` selects (parameters and
/// buffers by default), exchanging one checksum per tensor. Throws distributed_error on every
/// rank, naming the first tensor that differs and how many do, if they are not.
template <selector S = everything_t>
void verify_identical(const process_group& group, const torch::nn::Module& module, const S& sel = everything,
                      walk_options opts = walk_options::state()) {
  c10d::ProcessGroup& pg = detail::group_of(group, "verify_identical");
  opts.every_name = false;
  auto chosen = graft::select(module, sel, opts);
  detail::require_same_tensors(pg, detail::describe_tensors(chosen), "verify_identical");
  auto dev = detail::aux_device(pg);
  auto sums = torch::empty({static_cast<std::int64_t>(chosen.size())}, torch::kInt64);
  for (std::size_t i = 0; i < chosen.size(); ++i) sums[static_cast<std::int64_t>(i)] = detail::checksum(chosen[i].tensor);
  std::vector<torch::Tensor> in{sums.to(dev)};
  std::vector<std::vector<torch::Tensor>> out(1);
  for (int r = 0; r < pg.getSize(); ++r) out[0].push_back(torch::empty_like(in[0]));
  detail::wait(pg, detail::start(pg, "verify_identical", [&] { return pg.allgather(out, in); }), "verify_identical");
  for (int r = 1; r < pg.getSize(); ++r) {
    auto diff = out[0][r].cpu().ne(out[0][0].cpu());
    auto n = diff.sum().item<std::int64_t>();
    if (n == 0) continue;
    auto first = diff.nonzero()[0][0].item<std::int64_t>();
    throw distributed_error(fmt::format("{}: verify_identical: rank {}'s '{}' differs from rank 0's ({} of {} selected "
                                        "tensors differ between rank 0 and rank {})",
                                        detail::who(pg), r, chosen[static_cast<std::size_t>(first)].path, n,
                                        chosen.size(), r));
  }
}

} // namespace graft::dist
