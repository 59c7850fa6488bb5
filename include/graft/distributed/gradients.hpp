#pragma once
// gradient_averager: averages the gradients of exactly the selected trainable parameters across
// ranks, packed into a few flat buckets so a large model makes few collective calls. Frozen
// parameters are never touched nor waited for (DDP's "unused parameters" trouble does not
// arise), and the set and order come from a selector, checked once to agree on every rank.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <graft/distributed/agree.hpp>
#include <graft/distributed/broadcast.hpp>
#include <graft/distributed/group.hpp>
#include <graft/error.hpp>
#include <graft/select/select.hpp>
#include <graft/select/tensor.hpp>

namespace graft::dist {

/// Options of gradient_averager.
struct gradient_options {
  /// Gradients travel packed in flat buffers of about this many bytes (DDP's default cap).
  std::int64_t bucket_bytes = 25 << 20;
  /// Start a bucket's allreduce from backward() as soon as its gradients are complete, so
  /// communication overlaps the rest of backward. Needs one backward() per average().
  bool overlap = false;
};

/// Cumulative traffic of a gradient_averager.
struct gradient_stats {
  std::int64_t steps = 0;  ///< average() calls
  std::int64_t calls = 0;  ///< allreduce calls
  std::int64_t bytes = 0;  ///< bytes handed to allreduce
};

/// Averages the gradients of a fixed set of trainable parameters across the ranks of a process
/// group. Build it after freezing, on every rank; call average() after backward() and before
/// the optimizer's step():
///   graft::dist::gradient_averager avg(pg, *net);          // the trainable parameters
///   loss.backward(); avg.average(); opt.step();
class gradient_averager {
public:
  /// Selects the parameters `sel` picks (by default every trainable one); each must require
  /// grad. Checks with every rank that they select the same names, shapes and dtypes: a
  /// distributed_error on every rank, naming the first difference, if not.
  template <selector S = requires_grad_t>
  gradient_averager(process_group pg, torch::nn::Module& module, const S& sel = trainable, gradient_options o = {})
      : s_(std::make_shared<state>()) {
    detail::group_of(pg, "gradient_averager");
    s_->pg = std::move(pg);
    s_->opts = o;
    auto chosen = graft::select(module, sel);
    for (auto& t : chosen)
      if (!t.tensor.requires_grad())
        throw option_error(fmt::format("gradient_averager: '{}' is frozen (requires_grad is false) but '{}' selects it; "
                                       "select trainable parameters only (the default, graft::trainable)",
                                       t.path, chosen.description()));
    detail::require_same_tensors(*s_->pg, detail::describe_tensors(chosen), "gradient_averager");
    build(chosen);
    if (o.overlap) install_hooks();
  }

  /// Averages the selected gradients over the ranks (sum, then divide by the world size),
  /// leaving each parameter's grad an alias of its slice of a bucket (later backward passes
  /// accumulate straight into the buckets). A parameter without a gradient
  /// this step counts as zero, so every rank makes the same calls.
  void average() {
    auto& s = *s_;
    {
      std::lock_guard lock(s.mutex);
      for (std::size_t b = s.launched; b < s.buckets.size(); ++b) launch(s, b);
      s.launched = s.buckets.size();
    }
    double world = s.pg->getSize();
    for (auto& b : s.buckets) {
      detail::wait(*s.pg, b.work, "gradient_averager: allreduce");
      b.work.reset();
      b.flat.div_(world);
      b.pending = static_cast<int>(b.members.size());
    }
    s.launched = 0;
    ++s.stats.steps;
  }

  /// The averaged parameters' paths, in bucket order.
  std::vector<std::string> paths() const {
    std::vector<std::string> p;
    for (auto& b : s_->buckets)
      for (auto& m : b.members) p.push_back(m.path);
    return p;
  }
  /// Number of averaged parameters.
  std::size_t tensors() const {
    std::size_t n = 0;
    for (auto& b : s_->buckets) n += b.members.size();
    return n;
  }
  /// Number of buckets: allreduce calls per step.
  std::size_t buckets() const { return s_->buckets.size(); }
  /// Bytes each step hands to allreduce: exactly the selected parameters' bytes.
  std::int64_t bytes_per_step() const {
    std::int64_t n = 0;
    for (auto& b : s_->buckets) n += b.flat.numel() * static_cast<std::int64_t>(b.flat.element_size());
    return n;
  }
  /// Traffic so far.
  gradient_stats stats() const { return s_->stats; }

private:
  struct member {
    std::string path;
    torch::Tensor param;
    std::int64_t offset;  // in elements, into the bucket
  };
  struct bucket {
    torch::Tensor flat;
    std::vector<member> members;
    int pending = 0;  // members whose gradient backward has not produced yet (overlap)
    c10::intrusive_ptr<c10d::Work> work;
  };
  struct state {
    process_group pg;
    gradient_options opts;
    std::vector<bucket> buckets;
    std::size_t launched = 0;  // buckets [0, launched) have their allreduce running
    std::mutex mutex;
    gradient_stats stats;
    // keep our hooks alive (libtorch 1.x hands out a std::shared_ptr, 2.x a c10::intrusive_ptr)
    std::vector<decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::Tensor&>()))>
        accumulators;
  };

  // Buckets in reverse parameter order: backward produces the last layers' gradients first.
  void build(const selection& chosen) {
    std::vector<torch::Tensor> ts;
    std::vector<std::string> paths;
    for (auto it = chosen.end(); it != chosen.begin();) {
      --it;
      ts.push_back(it->tensor);
      paths.push_back(it->path);
    }
    std::size_t k = 0;
    for (auto& group : detail::pack(ts, s_->opts.bucket_bytes)) {
      std::int64_t numel = 0;
      for (auto& t : group) numel += t.numel();
      bucket b;
      b.flat = torch::zeros({numel}, group.front().options().requires_grad(false));
      std::int64_t off = 0;
      for (auto& t : group) {
        b.members.push_back({paths[k++], t, off});
        off += t.numel();
      }
      b.pending = static_cast<int>(b.members.size());
      s_->buckets.push_back(std::move(b));
    }
  }

  // Makes every member's grad an alias of its slice of the bucket (copying a gradient made
  // elsewhere, or zeros if backward made none), then starts the allreduce. The alias is made
  // with from_blob rather than narrow(): an autograd view would break libtorch's zero_grad(),
  // which calls detach_() on every grad.
  static void launch(state& s, std::size_t i) {
    auto& b = s.buckets[i];
    torch::NoGradGuard no_grad;
    auto* base = static_cast<char*>(b.flat.data_ptr());
    for (auto& m : b.members) {
      void* at = base + m.offset * static_cast<std::int64_t>(b.flat.element_size());
      auto& g = m.param.mutable_grad();
      if (g.defined() && g.data_ptr() == at && g.sizes() == m.param.sizes()) continue;
      auto alias = torch::from_blob(at, m.param.sizes(), [keep = b.flat](void*) {}, b.flat.options());
      if (g.defined()) alias.copy_(g); else alias.zero_();
      g = alias;
    }
    std::vector<torch::Tensor> ts{b.flat};
    b.work = detail::start(*s.pg, "gradient_averager: allreduce", [&] { return s.pg->allreduce(ts); });
    ++s.stats.calls;
    s.stats.bytes += b.flat.numel() * static_cast<std::int64_t>(b.flat.element_size());
  }

  // After a parameter's gradient is accumulated, count it; launch every complete bucket in
  // order (all ranks must issue collectives in the same order).
  struct ready_hook : torch::autograd::FunctionPostHook {
    ready_hook(std::weak_ptr<state> s, std::size_t b) : s(std::move(s)), b(b) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                              const torch::autograd::variable_list&) override {
      if (auto st = s.lock()) {
        std::lock_guard lock(st->mutex);
        if (--st->buckets[b].pending == 0)
          while (st->launched < st->buckets.size() && st->buckets[st->launched].pending <= 0)
            launch(*st, st->launched++);
      }
      return outputs;
    }
    std::weak_ptr<state> s;
    std::size_t b;
  };

  void install_hooks() {
    for (std::size_t b = 0; b < s_->buckets.size(); ++b)
      for (auto& m : s_->buckets[b].members) {
        auto acc = torch::autograd::impl::grad_accumulator(m.param);
        acc->add_post_hook(std::make_unique<ready_hook>(s_, b));
        s_->accumulators.push_back(std::move(acc));
      }
  }

  std::shared_ptr<state> s_;
};

} // namespace graft::dist
