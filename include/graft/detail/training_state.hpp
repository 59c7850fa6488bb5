#pragma once
// What graft keeps about a model in training that libtorch's own calls can undo without a word:
// the normalization layers whose statistics are frozen (module.train() puts them back in
// training mode), and the objects whose values an optimizer step leaves out of date (LoRA's
// merged weights). graft::lr_scheduler::step(), called after the optimizer's step, checks the
// first and brings the second up to date (check_after_optimizer_step).

#include <algorithm>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>

#include <graft/error.hpp>

namespace graft::detail {

// The layers whose statistics are frozen, process-wide. A weak pointer tells a live layer from
// a destroyed one whose address was reused; a layer not owned by a shared_ptr has none.
class frozen_norm_registry {
public:
  void add(torch::nn::Module& m, std::string path, std::string model) {
    std::lock_guard lock(mu_);
    auto w = m.weak_from_this();
    layers_[&m] = {w, !w.expired(), std::move(path), std::move(model)};
  }
  void remove(const torch::nn::Module& m) {
    std::lock_guard lock(mu_);
    layers_.erase(&m);
  }
  bool contains(const torch::nn::Module& m) {
    std::lock_guard lock(mu_);
    auto it = layers_.find(&m);
    if (it == layers_.end()) return false;
    if (it->second.owned && it->second.self.expired()) {
      layers_.erase(it);
      return false;
    }
    return true;
  }
  bool empty() {
    std::lock_guard lock(mu_);
    return layers_.empty();
  }
  // state_error naming the first live frozen layer found in training mode (`caller` says
  // which graft call noticed). Layers not owned by a shared_ptr cannot be told alive from
  // destroyed, so only owned ones are checked.
  void require_eval(const char* caller) {
    std::vector<std::pair<std::string, std::string>> training;
    {
      std::lock_guard lock(mu_);
      for (auto it = layers_.begin(); it != layers_.end();) {
        if (!it->second.owned) {
          ++it;
          continue;
        }
        auto live = it->second.self.lock();
        if (!live) {
          it = layers_.erase(it);
          continue;
        }
        if (live->is_training()) training.emplace_back(it->second.path, it->second.model);
        ++it;
      }
    }
    if (training.empty()) return;
    std::sort(training.begin(), training.end());
    auto& [path, model] = training.front();
    throw state_error(fmt::format(
        "{}: '{}' of {} (and {} more) has frozen statistics (freeze_norm_stats) but is in training mode, so every "
        "forward updates them: module->train() switched it back; switch modes with graft::train(module), which keeps "
        "frozen layers in eval mode (or unfreeze_norm_stats to let them train)",
        caller, path, model, training.size() - 1));
  }

private:
  struct entry {
    std::weak_ptr<torch::nn::Module> self;
    bool owned;
    std::string path;
    std::string model;
  };
  std::mutex mu_;
  std::unordered_map<const torch::nn::Module*, entry> layers_;
};

inline frozen_norm_registry& frozen_norms() {
  static frozen_norm_registry r;
  return r;
}

/// Something whose values follow parameters that an optimizer step changes in place.
class after_step_listener {
public:
  virtual ~after_step_listener() = default;
  /// Brings the values up to date with the parameters; called after an optimizer's step.
  virtual void after_step() = 0;
};

// The live listeners, process-wide, held weakly: a listener goes when its owner does.
class after_step_listeners {
public:
  void add(const std::shared_ptr<after_step_listener>& l) {
    std::lock_guard lock(mu_);
    std::erase_if(listeners_, [](const std::weak_ptr<after_step_listener>& w) { return w.expired(); });
    listeners_.push_back(l);
  }
  void run() {
    std::vector<std::shared_ptr<after_step_listener>> live;
    {
      std::lock_guard lock(mu_);
      std::erase_if(listeners_, [&](const std::weak_ptr<after_step_listener>& w) {
        auto l = w.lock();
        if (!l) return true;
        live.push_back(std::move(l));
        return false;
      });
    }
    for (auto& l : live) l->after_step();
  }

private:
  std::mutex mu_;
  std::vector<std::weak_ptr<after_step_listener>> listeners_;
};

inline after_step_listeners& step_listeners() {
  static after_step_listeners r;
  return r;
}

/// What follows an optimizer step: frozen statistics must still be frozen, and whatever follows
/// the parameters is brought up to date.
inline void check_after_optimizer_step(const char* caller) {
  frozen_norms().require_eval(caller);
  step_listeners().run();
}

} // namespace graft::detail
