#pragma once
// graft's one exception family: every error derives from graft::error, carries a kind users
// can switch on, and a message that starts with "[graft.<kind>]" and names the input.

#include <stdexcept>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace graft {

/// What went wrong, for code that catches graft::error and wants to branch.
enum class error_kind {
  pattern,    ///< a glob or regex that cannot be parsed
  selection,  ///< a selector that matched nothing, or a selection that disagrees
  key,        ///< a checkpoint key that is missing, unexpected or collides
  shape,      ///< tensors whose shapes or dtypes disagree
  format,     ///< a malformed or unsupported file
  io,         ///< a file that cannot be opened, read or written
  option,     ///< an option or argument that makes no sense
  state,      ///< an object used in a state that does not allow it
  distributed ///< a collective that failed or disagreed across ranks
};

/// The word used for a kind in messages: "selection", "format", ...
constexpr std::string_view to_string(error_kind k) noexcept {
  switch (k) {
    case error_kind::pattern: return "pattern";
    case error_kind::selection: return "selection";
    case error_kind::key: return "key";
    case error_kind::shape: return "shape";
    case error_kind::format: return "format";
    case error_kind::io: return "io";
    case error_kind::option: return "option";
    case error_kind::state: return "state";
    case error_kind::distributed: return "distributed";
  }
  return "unknown";
}

/// Base of every exception graft throws.
class error : public std::runtime_error {
public:
  error(error_kind kind, std::string_view what)
      : std::runtime_error(fmt::format("[graft.{}] {}", to_string(kind), what)), kind_(kind) {}
  /// The kind of failure.
  error_kind kind() const noexcept { return kind_; }

private:
  error_kind kind_;
};

#define GRAFT_DEFINE_ERROR(name, k)                                                   \
  /** An error of kind error_kind::k. */                                              \
  class name : public error {                                                         \
  public:                                                                             \
    explicit name(std::string_view what) : error(error_kind::k, what) {}              \
  };
GRAFT_DEFINE_ERROR(pattern_error, pattern)
GRAFT_DEFINE_ERROR(selection_error, selection)
GRAFT_DEFINE_ERROR(key_error, key)
GRAFT_DEFINE_ERROR(shape_error, shape)
GRAFT_DEFINE_ERROR(format_error, format)
GRAFT_DEFINE_ERROR(io_error, io)
GRAFT_DEFINE_ERROR(option_error, option)
GRAFT_DEFINE_ERROR(state_error, state)
GRAFT_DEFINE_ERROR(distributed_error, distributed)
#undef GRAFT_DEFINE_ERROR

} // namespace graft
