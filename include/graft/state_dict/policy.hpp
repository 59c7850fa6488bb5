#pragma once
// load_policy: what a merge accepts. Each kind of deviation (missing, unexpected, mismatched)
// is refused unless the policy allows it, for everything or only for a name selection:
//   {.missing = graft::allow("fc.**"_glob), .unexpected = graft::allow_all,
//    .mismatched = graft::allow("fc.**"_glob)}

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <graft/select/concepts.hpp>

namespace graft {

/// Which keys a kind of deviation is accepted for: none (strict), all, or a name selection.
class key_rule {
public:
  /// Accepted for no key: the default, strict.
  key_rule() = default;
  bool accepts(std::string_view key) const {
    if (all_) return true;
    return match_ && match_(key);
  }
  bool accepts_any() const noexcept { return all_ || match_ != nullptr; }
  std::string describe() const { return all_ ? "all" : match_ ? text_ : "none"; }

  static key_rule everything() {
    key_rule r;
    r.all_ = true;
    return r;
  }
  template <name_selector S>
  static key_rule selected(S s) {
    key_rule r;
    r.text_ = s.describe();
    r.match_ = [s = std::move(s)](std::string_view k) { return s.matches(entry_view(k)); };
    return r;
  }

private:
  bool all_ = false;
  std::function<bool(std::string_view)> match_;
  std::string text_;
};

/// Accept the deviation for the keys a name selector picks (glob, regex, names, prefix,
/// local_name): load policies decide by key alone.
template <name_selector S>
key_rule allow(S s) {
  return key_rule::selected(std::move(s));
}
/// Accept the deviation for every key.
inline const key_rule allow_all = key_rule::everything();

/// What merge() and validate() accept. The default refuses every deviation, as PyTorch's
/// load_state_dict(strict=True) does (and, as PyTorch always does, refuses shape mismatches).
struct load_policy {
  /// Model keys the checkpoint lacks: these keep the model's values.
  key_rule missing{};
  /// Checkpoint keys the model lacks: these are ignored.
  key_rule unexpected{};
  /// Keys whose shapes differ: these keep the model's values...
  key_rule mismatched{};
  /// ...unless adapted: copy the overlapping block (the first rows of a wider or narrower
  /// head), keeping the model's own initialization elsewhere (the head-growing recipe).
  key_rule adapt{};
  /// Whether a dtype difference (float16 checkpoint, float32 model) is converted while
  /// copying; if false it is a mismatch.
  bool convert_dtype = true;
  /// Threads that read tensors from a memory-mapped checkpoint file into the model: 0 is one
  /// per core (at most 8), 1 reads on the calling thread. Small loads use one thread.
  unsigned threads = 0;

  /// PyTorch's strict=True.
  static load_policy strict() { return {}; }
  /// PyTorch's strict=False: missing and unexpected keys are fine; shape mismatches are not.
  static load_policy non_strict() { return {.missing = allow_all, .unexpected = allow_all}; }
};

} // namespace graft
