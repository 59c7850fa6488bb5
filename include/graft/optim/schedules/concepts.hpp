#pragma once
// What an LR schedule description is. Descriptions are plain values; graft::lr_scheduler attaches
// one to an optimizer and drives every param group from that group's own base lr.

#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <graft/config.hpp>
#include <graft/error.hpp>

namespace graft {

/// One param group as a schedule sees it: its index and the lr it started from (PyTorch's initial_lr).
struct group_base {
  std::size_t index = 0; ///< position in optimizer.param_groups()
  double lr = 0;         ///< the group's lr when the scheduler first saw it
};

/// Satisfied by a schedule description: validate() throws option_error on bad settings, lr() gives a
/// group's lr at an epoch (a pure function of epoch and base, so resuming and new groups are exact),
/// name() says which schedule it is.
template <class S>
concept lr_schedule =
    std::copy_constructible<S> && requires(const S& s, std::int64_t epoch, const group_base& g) {
      s.validate();
      { s.lr(epoch, g) } -> std::same_as<double>;
      { s.name() } -> std::convertible_to<std::string>;
    };

/// Satisfied by a schedule that also sets each group's momentum (SGD/RMSprop momentum, Adam's beta1);
/// momentum() returns nullopt when it leaves momentum alone.
template <class S>
concept momentum_schedule =
    lr_schedule<S> && requires(const S& s, std::int64_t epoch, const group_base& g) {
      { s.momentum(epoch, g) } -> std::same_as<std::optional<double>>;
    };

/// Satisfied by a schedule with per-group settings, which must check the optimizer's group count.
template <class S>
concept group_checked_schedule = lr_schedule<S> && requires(const S& s, std::size_t groups) {
  s.check_groups(groups);
};

namespace detail::sched {

/// Throws option_error "<setting> must be <requirement>, got <value>".
[[noreturn]] GRAFT_FUNC void bad_setting(std::string_view setting, std::string_view requirement, double value);
[[noreturn]] GRAFT_FUNC void bad_setting(std::string_view setting, std::string_view requirement, std::int64_t value);
/// Throws option_error "<setting> must be in [lo, hi], got <value>".
[[noreturn]] GRAFT_FUNC void bad_range(std::string_view setting, double value, double lo, double hi);

/// Throws option_error unless `value` is finite and > 0; `setting` reads like "step_lr.gamma".
inline void require_positive(std::string_view setting, double value) {
  if (!(value > 0) || !std::isfinite(value)) bad_setting(setting, "> 0", value);
}

/// Throws option_error unless `value` is finite and >= 0.
inline void require_non_negative(std::string_view setting, double value) {
  if (!(value >= 0) || !std::isfinite(value)) bad_setting(setting, ">= 0", value);
}

/// Throws option_error unless 0 < value <= 1.
inline void require_fraction(std::string_view setting, double value) {
  if (!(value > 0 && value <= 1)) bad_setting(setting, "in (0, 1]", value);
}

/// Throws option_error unless lo <= value <= hi.
inline void require_between(std::string_view setting, double value, double lo, double hi) {
  if (!(value >= lo && value <= hi)) bad_range(setting, value, lo, hi);
}

/// Throws option_error unless value >= 1 (a count of epochs or steps).
inline void require_count(std::string_view setting, std::int64_t value) {
  if (value < 1) bad_setting(setting, ">= 1", value);
}

} // namespace detail::sched
} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/optim/schedules/concepts-inl.hpp>
#endif
