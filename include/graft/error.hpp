#pragma once
// graft's one exception family: every error derives from graft::error, its class is its kind
// (users catch the class or switch on kind()), its what() starts with "[graft.<kind>]" and
// names the input, and the bare message and the place (file, key, record, byte offset) are
// kept apart for code that wraps or inspects it.

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <graft/config.hpp>

namespace graft {

/// What went wrong, for code that catches graft::error and wants to branch. Each kind is one
/// exception class (format -> format_error, ...), derived from graft::error.
enum class error_kind {
  pattern,    ///< a glob or regex that cannot be parsed
  selection,  ///< a selector that matched nothing, or a selection that disagrees
  key,        ///< a checkpoint key that is missing, unexpected or collides
  shape,      ///< tensors whose shapes or dtypes disagree
  format,     ///< a malformed or unsupported file
  io,         ///< a file that cannot be opened, read or written
  option,     ///< an option or argument that makes no sense
  state,      ///< an object used in a state that does not allow it
  distributed,///< a collective that failed or disagreed across ranks
  type        ///< a value of another type than the one asked for (a checkpoint's int read as a dict)
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
    case error_kind::type: return "type";
  }
  return "unknown";
}

/// Where an error happened, for the errors that have a place. Every field may be empty.
struct error_context {
  std::string file{};                     ///< the file read or written
  std::string key{};                      ///< the checkpoint key or tensor name concerned
  std::string record{};                   ///< the part of the file: a zip record, "the file", ...
  std::optional<std::uint64_t> offset{};  ///< the byte in `record` (or the file)
  /// The message names the file itself ("cannot open 'x': ..."); what() does not prefix it.
  bool file_in_message = false;
};

/// Base of every exception graft throws. what() is "[graft.<kind>] " then, for an error with a
/// place, "'<file>': ", the message, and " (byte <offset> of <record>)".
class error : public std::runtime_error {
public:
  GRAFT_FUNC error(error_kind kind, std::string_view message, error_context where = {});
  GRAFT_FUNC ~error() override;
  /// The kind of failure.
  error_kind kind() const noexcept { return kind_; }
  /// The message alone: no kind tag, file or offset (those are in context()).
  const std::string& message() const noexcept { return message_; }
  /// Where it happened: file, key, record, byte offset (each empty if unknown).
  const error_context& context() const noexcept { return where_; }
  /// what() without the kind tag: to carry the error elsewhere and throw it again there with
  /// throw_error(kind(), text()).
  GRAFT_FUNC std::string text() const;
  /// what() without the kind tag and the file: for an error that wraps this one and names the
  /// file itself.
  GRAFT_FUNC std::string text_in_file() const;

private:
  GRAFT_FUNC static std::string location(const error_context& w);
  GRAFT_FUNC static std::string body(std::string_view message, const error_context& w);
  GRAFT_FUNC static std::string render(error_kind kind, std::string_view message, const error_context& w);
  error_kind kind_;
  std::string message_;
  error_context where_;
};

// Each kind's exception class, X(class, kind): declared here, defined in error-inl.hpp, and
// thrown by throw_error; one list for the three.
#define GRAFT_ERROR_CLASSES(X)      \
  X(pattern_error, pattern)         \
  X(selection_error, selection)     \
  X(key_error, key)                 \
  X(shape_error, shape)             \
  X(format_error, format)           \
  X(io_error, io)                   \
  X(option_error, option)           \
  X(state_error, state)             \
  X(distributed_error, distributed) \
  X(type_error, type)

// Its constructor and destructor are GRAFT_FUNC (error-inl.hpp), so the separately compiled
// mode emits the class's code, vtable and type information once.
#define GRAFT_DECLARE_ERROR(name, k)                                     \
  /** An error of kind error_kind::k. */                                 \
  class name : public error {                                            \
  public:                                                                \
    static constexpr error_kind kind_value = error_kind::k;              \
    GRAFT_FUNC explicit name(std::string_view message, error_context where = {}); \
    GRAFT_FUNC ~name() override;                                         \
  };
GRAFT_ERROR_CLASSES(GRAFT_DECLARE_ERROR)
#undef GRAFT_DECLARE_ERROR

/// Throws the exception class of `kind` with `message` and `where`: to re-throw an error of
/// the same kind elsewhere (on another rank, after a wrapper) without parsing its text.
[[noreturn]] GRAFT_FUNC void throw_error(error_kind kind, std::string_view message, error_context where = {});

} // namespace graft

#ifndef GRAFT_SEPARATE_COMPILATION
#include <graft/error-inl.hpp>
#endif
