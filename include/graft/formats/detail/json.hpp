#pragma once
// Strict JSON parsing for checkpoint headers: nlohmann's parser keeps the last of two equal
// keys silently, and a checkpoint whose header names a tensor twice is malformed.

#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <graft/error.hpp>

namespace graft::detail {

/// Parses `text` (the bytes at file offset `at` of `file`) keeping object keys in their written
/// order; a format_error naming the file for invalid JSON or a key repeated within an object.
inline nlohmann::ordered_json parse_json_strict(std::string_view text, const std::string& file, std::size_t at) {
  // nlohmann stops at a NUL as if the input ended there, and would ignore what follows.
  if (auto nul = text.find('\0'); nul != std::string_view::npos)
    throw format_error(fmt::format("'{}': invalid JSON at byte {}: a NUL byte (JSON never holds one; safetensors pads its "
                                   "header with spaces)",
                                   file, at + nul));
  std::vector<std::set<std::string>> seen;  // keys of each object being parsed, innermost last
  auto check = [&](int, nlohmann::ordered_json::parse_event_t event, nlohmann::ordered_json& parsed) {
    using ev = nlohmann::ordered_json::parse_event_t;
    if (event == ev::object_start) seen.emplace_back();
    else if (event == ev::object_end) seen.pop_back();
    else if (event == ev::key && !seen.back().insert(parsed.get<std::string>()).second)
      throw format_error(fmt::format("'{}': key '{}' appears twice in one JSON object", file, parsed.get<std::string>()));
    return true;
  };
  try {
    return nlohmann::ordered_json::parse(text.begin(), text.end(), check);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann's text starts with its own "[json.exception.parse_error.N] " tag.
    std::string_view what = e.what();
    if (auto p = what.find("] "); p != std::string_view::npos) what.remove_prefix(p + 2);
    throw format_error(fmt::format("'{}': invalid JSON at byte {}: {}", file,
                                   at + (e.byte ? e.byte - 1 : 0), what));
  } catch (const nlohmann::json::exception& e) {
    throw format_error(fmt::format("'{}': invalid JSON: {}", file, e.what()));
  }
}

} // namespace graft::detail
