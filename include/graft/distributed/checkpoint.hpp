#pragma once
// Rank-aware checkpoints: save() writes once for the whole group (one writer, atomically:
// a temp file renamed into place) and returns on every rank once the file is complete;
// load() reads on one rank, merges there (plan-then-commit) and shares the model's state with
// every rank. Keys written by Python DDP ("module.conv1.weight") are recognized and stripped.

#include <algorithm>
#include <exception>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>

#include <graft/distributed/agree.hpp>
#include <graft/distributed/broadcast.hpp>
#include <graft/distributed/group.hpp>
#include <graft/error.hpp>
#include <graft/formats/read.hpp>
#include <graft/state_dict/merge.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/stages.hpp>
#include <graft/state_dict/state_dict.hpp>

namespace graft::dist {

/// The prefix DataParallel and DistributedDataParallel put before every key.
inline constexpr std::string_view ddp_prefix = "module.";

/// Options of save().
struct save_options {
  int writer = 0;            ///< the one rank that writes
  std::string key_prefix{};  ///< put before every key: "module." writes the keys Python DDP's state_dict() has
};

/// Options of load().
struct load_options {
  int root = 0;              ///< the one rank that reads
  load_policy policy = {};   ///< what the merge accepts (strict by default)
  bool strip_ddp_prefix = true;  ///< drop "module." when every key has it
};

/// Reads a checkpoint of any format graft reads (Python torch.save files, OrderedDicts
/// included; safetensors; libtorch archives) as a state dict: nested dicts give dotted keys
/// ({"model": {...}, "epoch": 3} gives "model.conv1.weight"), non-tensor values become its
/// extras. Tensors view the memory-mapped file where the format allows.
inline state_dict read_checkpoint(const std::string& path) { return state_dict::from_value(read_value(path)); }

namespace detail {

// Runs `f` on rank `root` and tells every rank whether it succeeded: the root rethrows its own
// exception; the others throw an error of the same kind (a distributed_error for an exception
// that is not graft's) saying which rank failed at what, with the root's message.
template <class F>
void on_one_rank(c10d::ProcessGroup& pg, int root, std::string_view what, F&& f) {
  if (root < 0 || root >= pg.getSize())
    throw option_error(fmt::format("{}: rank {} is outside a world of {} processes", what, root, pg.getSize()));
  std::string failure;  // the kind's number, a space, then the root's error without its tag
  std::exception_ptr caught;
  if (pg.getRank() == root) {
    try {
      f();
    } catch (const graft::error& e) {
      failure = fmt::format("{} {}", static_cast<int>(e.kind()), e.text());
      caught = std::current_exception();
    } catch (const std::exception& e) {
      failure = fmt::format("{} {}", static_cast<int>(error_kind::distributed), e.what());
      caught = std::current_exception();
    }
  }
  failure = broadcast_string(pg, failure, root, what);
  if (caught) std::rethrow_exception(caught);
  if (failure.empty()) return;
  const auto space = failure.find(' ');
  const auto kind = static_cast<error_kind>(std::stoi(failure.substr(0, space)));
  throw_error(kind, fmt::format("{}: rank {} could not {}: {}", who(pg), root, what, failure.substr(space + 1)));
}

} // namespace detail

/// Saves `sd` to `path` for the whole group: rank o.writer writes a torch.save file (Python's
/// torch.load reads it as the OrderedDict state_dict() returns), atomically; every rank
/// returns once the file is complete, or throws if the writer failed.
inline void save(const process_group& group, const state_dict& sd, const std::string& path, save_options o = {}) {
  detail::on_one_rank(detail::group_of(group, "save"), o.writer, fmt::format("save '{}'", path), [&] {
    graft::dict d;
    d.reserve(sd.size());
    for (auto& e : sd) d.append(o.key_prefix + e.key, e.tensor.detach().to(torch::kCPU));
    write_torch_save(path, value(std::move(d)));
  });
}

/// Saves `module`'s parameters and buffers under Python's state_dict() keys (see above).
inline void save(const process_group& group, const torch::nn::Module& module, const std::string& path, save_options o = {}) {
  dist::save(group, detail::group_of(group, "save").getRank() == o.writer ? state_dict(module) : state_dict(), path, std::move(o));
}

/// Loads a checkpoint into every rank's `module`, reading it once: rank o.root pulls the state
/// dict from `src` (a path, or any graft pipeline source), strips DDP's "module." if every key
/// has it, merges it under o.policy, then broadcasts its model state (parameters and buffers)
/// so every rank ends bit-identical. A failure on the root (unreadable file, refused plan)
/// throws on every rank. Returns the merge's report on the root, std::nullopt elsewhere.
template <class Src>
  requires source<Src> || std::convertible_to<const Src&, std::string>
std::optional<load_report> load(const process_group& group, torch::nn::Module& module, const Src& src, load_options o = {}) {
  c10d::ProcessGroup& pg = detail::group_of(group, "load");
  std::optional<load_report> report;
  std::string what;
  if constexpr (source<Src>) what = "load " + std::string(src.describe());
  else what = fmt::format("load '{}'", std::string(src));
  detail::on_one_rank(pg, o.root, what, [&] {
    state_dict sd;
    if constexpr (source<Src>) sd = src.load(); else sd = read_checkpoint(std::string(src));
    bool prefixed = o.strip_ddp_prefix && !sd.empty() &&
                    std::all_of(sd.begin(), sd.end(), [](auto& e) { return e.key.starts_with(ddp_prefix); });
    if (prefixed) sd = apply(std::move(sd), strip_prefix(std::string(ddp_prefix)));
    report = merge(module, sd, o.policy);
  });
  broadcast(group, module, everything, {.root = o.root});
  return report;
}

} // namespace graft::dist
