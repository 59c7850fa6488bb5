#pragma once
// Entry stages: at(key) descends into a nested entry, filter(selector) keeps what a name or
// tensor selector picks, the rename rules rewrite keys, cast()/to() convert tensors.

#include <algorithm>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <graft/config.hpp>
#include <graft/error.hpp>
#include <graft/select/concepts.hpp>
#include <graft/select/regex.hpp>
#include <graft/select/select.hpp>
#include <graft/state_dict/pipeline.hpp>

namespace graft {

namespace detail {
/// The selection_error of a filter that kept none of `in` entries.
[[noreturn]] GRAFT_FUNC void throw_filter_kept_none(const std::string& selector, std::size_t in);
} // namespace detail

/// The stage at(key) makes (a class named `at` would hide ATen's namespace `at`).
class at_stage : public pipe_base, public detail::stage_defaults {
public:
  explicit at_stage(std::string key) : key_(std::move(key)), prefix_(key_ + ".") {}
  bool apply(state_entry& e, std::size_t& hits) const {
    if (!e.key.starts_with(prefix_)) {
      if (tops_.size() < 16 && std::find(tops_.begin(), tops_.end(), top(e.key)) == tops_.end())
        tops_.push_back(top(e.key));
      return false;
    }
    ++hits;
    e.key.erase(0, prefix_.size());
    return true;
  }
  bool apply_extra(std::string& k) const {
    if (!k.starts_with(prefix_)) return false;
    k.erase(0, prefix_.size());
    return true;
  }
  GRAFT_FUNC void finish(std::size_t hits, std::size_t in) const;
  std::string describe() const { return "at(\"" + key_ + "\")"; }

private:
  static std::string top(std::string_view k) { return std::string(k.substr(0, k.find('.'))); }
  std::string key_, prefix_;
  mutable std::vector<std::string> tops_;  // for the error message only
};

/// Descends into a nested entry, as torch.load(p)["model"] does: keeps the entries under
/// "key." and strips that prefix. A key_error naming the top-level keys if there are none.
inline at_stage at(std::string key) { return at_stage(std::move(key)); }

/// Keeps the entries a selector picks. The selector must decide from a key (and tensor):
/// module-type selectors need a live model, which a checkpoint is not (entry_selector says so).
template <entry_selector S>
class filter_stage : public pipe_base, public detail::stage_defaults {
public:
  explicit filter_stage(S s) : sel_(std::move(s)) {}
  bool apply(state_entry& e, std::size_t& hits) const {
    if (!sel_.matches(entry_view(e.key, &e.tensor))) return false;
    ++hits;
    return true;
  }
  void finish(std::size_t hits, std::size_t in) const {
    if constexpr (!allows_empty<S>)
      if (hits == 0) detail::throw_filter_kept_none(sel_.describe(), in);
  }
  std::string describe() const { return "filter(" + sel_.describe() + ")"; }

private:
  S sel_;
};
/// filter(selector): keeps the entries the selector picks; an error if it keeps none.
template <entry_selector S>
filter_stage<S> filter(S s) { return filter_stage<S>(std::move(s)); }

/// Renames keys with a rule: a callable taking the key and returning the new key (or
/// std::nullopt / the same key to keep it). Entries whose key changes count as renamed.
template <class Rule>
class rename_stage : public pipe_base, public detail::stage_defaults {
public:
  rename_stage(Rule r, std::string text) : rule_(std::move(r)), text_(std::move(text)) {}
  bool apply(state_entry& e, std::size_t& hits) const {
    if (auto k = call(e.key); k && *k != e.key) {
      e.key = std::move(*k);
      ++hits;
    }
    return true;
  }
  std::string describe() const { return text_; }

private:
  std::optional<std::string> call(const std::string& key) const {
    using R = std::invoke_result_t<const Rule&, std::string_view>;
    if constexpr (std::is_same_v<R, std::optional<std::string>>) return rule_(std::string_view(key));
    else return std::string(rule_(std::string_view(key)));
  }
  Rule rule_;
  std::string text_;
};

/// rename(f): renames every key through f(std::string_view) -> std::string or optional<string>.
template <class F>
  requires std::is_invocable_v<const F&, std::string_view>
rename_stage<F> rename(F f, std::string text = "rename(function)") {
  return rename_stage<F>(std::move(f), std::move(text));
}
/// rename(rule): a named rule (strip_prefix(...), ...) is already a stage; this spells it out.
template <class Rule>
rename_stage<Rule> rename(rename_stage<Rule> r) { return r; }

namespace detail {
struct replace_prefix_rule {
  std::string from, to;
  std::optional<std::string> operator()(std::string_view k) const {
    if (!k.starts_with(from)) return std::nullopt;
    return to + std::string(k.substr(from.size()));
  }
};
struct regex_rule {
  graft::regex re;
  std::string rewrite;
  std::optional<std::string> operator()(std::string_view k) const { return replace_all(re, k, rewrite); }
};
struct table_rule {
  std::shared_ptr<const std::map<std::string, std::string, std::less<>>> table;
  std::optional<std::string> operator()(std::string_view k) const {
    auto it = table->find(k);
    if (it == table->end()) return std::nullopt;
    return it->second;
  }
};
} // namespace detail

/// "module.fc.weight" -> "fc.weight": DataParallel/DDP's prefix, torch.compile's "_orig_mod.".
GRAFT_FUNC rename_stage<detail::replace_prefix_rule> strip_prefix(std::string p);
/// "fc.weight" -> "backbone.fc.weight".
GRAFT_FUNC rename_stage<detail::replace_prefix_rule> add_prefix(std::string p);
/// "classifier.weight" -> "fc.weight" with replace_prefix("classifier.", "fc.").
GRAFT_FUNC rename_stage<detail::replace_prefix_rule> replace_prefix(std::string from, std::string to);
/// Replaces every match of an RE2 regex; \1..\9 in `rewrite` insert capture groups.
GRAFT_FUNC rename_stage<detail::regex_rule> regex_replace(std::string_view pattern, std::string rewrite);
/// Renames exactly the keys in the table; others stay.
GRAFT_FUNC rename_stage<detail::table_rule> rename_keys(std::map<std::string, std::string, std::less<>> table);

/// The stage cast(dtype) makes.
class cast_stage : public pipe_base, public detail::stage_defaults {
public:
  explicit cast_stage(torch::Dtype d) : dtype_(d) {}
  bool apply(state_entry& e, std::size_t& hits) const {
    if (e.tensor.is_floating_point() && e.tensor.scalar_type() != dtype_) {
      e.tensor = e.tensor.to(dtype_);
      ++hits;
    }
    return true;
  }
  std::string describe() const { return std::string("cast(") + c10::toString(dtype_) + ")"; }

private:
  torch::Dtype dtype_;
};
/// Converts floating-point tensors to `dtype` (integer and bool tensors, such as BatchNorm's
/// num_batches_tracked, keep theirs).
inline cast_stage cast(torch::Dtype d) { return cast_stage(d); }

/// The stage to(device) makes.
class to_stage : public pipe_base, public detail::stage_defaults {
public:
  explicit to_stage(torch::Device d) : device_(d) {}
  bool apply(state_entry& e, std::size_t& hits) const {
    if (e.tensor.device() != device_) {
      e.tensor = e.tensor.to(device_);
      ++hits;
    }
    return true;
  }
  std::string describe() const { return "to(" + device_.str() + ")"; }

private:
  torch::Device device_;
};
/// Moves every tensor to `device`.
inline to_stage to(torch::Device d) { return to_stage(d); }

/// The stage make_stage(f) makes.
template <class F>
class function_stage : public pipe_base, public detail::stage_defaults {
public:
  function_stage(F f, std::string text) : f_(std::move(f)), text_(std::move(text)) {}
  bool apply(state_entry& e, std::size_t& hits) const {
    if constexpr (std::is_void_v<std::invoke_result_t<const F&, state_entry&>>) {
      f_(e);
      ++hits;
      return true;
    } else {
      const bool keep = static_cast<bool>(f_(e));
      hits += keep;
      return keep;
    }
  }
  std::string describe() const { return text_; }

private:
  F f_;
  std::string text_;
};

/// Your own per-entry stage: f(graft::state_entry&) may rewrite the entry's key and tensor in
/// place and returns whether to keep it (a void f keeps every entry). It joins pipelines as
/// graft's own stages do, runs fused with its neighbours in one pass over the entries, and
/// `description` names it in describe() and error messages:
///   read(p) | make_stage([](graft::state_entry& e) { e.tensor = e.tensor.to(torch::kHalf); }, "to_half") | merge(m)
template <class F>
  requires std::is_invocable_v<const F&, state_entry&> &&
           (std::is_void_v<std::invoke_result_t<const F&, state_entry&>> ||
            std::is_convertible_v<std::invoke_result_t<const F&, state_entry&>, bool>)
function_stage<F> make_stage(F f, std::string description = "make_stage(function)") {
  return function_stage<F>(std::move(f), std::move(description));
}

/// Full-call forms: filter(sd, sel), rename(sd, rule), ...
template <selector S>
state_dict filter(state_dict sd, S s) { return apply(std::move(sd), filter(std::move(s))); }

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/state_dict/stages-inl.hpp>
#endif
