#pragma once
// save_training_state / load_training_state: one call saves a training run — model,
// optimizers, lr_scheduler, gradual-unfreezing stages, gradient scaler, EMA, the random
// generators' states and the run's step and epoch — into one torch.save file, atomically; one
// call restores it, checking every part before changing any. The file is a dict in the layout
// of a Python training checkpoint ("model", "optimizer", "lr_scheduler", "scaler",
// "state_dict_ema", ...), so Python's torch.load reads it too.

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>
#include <torch/version.h>

#include <graft/amp/grad_scaler.hpp>
#include <graft/error.hpp>
#include <graft/formats/read.hpp>
#include <graft/formats/torch_save/write.hpp>
#include <graft/optim/schedules.hpp>
#include <graft/state_dict/merge.hpp>
#include <graft/state_dict/report.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/state_dict/value.hpp>
#include <graft/train/ema.hpp>
#include <graft/train/pytorch_state.hpp>
#include <graft/transforms/gradual.hpp>

namespace graft {

/// What a training checkpoint holds. Every part but the model may be left out (null, empty):
/// it is then neither saved nor restored, and a saved one is not looked at.
struct training_parts {
  torch::nn::Module* model = nullptr;                     ///< required
  std::vector<torch::optim::Optimizer*> optimizers = {};  ///< SGD, Adam or AdamW; saved as "optimizer", "optimizer_1", ...
  lr_scheduler* scheduler = nullptr;                      ///< "lr_scheduler"
  gradual_unfreezing* unfreezing = nullptr;               ///< "gradual_unfreezing": its stages add groups to optimizers[0]
  amp::grad_scaler* scaler = nullptr;                     ///< "scaler"
  graft::ema* average = nullptr;                          ///< "state_dict_ema" (timm's key)
  bool random_state = true;                               ///< "rng": the CPU generator's state and each CUDA device's
};

/// Where a run is, saved with it: "step" and "epoch".
struct training_progress {
  std::int64_t step = 0;
  std::int64_t epoch = 0;
};

namespace detail::training {

inline std::string optimizer_key(std::size_t i) { return i == 0 ? "optimizer" : fmt::format("optimizer_{}", i); }

inline at::Generator cpu_generator() { return at::detail::getDefaultCPUGenerator(); }

inline int cuda_devices() {
  const auto& hooks = at::detail::getCUDAHooks();
  return hooks.hasCUDA() ? hooks.getNumGPUs() : 0;
}
inline at::Generator cuda_generator(int device) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return at::detail::getCUDAHooks().getDefaultGenerator(static_cast<c10::DeviceIndex>(device));
#else
  return at::detail::getCUDAHooks().getDefaultCUDAGenerator(static_cast<c10::DeviceIndex>(device));
#endif
}
inline torch::Tensor state_of(at::Generator gen) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}
inline void set_state_of(at::Generator gen, const torch::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

/// The "rng" entry: {"cpu": ByteTensor, "cuda": [ByteTensor per device]}, as
/// torch.get_rng_state() and torch.cuda.get_rng_state_all() give them.
inline value random_state() {
  dict d;
  d.set(value("cpu"), value(state_of(cpu_generator())));
  sequence cuda;
  for (int i = 0; i < cuda_devices(); ++i) cuda.items.emplace_back(state_of(cuda_generator(i)));
  d.set(value("cuda"), value(std::move(cuda)));
  return d;
}

/// A generator state read back, checked against the live generator's: a uint8 tensor of the
/// same size.
inline torch::Tensor checked_state(const value& v, const torch::Tensor& live, const std::string& where, const std::string& file) {
  if (!v.is_tensor())
    throw type_error(fmt::format("load_training_state: {} is a {}, not a tensor", where, v.type_name()),
                     {.file = file, .key = where});
  const torch::Tensor& t = v.as_tensor();
  if (t.scalar_type() != torch::kUInt8 || t.numel() != live.numel())
    throw shape_error(fmt::format("load_training_state: {} is a {} tensor of {} elements; the generator's state is uint8, "
                                  "{} bytes",
                                  where, c10::toString(t.scalar_type()), t.numel(), live.numel()),
                      {.file = file, .key = where});
  return t.contiguous().clone();
}

} // namespace detail::training

/// Saves the run into `path` (torch.save's zip format), atomically: the file is either the old
/// one or the new one, whatever happens meanwhile (a crash, a SIGKILL). Call it between steps
/// (after the scaler's update()). option_error without a model or for an optimizer other than
/// SGD, Adam and AdamW; io_error if the file cannot be written.
inline void save_training_state(const std::string& path, const training_parts& parts, training_progress progress = {}) {
  if (!parts.model) throw option_error("save_training_state: training_parts.model is required");
  dict d;
  d.set(value("format"), value("graft.training_state/1"));
  d.set(value("model"), graft::state_dict(*parts.model).to_value());
  for (std::size_t i = 0; i < parts.optimizers.size(); ++i)
    d.set(value(detail::training::optimizer_key(i)), optimizer_state(*parts.optimizers[i]));
  if (parts.scheduler) d.set(value("lr_scheduler"), scheduler_state(*parts.scheduler));
  if (parts.unfreezing) {
    sequence applied;
    for (auto& n : parts.unfreezing->applied_names()) applied.items.emplace_back(n);
    d.set(value("gradual_unfreezing"), value(std::move(applied)));
  }
  if (parts.scaler) d.set(value("scaler"), scaler_state(*parts.scaler));
  if (parts.average) d.set(value("state_dict_ema"), parts.average->state_dict().to_value());
  if (parts.random_state) d.set(value("rng"), detail::training::random_state());
  d.set(value("step"), value(progress.step));
  d.set(value("epoch"), value(progress.epoch));
  write_torch_save(path, value(std::move(d)));
}

/// Restores a run save_training_state saved (or a Python training checkpoint with the same
/// keys) into `parts`, and returns its step and epoch. Every part is read and checked first —
/// the model's keys and shapes, gradual unfreezing's stage names, each optimizer's groups
/// (with the groups the restored stages add) and state shapes, the schedule against the saved
/// lrs, the scaler's settings, the EMA's keys, the generators' state sizes — and nothing
/// changes unless all pass: a refusal names the part (its context's key) and the file.
inline training_progress load_training_state(const std::string& path, const training_parts& parts) {
  using namespace detail::pystate;
  const char* caller = "load_training_state";
  if (!parts.model) throw option_error("load_training_state: training_parts.model is required");
  const value saved = read_value(path);
  if (!saved.is_dict())
    throw format_error(fmt::format("{}: the file holds a {}, not a dict of training state", caller, saved.type_name()),
                       {.file = path});
  const dict& d = saved.as_dict();
  const std::string where = fmt::format("the training state in '{}'", path);
  auto part = [&](const std::string& key) -> const value& {
    try {
      return field(d, key, where, caller);
    } catch (const key_error& e) {
      throw key_error(e.message(), {.file = path, .key = key});
    }
  };
  try {
    // The model: keys and shapes, as merge() would check them.
    const graft::state_dict model_sd = graft::state_dict::from_value(part("model"));
    if (!preview(*parts.model, model_sd).accepted()) merge(*parts.model, model_sd);  // throws its refusal, changes nothing

    // Gradual unfreezing: the stages to re-apply, and the groups they will add.
    std::vector<std::string> applied;
    std::vector<std::vector<torch::Tensor>> added;
    if (parts.unfreezing) {
      if (parts.optimizers.empty())
        throw option_error("load_training_state: gradual unfreezing adds its groups to optimizers[0]: give the optimizer");
      const value& names = part("gradual_unfreezing");
      if (!names.is_sequence())
        throw type_error(fmt::format("{}: gradual_unfreezing is a {}, not a list", caller, names.type_name()),
                         {.file = path, .key = "gradual_unfreezing"});
      for (const auto& n : names.as_sequence().items) {
        if (!n.is_string())
          throw type_error(fmt::format("{}: gradual_unfreezing holds a {}, not a stage name", caller, n.type_name()),
                           {.file = path, .key = "gradual_unfreezing"});
        applied.push_back(n.as_string());
      }
      added = parts.unfreezing->groups_to_restore(applied, *parts.optimizers.front());
    }

    std::vector<optimizer_plan> plans;
    for (std::size_t i = 0; i < parts.optimizers.size(); ++i)
      plans.push_back(plan_optimizer(*parts.optimizers[i], part(detail::training::optimizer_key(i)), parts.model, caller,
                                     i == 0 ? added : std::vector<std::vector<torch::Tensor>>{}));

    std::pair<std::int64_t, std::vector<double>> schedule;
    if (parts.scheduler) {
      const bool first = !parts.optimizers.empty() && &parts.scheduler->optimizer() == parts.optimizers.front();
      schedule = plan_scheduler(*parts.scheduler, part("lr_scheduler"), caller, first ? added.size() : 0,
                                first ? &part("optimizer") : nullptr);
    }
    if (parts.scaler) {
      amp::grad_scaler probe;  // the same checks, on a scaler of its own
      load_scaler_state(probe, part("scaler"));
    }
    graft::state_dict ema_sd;
    if (parts.average) {
      ema_sd = graft::state_dict::from_value(part("state_dict_ema"));
      parts.average->check_state_dict(ema_sd);
    }
    torch::Tensor cpu_state;
    std::vector<torch::Tensor> cuda_states;
    if (parts.random_state) {
      const value& rng = part("rng");
      if (!rng.is_dict())
        throw type_error(fmt::format("{}: rng is a {}, not a dict", caller, rng.type_name()), {.file = path, .key = "rng"});
      cpu_state = detail::training::checked_state(field(rng.as_dict(), "cpu", "rng", caller),
                                                  detail::training::state_of(detail::training::cpu_generator()), "rng.cpu", path);
      if (const value* cuda = rng.as_dict().find("cuda"); cuda && cuda->is_sequence()) {
        const auto& items = cuda->as_sequence().items;
        const int devices = detail::training::cuda_devices();
        if (static_cast<int>(items.size()) != devices && !items.empty())
          throw state_error(fmt::format("{}: the run saved the generators of {} CUDA devices; this process has {}", caller,
                                        items.size(), devices),
                            {.file = path, .key = "rng.cuda"});
        for (std::size_t i = 0; i < items.size(); ++i)
          cuda_states.push_back(detail::training::checked_state(
              items[i], detail::training::state_of(detail::training::cuda_generator(static_cast<int>(i))),
              fmt::format("rng.cuda[{}]", i), path));
      }
    }
    training_progress progress;
    progress.step = static_cast<std::int64_t>(number(part("step"), "step", caller));
    progress.epoch = static_cast<std::int64_t>(number(part("epoch"), "epoch", caller));

    // Everything checked: restore, in the order the parts depend on each other.
    merge(*parts.model, model_sd);
    if (parts.unfreezing) parts.unfreezing->restore(applied, *parts.optimizers.front());
    for (std::size_t i = 0; i < plans.size(); ++i) install(*parts.optimizers[i], std::move(plans[i]));
    if (parts.scheduler) parts.scheduler->resume(schedule.first, std::move(schedule.second));
    if (parts.scaler) load_scaler_state(*parts.scaler, part("scaler"));
    if (parts.average) parts.average->load_state_dict(ema_sd);
    if (cpu_state.defined()) detail::training::set_state_of(detail::training::cpu_generator(), cpu_state);
    for (std::size_t i = 0; i < cuda_states.size(); ++i)
      detail::training::set_state_of(detail::training::cuda_generator(static_cast<int>(i)), cuda_states[i]);
    return progress;
  } catch (const error& e) {
    // The file, on errors that lack it; merge()'s refusal carries its report and stays as it is.
    if (!e.context().file.empty() || dynamic_cast<const load_error*>(&e)) throw;
    error_context where_now = e.context();
    where_now.file = path;
    throw_error(e.kind(), e.message(), where_now);
  }
}

} // namespace graft
