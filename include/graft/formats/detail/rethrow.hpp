#pragma once
// What every reader does with an error that is not graft's own: libtorch's errors and running
// out of memory become one format_error naming the file.

#include <new>
#include <string>
#include <utility>

#include <c10/util/Exception.h>
#include <fmt/format.h>

#include <graft/error.hpp>

namespace graft::detail {

/// Runs f(); a c10::Error or std::bad_alloc from it becomes a format_error naming `path`, a
/// graft::error passes through as it is.
template <class F>
decltype(auto) rethrow_as_format_error(const std::string& path, F&& f) {
  try {
    return std::forward<F>(f)();
  } catch (const graft::error&) {
    throw;
  } catch (const c10::Error& e) {
    throw format_error(e.what_without_backtrace(), {.file = path});
  } catch (const std::bad_alloc&) {
    throw format_error("out of memory while reading", {.file = path});
  }
}

} // namespace graft::detail
