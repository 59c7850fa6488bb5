#pragma once
// The definitions of error.hpp: composing what() and re-throwing by kind.

#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include <graft/config.hpp>
#include <graft/error.hpp>

namespace graft {

GRAFT_FUNC error::error(error_kind kind, std::string_view message, error_context where)
    : std::runtime_error(render(kind, message, where)), kind_(kind), message_(message), where_(std::move(where)) {}

GRAFT_FUNC error::~error() = default;

#define GRAFT_DEFINE_ERROR(name, k)                                                                   \
  GRAFT_FUNC name::name(std::string_view message, error_context where)                                \
      : error(error_kind::k, message, std::move(where)) {}                                            \
  GRAFT_FUNC name::~name() = default;
GRAFT_DEFINE_ERROR(pattern_error, pattern)
GRAFT_DEFINE_ERROR(selection_error, selection)
GRAFT_DEFINE_ERROR(key_error, key)
GRAFT_DEFINE_ERROR(shape_error, shape)
GRAFT_DEFINE_ERROR(format_error, format)
GRAFT_DEFINE_ERROR(io_error, io)
GRAFT_DEFINE_ERROR(option_error, option)
GRAFT_DEFINE_ERROR(state_error, state)
GRAFT_DEFINE_ERROR(distributed_error, distributed)
GRAFT_DEFINE_ERROR(type_error, type)
#undef GRAFT_DEFINE_ERROR

GRAFT_FUNC std::string error::text() const { return body(message_, where_); }

GRAFT_FUNC std::string error::text_in_file() const {
  return where_.file_in_message ? message_ : message_ + location(where_);
}

GRAFT_FUNC std::string error::location(const error_context& w) {
  if (!w.offset) return {};
  return fmt::format(" (byte {} of {})", *w.offset, w.record.empty() ? std::string_view("the file") : std::string_view(w.record));
}

GRAFT_FUNC std::string error::body(std::string_view message, const error_context& w) {
  if (w.file.empty() || w.file_in_message) return fmt::format("{}{}", message, location(w));
  return fmt::format("'{}': {}{}", w.file, message, location(w));
}

GRAFT_FUNC std::string error::render(error_kind kind, std::string_view message, const error_context& w) {
  return fmt::format("[graft.{}] {}", to_string(kind), body(message, w));
}

[[noreturn]] GRAFT_FUNC void throw_error(error_kind kind, std::string_view message, error_context where) {
  switch (kind) {
    case error_kind::pattern: throw pattern_error(message, std::move(where));
    case error_kind::selection: throw selection_error(message, std::move(where));
    case error_kind::key: throw key_error(message, std::move(where));
    case error_kind::shape: throw shape_error(message, std::move(where));
    case error_kind::format: throw format_error(message, std::move(where));
    case error_kind::io: throw io_error(message, std::move(where));
    case error_kind::option: throw option_error(message, std::move(where));
    case error_kind::state: throw state_error(message, std::move(where));
    case error_kind::distributed: throw distributed_error(message, std::move(where));
    case error_kind::type: throw type_error(message, std::move(where));
  }
  throw error(kind, message, std::move(where));
}

} // namespace graft
