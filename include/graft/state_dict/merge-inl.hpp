#pragma once
// The definitions of state_dict/merge.hpp.

#include <algorithm>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <graft/detail/dtypes.hpp>
#include <graft/detail/module_access.hpp>
#include <graft/detail/order.hpp>
#include <graft/io/detail/file_copy.hpp>
#include <graft/select/select.hpp>
#include <graft/state_dict/merge.hpp>
#include <graft/state_dict/pipeline.hpp>
#include <graft/state_dict/policy.hpp>
#include <graft/state_dict/report.hpp>
#include <graft/state_dict/state_dict.hpp>
#include <graft/walk/walk.hpp>

namespace graft {
namespace detail {

struct planned_copy {
  torch::Tensor dst, src;
  bool adapt;
};
struct load_plan {
  load_report report;
  std::vector<planned_copy> copies;
};

inline bool lossy_dtype_change(c10::ScalarType from, c10::ScalarType to) {
  // copy_ would silently drop an imaginary part or turn numbers into booleans.
  return (c10::isComplexType(from) && !c10::isComplexType(to)) || (to == c10::kBool && from != c10::kBool);
}

// Renames that would turn many unexpected keys into missing ones. A BatchNorm counter left at
// its default counts as missing here: the rename would load it too.
inline std::vector<std::string> rename_hints(const load_report& r) {
  std::vector<std::string_view> targets;
  for (auto& m : r.missing) targets.push_back(m.key);
  for (auto& d : r.defaulted) targets.push_back(d);
  std::unordered_set<std::string_view> missing(targets.begin(), targets.end()), unexpected;
  for (auto& u : r.unexpected) unexpected.insert(u.key);
  std::map<std::string, std::size_t> strip, add, replace;
  for (auto& u : r.unexpected) {
    std::string_view k = u.key;
    for (auto dot = k.find('.'); dot != std::string_view::npos; dot = k.find('.', dot + 1))
      if (missing.contains(k.substr(dot + 1))) ++strip[std::string(k.substr(0, dot + 1))];
  }
  for (std::string_view k : targets) {
    for (auto dot = k.find('.'); dot != std::string_view::npos; dot = k.find('.', dot + 1))
      if (unexpected.contains(k.substr(dot + 1))) ++add[std::string(k.substr(0, dot + 1))];
  }
  // Same remainder under a different first segment: "classifier.x" vs "fc.x".
  std::unordered_map<std::string_view, std::vector<std::string_view>> by_rest;
  for (std::string_view k : targets) {
    if (auto dot = k.find('.'); dot != std::string_view::npos) by_rest[k.substr(dot)].push_back(k.substr(0, dot + 1));
  }
  for (auto& u : r.unexpected) {
    std::string_view k = u.key;
    auto dot = k.find('.');
    if (dot == std::string_view::npos) continue;
    if (auto it = by_rest.find(k.substr(dot)); it != by_rest.end())
      for (auto head : it->second) ++replace[fmt::format("\"{}\", \"{}\"", k.substr(0, dot + 1), head)];
  }
  std::vector<std::pair<std::size_t, std::string>> found;
  for (auto& [p, n] : strip)
    found.emplace_back(n, fmt::format("{} unexpected keys start with '{}': strip_prefix(\"{}\") would match them to missing keys", n, p, p));
  for (auto& [p, n] : add)
    found.emplace_back(n, fmt::format("{} missing keys are unexpected keys under '{}': add_prefix(\"{}\") would match them", n, p, p));
  for (auto& [p, n] : replace)
    if (n >= 2 || r.unexpected.size() == 1)
      found.emplace_back(n, fmt::format("{} unexpected keys differ from missing keys only in their first segment: replace_prefix({}) would match them", n, p));
  auto most_first = stable_order(found.size(), [&](std::size_t a, std::size_t b) { return found[a].first > found[b].first; });
  std::vector<std::string> hints;
  for (std::size_t i = 0; i < found.size() && i < 3; ++i) hints.push_back(std::move(found[most_first[i]].second));
  return hints;
}

// PyTorch reports an unexpected key from the deepest module its path reaches, visiting modules
// in pre-order; list them in that order too.
inline void order_as_pytorch(const torch::nn::Module& root, std::vector<load_report::key_entry>& unexpected) {
  if (unexpected.size() < 2) return;
  std::unordered_map<std::string, std::size_t> preorder;
  for_each_module(root, [&](const torch::nn::Module&, std::string_view path) { preorder.emplace(path, preorder.size()); });
  auto owner = [&](const std::string& key) {
    std::size_t best = 0;
    for (auto dot = key.find('.'); dot != std::string::npos; dot = key.find('.', dot + 1)) {
      auto it = preorder.find(key.substr(0, dot));
      if (it == preorder.end()) break;
      best = it->second;
    }
    return best;
  };
  std::vector<std::size_t> owners;
  owners.reserve(unexpected.size());
  for (const auto& u : unexpected) owners.push_back(owner(u.key));
  std::vector<load_report::key_entry> sorted;
  sorted.reserve(unexpected.size());
  for (auto i : stable_order(owners.size(), [&](std::size_t a, std::size_t b) { return owners[a] < owners[b]; }))
    sorted.push_back(std::move(unexpected[i]));
  unexpected = std::move(sorted);
}

// The key on the other side most like `key`: the same local name, or a small edit away.
inline std::string nearest_key(const std::string& key, const std::vector<std::string>& others) {
  auto near = nearest_names(key, others, 1, /*same_leaf=*/true);
  return near.empty() ? std::string() : std::move(near.front());
}

// PyTorch's BatchNorm rule (_NormBase._load_from_state_dict): a module saved before it had
// num_batches_tracked (saved version absent or < 2) loads without the counter instead of the
// key counting as missing. PyTorch before 2.2 then sets the counter to 0; from 2.2 on
// (pytorch#110850) it keeps the module's own. graft does what the libtorch it is built with
// does. The saved version is that of the module's other entries. A module none of whose
// tensors is in the checkpoint has no saved version in a checkpoint without versions (a plain
// dict, safetensors): PyTorch then inserts the counter too, so it is not missing; in a
// checkpoint with versions (a state_dict()'s _metadata, which lists every module), it is.
inline bool bn_counter_defaults(std::string_view key, const torch::Tensor& model, const state_dict& sd, bool versioned) {
  constexpr std::string_view name = "num_batches_tracked";
  if (!key.ends_with(name) || (key.size() > name.size() && key[key.size() - name.size() - 1] != '.')) return false;
  if (model.dim() != 0 || model.scalar_type() != torch::kLong) return false;
  const auto prefix = key.substr(0, key.size() - name.size());  // "bn1." or ""
  bool siblings = false;
  for (auto& e : sd)
    if (e.key.starts_with(prefix) && e.key.find('.', prefix.size()) == std::string::npos) {
      if (e.module_version >= 2) return false;
      siblings = true;
    }
  return siblings || !versioned;
}

inline load_plan plan(const torch::nn::Module& module, const state_dict& sd, const load_policy& policy) {
  load_plan p;
  auto& r = p.report;
  struct model_entry {
    torch::Tensor tensor;
    bool seen = false;
  };
  std::vector<std::string> order;
  std::unordered_map<std::string, model_entry> model;
  for (auto t : walk(module, walk_options::state())) {
    order.emplace_back(t.path());
    model.emplace(order.back(), model_entry{t.tensor()});
  }
  for (auto& e : sd) {
    auto it = model.find(e.key);
    if (it == model.end()) {
      r.unexpected.push_back({e.key, policy.unexpected.accepts(e.key), {}});
      continue;
    }
    auto& me = it->second;
    me.seen = true;
    const auto& mt = me.tensor;
    auto ms = mt.sizes(), cs = e.tensor.sizes();
    bool same_shape = ms == cs;
    bool dtype_ok = mt.scalar_type() == e.tensor.scalar_type() ||
                    (policy.convert_dtype && !lossy_dtype_change(e.tensor.scalar_type(), mt.scalar_type()));
    if (same_shape && dtype_ok) {
      r.loaded.push_back({e.key, e.source_key, {ms.begin(), ms.end()}, e.tensor.scalar_type(), mt.scalar_type()});
      p.copies.push_back({mt, e.tensor, false});
      continue;
    }
    bool adapt = dtype_ok && ms.size() == cs.size() && policy.adapt.accepts(e.key);
    r.mismatched.push_back({e.key, e.source_key, {ms.begin(), ms.end()}, {cs.begin(), cs.end()}, mt.scalar_type(),
                            e.tensor.scalar_type(), adapt || policy.mismatched.accepts(e.key), adapt});
    if (adapt) p.copies.push_back({mt, e.tensor, true});
  }
  const bool versioned = std::any_of(sd.begin(), sd.end(), [](const state_entry& e) { return e.module_version >= 0; });
  for (auto& k : order) {
    if (model[k].seen) continue;
    if (bn_counter_defaults(k, model[k].tensor, sd, versioned)) {
      r.defaulted.push_back(k);
#if !GRAFT_TORCH_AT_LEAST(2, 2)
      p.copies.push_back({model[k].tensor, torch::zeros({}, torch::kLong), false});
#endif
      continue;
    }
    r.missing.push_back({k, policy.missing.accepts(k), {}});
  }
  order_as_pytorch(module, r.unexpected);
  // Nearest names across the two sides, for the keys that are not allowed.
  if (!r.missing.empty() && !r.unexpected.empty()) {
    auto unexpected = load_report::keys_of(r.unexpected);
    auto missing = load_report::keys_of(r.missing);
    for (auto& m : r.missing)
      if (!m.allowed) m.nearest = nearest_key(m.key, unexpected);
    for (auto& u : r.unexpected)
      if (!u.allowed) u.nearest = nearest_key(u.key, missing);
    r.hints = rename_hints(r);
  }
  return p;
}

inline void commit(const load_plan& p, unsigned threads) {
  torch::NoGradGuard no_grad;
  // Destinations sharing storage (tied weights) take their copies in order, through copy_;
  // every other copy from a mapped checkpoint is read straight from its file.
  std::unordered_map<const void*, int> dst_storages;
  for (auto& c : p.copies) ++dst_storages[c.dst.storage().unsafeGetStorageImpl()];
  file_copies direct(threads);
  std::vector<char> done(p.copies.size(), 0);
  for (std::size_t i = 0; i < p.copies.size(); ++i) {
    const auto& c = p.copies[i];
    if (!c.adapt && dst_storages[c.dst.storage().unsafeGetStorageImpl()] == 1) done[i] = direct.add(c.dst, c.src);
    if (!done[i]) direct.watch(c.src);
  }
  direct.run();
  for (std::size_t i = 0; i < p.copies.size(); ++i) {
    if (done[i]) continue;
    const auto& c = p.copies[i];
    if (!c.adapt) {
      c.dst.copy_(c.src);
      continue;
    }
    auto dst = c.dst, src = c.src;
    for (int64_t d = 0; d < dst.dim(); ++d) {
      auto n = std::min(dst.size(d), src.size(d));
      dst = dst.narrow(d, 0, n);
      src = src.narrow(d, 0, n);
    }
    dst.copy_(src);
  }
}

GRAFT_FUNC void refuse(const torch::nn::Module& module, load_report r) {
  bool keys = std::any_of(r.missing.begin(), r.missing.end(), [](auto& e) { return !e.allowed; }) ||
              std::any_of(r.unexpected.begin(), r.unexpected.end(), [](auto& e) { return !e.allowed; });
  auto what = fmt::format("cannot load into {}; the model is unchanged.\n{}", module.name(), r);
  if (keys) throw refused_load<key_error>(what, std::move(r));
  throw refused_load<shape_error>(what, std::move(r));
}

} // namespace detail

GRAFT_FUNC load_report preview(const torch::nn::Module& module, const state_dict& sd, const load_policy& policy) {
  return detail::plan(module, sd, policy).report;
}

GRAFT_FUNC load_report merge(torch::nn::Module& module, const state_dict& sd, const load_policy& policy) {
  auto p = detail::plan(module, sd, policy);
  if (!p.report.accepted()) detail::refuse(module, std::move(p.report));
  detail::commit(p, policy.threads);
  return std::move(p.report);
}

} // namespace graft
