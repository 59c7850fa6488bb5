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
GRAFT_ERROR_CLASSES(GRAFT_DEFINE_ERROR)
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
#define GRAFT_THROW_ERROR(name, k) \
  case error_kind::k: throw name(message, std::move(where));
    GRAFT_ERROR_CLASSES(GRAFT_THROW_ERROR)
#undef GRAFT_THROW_ERROR
  }
  throw error(kind, message, std::move(where));
}

} // namespace graft
