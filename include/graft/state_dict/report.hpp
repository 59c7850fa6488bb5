#pragma once
// load_report: what a merge loaded, and every key that was missing, unexpected or mismatched,
// each marked allowed or not by the policy; with hints for the usual renaming problems.
// Printable with fmt.

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <c10/core/ScalarType.h>
#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/detail/dtypes.hpp>
#include <graft/detail/join.hpp>
#include <graft/detail/report_formatter.hpp>
#include <graft/error.hpp>

namespace graft {

/// The outcome of matching a state dict against a model.
struct load_report {
  struct loaded_entry {
    std::string key;         ///< the model's key
    std::string source_key;  ///< the key in the checkpoint, before renames
    std::vector<std::int64_t> shape;
    c10::ScalarType from;  ///< dtype in the checkpoint
    c10::ScalarType to;    ///< dtype in the model
    bool renamed() const { return key != source_key; }
    bool converted() const { return from != to; }
  };
  struct key_entry {
    std::string key;
    bool allowed;
    std::string nearest;  ///< the closest key on the other side, if any is close
  };
  struct mismatch {
    std::string key;
    std::string source_key;
    std::vector<std::int64_t> model_shape, checkpoint_shape;
    c10::ScalarType model_dtype, checkpoint_dtype;
    bool allowed;
    bool adapted;  ///< the overlapping block was copied (policy.adapt)
  };

  std::vector<loaded_entry> loaded;
  std::vector<key_entry> missing;     ///< in the model, not in the checkpoint
  std::vector<key_entry> unexpected;  ///< in the checkpoint, not in the model
  std::vector<mismatch> mismatched;   ///< in both, with different shapes (or dtypes)
  /// In the model, not in the checkpoint, and not missing for PyTorch's load_state_dict: the
  /// num_batches_tracked of a BatchNorm saved before it had one (module version < 2), which is
  /// set to 0 (libtorch < 2.2) or keeps the model's value (2.2 on), as that release's Python does.
  std::vector<std::string> defaulted;
  std::vector<std::string> hints;     ///< renames that would fix many keys at once

  load_report() = default;
  // Compiled once in graft::compiled rather than in every unit that lets a report go.
  GRAFT_FUNC load_report(const load_report&);
  GRAFT_FUNC load_report(load_report&&) noexcept;
  GRAFT_FUNC load_report& operator=(const load_report&);
  GRAFT_FUNC load_report& operator=(load_report&&) noexcept;
  GRAFT_FUNC ~load_report();

  /// Whether the policy accepts every deviation (a merge then changes the model).
  bool accepted() const {
    auto ok = [](auto& v) { return std::all_of(v.begin(), v.end(), [](auto& e) { return e.allowed; }); };
    return ok(missing) && ok(unexpected) && ok(mismatched);
  }
  std::size_t renamed_count() const {
    return static_cast<std::size_t>(std::count_if(loaded.begin(), loaded.end(), [](auto& e) { return e.renamed(); }));
  }
  std::size_t converted_count() const {
    return static_cast<std::size_t>(std::count_if(loaded.begin(), loaded.end(), [](auto& e) { return e.converted(); }));
  }
  std::size_t adapted_count() const {
    return static_cast<std::size_t>(std::count_if(mismatched.begin(), mismatched.end(), [](auto& e) { return e.adapted; }));
  }
  static std::vector<std::string> keys_of(const std::vector<key_entry>& v) {
    std::vector<std::string> k;
    for (auto& e : v) k.push_back(e.key);
    return k;
  }
  std::vector<std::string> missing_keys() const { return keys_of(missing); }
  std::vector<std::string> unexpected_keys() const { return keys_of(unexpected); }
  std::vector<std::string> loaded_keys() const {
    std::vector<std::string> k;
    for (auto& e : loaded) k.push_back(e.key);
    return k;
  }
};

/// A merge the policy refused: the model is unchanged; report() tells everything. It is thrown
/// as a key_error (keys missing or unexpected) or a shape_error (shapes or dtypes only) that is
/// also a load_error: catch whichever you need.
class load_error {
public:
  explicit load_error(load_report r) : report_(std::move(r)) {}
  virtual ~load_error() = default;
  const load_report& report() const noexcept { return report_; }
  /// The graft::error this is: a key_error or a shape_error.
  virtual const error& as_error() const noexcept = 0;
  const char* what() const noexcept { return as_error().what(); }
  error_kind kind() const noexcept { return as_error().kind(); }

private:
  load_report report_;
};

namespace detail {
template <class E>
class refused_load final : public E, public load_error {
public:
  refused_load(std::string_view message, load_report r) : E(message), load_error(std::move(r)) {}
  const error& as_error() const noexcept override { return *this; }
  const char* what() const noexcept override { return E::what(); }
};
} // namespace detail

} // namespace graft

/// Prints a summary line, then each deviation (up to 10 per kind), then the hints.
template <>
struct fmt::formatter<graft::load_report> : graft::detail::report_formatter {
  template <class Ctx>
  auto format(const graft::load_report& r, Ctx& ctx) const {
    std::string out = fmt::format("loaded {} tensors ({} renamed, {} converted), {} missing, {} unexpected, {} mismatched{}{}: {}",
                                  r.loaded.size(), r.renamed_count(), r.converted_count(), r.missing.size(), r.unexpected.size(),
                                  r.mismatched.size(), r.adapted_count() ? fmt::format(" ({} adapted)", r.adapted_count()) : "",
                                  r.defaulted.empty() ? std::string() : fmt::format(", {} defaulted", r.defaulted.size()),
                                  r.accepted() ? "accepted" : "REFUSED");
    auto keys = [&](const char* what, const std::vector<graft::load_report::key_entry>& v, const char* ok) {
      std::size_t shown = 0;
      for (auto& e : v) {
        if (shown++ == 10) {
          out += fmt::format("\n  ... and {} more {}", v.size() - 10, what);
          break;
        }
        out += fmt::format("\n  {} {}{}{}", what, e.key, e.allowed ? fmt::format(" ({})", ok) : std::string(" (not allowed)"),
                           e.nearest.empty() ? std::string() : fmt::format("; nearest: {}", e.nearest));
      }
    };
    keys("missing", r.missing, "allowed: keeps the model's value");
    keys("unexpected", r.unexpected, "ignored");
    std::size_t shown = 0;
    for (auto& m : r.mismatched) {
      if (shown++ == 10) {
        out += fmt::format("\n  ... and {} more mismatched", r.mismatched.size() - 10);
        break;
      }
      out += fmt::format("\n  mismatched {}: model [{}] {}, checkpoint [{}] {}{}", m.key, graft::detail::join(m.model_shape, ", "),
                         c10::toString(m.model_dtype), graft::detail::join(m.checkpoint_shape, ", "), c10::toString(m.checkpoint_dtype),
                         m.adapted ? " (adapted: overlap copied)" : m.allowed ? " (allowed: keeps the model's value)" : " (not allowed)");
    }
    for (std::size_t i = 0; i < r.defaulted.size() && i < 10; ++i)
      out += fmt::format("\n  defaulted {} {} (a BatchNorm saved without it, module version < 2; as load_state_dict does)",
                         r.defaulted[i], GRAFT_TORCH_AT_LEAST(2, 2) ? "keeps the model's value" : "= 0");
    if (r.defaulted.size() > 10) out += fmt::format("\n  ... and {} more defaulted", r.defaulted.size() - 10);
    for (auto& h : r.hints) out += fmt::format("\n  hint: {}", h);
    return graft::detail::write_text(ctx, out);
  }
};

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/state_dict/report-inl.hpp>
#endif
