#pragma once
// JSON for checkpoint headers, shard indexes and adapter configs: a strict reader (RFC 8259,
// UTF-8 checked, objects in their written order, a key repeated within an object is an error)
// and a writer. Errors name the file and the byte offset.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <graft/error.hpp>

namespace graft::detail {

/// The offset of the first byte of `s` that starts no well-formed UTF-8 sequence (no overlong
/// forms, no surrogates, nothing above U+10FFFF, nothing cut short), or npos if there is none.
inline std::size_t invalid_utf8_at(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return i;
    if (i + 1 >= n || p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if (i + k >= n || (p[i + k] & 0xC0) != 0x80) return i;
    i += len;
  }
  return std::string_view::npos;
}

/// `s` in double quotes for a message, with quotes, backslashes, control characters and bytes
/// that are not UTF-8 escaped (\xff), so that a string JSON refuses can still be shown.
inline std::string quoted(std::string_view s) {
  std::string out = "\"";
  std::size_t i = 0;
  while (i < s.size()) {
    const auto bad = invalid_utf8_at(s.substr(i));
    const auto good = s.substr(i, bad == std::string_view::npos ? s.size() - i : bad);
    for (char ch : good) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') out += '\\', out += ch;
      else if (c == '\n') out += "\\n";
      else if (c == '\t') out += "\\t";
      else if (c < 0x20 || c == 0x7F) out += fmt::format("\\x{:02x}", c);
      else out += ch;
    }
    i += good.size();
    if (i < s.size()) out += fmt::format("\\x{:02x}", static_cast<unsigned char>(s[i++]));
  }
  return out + '"';
}

/// The message for a string JSON text cannot hold, "<what> "<s>" is not valid UTF-8 (byte <n>)",
/// or nullopt if `s` is UTF-8.
inline std::optional<std::string> not_utf8(std::string_view what, std::string_view s) {
  const auto bad = invalid_utf8_at(s);
  if (bad == std::string_view::npos) return std::nullopt;
  return fmt::format("{} {} is not valid UTF-8 (byte {})", what, quoted(s), bad);
}

/// A member of a JSON object; a template so that json's own inline members can hold
/// std::vector<member> before member is complete (clang checks that in C++20 mode).
template <class Json>
struct json_member {
  std::string key;
  Json value;
};

/// One JSON value. Objects keep their members in written order.
class json {
 public:
  enum class kind : unsigned char { null, boolean, number, string, array, object };
  using member = json_member<json>;

  json() noexcept = default;
  json(std::nullptr_t) noexcept {}
  json(bool b) noexcept : kind_(kind::boolean), bool_(b) {}
  template <class I>
    requires(std::is_integral_v<I> && !std::is_same_v<I, bool>)
  json(I v) noexcept : kind_(kind::number) {
    if constexpr (std::is_signed_v<I>) {
      if (v < 0) {
        number_ = number::negative, int_ = v;
        return;
      }
    }
    uint_ = static_cast<std::uint64_t>(v);
  }
  json(double v) noexcept : kind_(kind::number), number_(number::real), real_(v) {}
  json(std::string s) noexcept : kind_(kind::string), string_(std::move(s)) {}
  json(std::string_view s) : json(std::string(s)) {}
  json(const char* s) : json(std::string(s)) {}

  static json array() { return with_kind(kind::array); }
  static json object() { return with_kind(kind::object); }
  template <class Range>
  static json array_of(const Range& r) {
    auto a = array();
    for (const auto& e : r) a.push_back(json(e));
    return a;
  }

  kind type() const noexcept { return kind_; }
  bool is_null() const noexcept { return kind_ == kind::null; }
  bool is_boolean() const noexcept { return kind_ == kind::boolean; }
  bool is_number() const noexcept { return kind_ == kind::number; }
  bool is_string() const noexcept { return kind_ == kind::string; }
  bool is_array() const noexcept { return kind_ == kind::array; }
  bool is_object() const noexcept { return kind_ == kind::object; }
  /// "null", "boolean", "number", "string", "array" or "object", for messages.
  std::string_view type_name() const noexcept {
    constexpr std::string_view names[] = {"null", "boolean", "number", "string", "array", "object"};
    return names[static_cast<int>(kind_)];
  }

  bool as_bool() const noexcept { return bool_; }
  const std::string& as_string() const noexcept { return string_; }
  /// A number written as a non-negative integer (not 2.0 or 1e3), or nullopt.
  std::optional<std::uint64_t> as_index() const noexcept {
    if (kind_ == kind::number && number_ == number::non_negative) return uint_;
    return std::nullopt;
  }
  /// A number with an integral value that fits 64 bits signed (8 and 8.0, not 8.5), or nullopt.
  std::optional<std::int64_t> as_integer() const noexcept {
    if (kind_ != kind::number) return std::nullopt;
    switch (number_) {
      case number::non_negative:
        if (uint_ > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
        return static_cast<std::int64_t>(uint_);
      case number::negative: return int_;
      case number::real:
        if (real_ >= -9.2233720368547758e18 && real_ < 9.2233720368547758e18 && real_ == static_cast<double>(static_cast<std::int64_t>(real_)))
          return static_cast<std::int64_t>(real_);
        return std::nullopt;
    }
    return std::nullopt;
  }
  /// Any number as a double.
  double as_double() const noexcept {
    switch (number_) {
      case number::non_negative: return static_cast<double>(uint_);
      case number::negative: return static_cast<double>(int_);
      case number::real: return real_;
    }
    return real_;
  }

  const std::vector<json>& elements() const noexcept { return elements_; }
  const std::vector<member>& members() const noexcept { return members_; }
  /// Elements of an array, members of an object; 0 for anything else.
  std::size_t size() const noexcept;
  /// The value of an object's member `key`, or nullptr.
  const json* find(std::string_view key) const noexcept;
  /// The value of a member of an object that is present and not null, or nullptr.
  const json* find_set(std::string_view key) const noexcept {
    auto v = find(key);
    return v && !v->is_null() ? v : nullptr;
  }
  /// An object's member `key`, appended as null if absent.
  json& operator[](std::string_view key);
  /// Adds member `key` to an object without looking for an equal one: for keys known unique.
  json& append(std::string key, json v);
  void push_back(json v) { elements_.push_back(std::move(v)); }

  /// The text of this value: compact, or with `indent` spaces per level and one member or
  /// element per line. Strings must be UTF-8 (format_error otherwise); a number that is not
  /// finite is written null.
  std::string dump(int indent = -1) const {
    std::string out;
    write(out, indent, 0);
    return out;
  }

  /// Parses `text`, the bytes at offset `at` of `file`: a format_error naming the file and
  /// byte for anything that is not one JSON value, alone but for white space.
  static json parse(std::string_view text, const std::string& file, std::size_t at);

 private:
  enum class number : unsigned char { non_negative, negative, real };
  class parser;

  static json with_kind(kind k) {
    json j;
    j.kind_ = k;
    return j;
  }
  static void write_string(std::string& out, std::string_view s);
  void write(std::string& out, int indent, int depth) const;

  kind kind_ = kind::null;
  bool bool_ = false;
  number number_ = number::non_negative;
  std::uint64_t uint_ = 0;
  std::int64_t int_ = 0;
  double real_ = 0;
  std::string string_;
  std::vector<json> elements_;
  std::vector<member> members_;
};

inline std::size_t json::size() const noexcept { return kind_ == kind::array ? elements_.size() : members_.size(); }

inline json& json::append(std::string key, json v) {
  members_.push_back({std::move(key), std::move(v)});
  return members_.back().value;
}

inline const json* json::find(std::string_view key) const noexcept {
  for (const auto& m : members_)
    if (m.key == key) return &m.value;
  return nullptr;
}

inline json& json::operator[](std::string_view key) {
  for (auto& m : members_)
    if (m.key == key) return m.value;
  members_.push_back({std::string(key), json()});
  return members_.back().value;
}

inline void json::write_string(std::string& out, std::string_view s) {
  if (auto bad = invalid_utf8_at(s); bad != std::string_view::npos)
    throw format_error(fmt::format("JSON strings are UTF-8, and byte {} of this one is not", bad));
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) out += fmt::format("\\u{:04x}", c);
        else out += ch;
    }
  }
  out += '"';
}

inline void json::write(std::string& out, int indent, int depth) const {
  auto newline = [&](int level) {
    if (indent < 0) return;
    out += '\n';
    out.append(static_cast<std::size_t>(indent) * static_cast<std::size_t>(level), ' ');
  };
  switch (kind_) {
    case kind::null: out += "null"; return;
    case kind::boolean: out += bool_ ? "true" : "false"; return;
    case kind::string: write_string(out, string_); return;
    case kind::number:
      if (number_ == number::non_negative) out += fmt::format("{}", uint_);
      else if (number_ == number::negative) out += fmt::format("{}", int_);
      else if (real_ != real_ || real_ - real_ != 0) out += "null";  // NaN or infinite
      else {
        // The shortest text that reads back as the same double, with ".0" for an integral value
        // so that it reads back as a float (Python writes 16.0, not 16).
        auto text = fmt::format("{}", real_);
        if (text.find_first_of(".e") == std::string::npos) text += ".0";
        out += text;
      }
      return;
    case kind::array:
      if (elements_.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (std::size_t i = 0; i < elements_.size(); ++i) {
        if (i) out += ',';
        newline(depth + 1);
        elements_[i].write(out, indent, depth + 1);
      }
      newline(depth);
      out += ']';
      return;
    case kind::object:
      if (members_.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (std::size_t i = 0; i < members_.size(); ++i) {
        if (i) out += ',';
        newline(depth + 1);
        write_string(out, members_[i].key);
        out += indent < 0 ? ":" : ": ";
        members_[i].value.write(out, indent, depth + 1);
      }
      newline(depth);
      out += '}';
      return;
  }
}

class json::parser {
 public:
  parser(std::string_view text, const std::string& file, std::size_t at) : text_(text), file_(file), at_(at) {}

  json document() {
    skip_space();
    json v = value(0);
    skip_space();
    if (pos_ != text_.size())
      fail(pos_, text_[pos_] == '\0' ? "a NUL byte after the value (JSON never holds one; safetensors pads its header with spaces)"
                                      : "more text after the JSON value");
    return v;
  }

 private:
  static constexpr int max_depth = 256;

  [[noreturn]] void fail(std::size_t pos, std::string_view what) const {
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < pos && i < text_.size(); ++i) {
      if (text_[i] == '\n') ++line, column = 1;
      else ++column;
    }
    throw format_error(fmt::format("'{}': invalid JSON at byte {} (line {}, column {}): {}", file_, at_ + pos, line, column, what),
                       {.file = file_, .file_in_message = true});
  }
  [[noreturn]] void fail_here(std::string_view expected) const {
    if (pos_ >= text_.size()) fail(pos_, fmt::format("the text ends where {} should be", expected));
    const auto c = static_cast<unsigned char>(text_[pos_]);
    if (c == 0) fail(pos_, fmt::format("a NUL byte where {} should be (JSON never holds one)", expected));
    if (c >= 0x20 && c < 0x7F) fail(pos_, fmt::format("'{}' where {} should be", text_[pos_], expected));
    fail(pos_, fmt::format("byte 0x{:02x} where {} should be", c, expected));
  }

  void skip_space() noexcept {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r')) ++pos_;
  }
  bool at(char c) const noexcept { return pos_ < text_.size() && text_[pos_] == c; }

  json value(int depth) {
    if (pos_ >= text_.size()) fail_here("a value");
    switch (text_[pos_]) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"': return json(string());
      case 't': literal("true"); return json(true);
      case 'f': literal("false"); return json(false);
      case 'n': literal("null"); return json();
      default:
        if (text_[pos_] == '-' || (text_[pos_] >= '0' && text_[pos_] <= '9')) return number_value();
        fail_here("a value");
    }
  }

  void literal(std::string_view word) {
    for (std::size_t i = 0; i < word.size(); ++i, ++pos_)
      if (pos_ >= text_.size() || text_[pos_] != word[i]) fail_here(fmt::format("the rest of '{}'", word));
  }

  void check_depth(int depth) const {
    if (depth > max_depth) fail(pos_, fmt::format("values nest more than {} deep", max_depth));
  }

  // The comma-separated items of an object or array, the opening '{' or '[' already read, up to
  // `close`: item() reads one.
  template <class Item>
  void items(char close, std::string_view expected, Item&& item) {
    skip_space();
    if (at(close)) {
      ++pos_;
      return;
    }
    while (true) {
      item();
      skip_space();
      if (at(',')) {
        ++pos_;
        skip_space();
        continue;
      }
      if (at(close)) {
        ++pos_;
        return;
      }
      fail_here(expected);
    }
  }

  json object(int depth) {
    check_depth(depth);
    ++pos_;  // {
    json o = json::object();
    items('}', "',' or '}'", [&] {
      if (!at('"')) fail_here("a key (a string)");
      std::string key = string();
      skip_space();
      if (!at(':')) fail_here("':'");
      ++pos_;
      skip_space();
      json v = value(depth);
      o.members_.push_back({std::move(key), std::move(v)});
    });
    if (o.members_.size() > 1) {
      std::unordered_set<std::string_view> seen;
      seen.reserve(o.members_.size());
      for (const auto& m : o.members_)
        if (!seen.insert(m.key).second)
          throw format_error(fmt::format("'{}': key '{}' appears twice in one JSON object", file_, m.key),
                             {.file = file_, .key = m.key, .file_in_message = true});
    }
    return o;
  }

  json array(int depth) {
    check_depth(depth);
    ++pos_;  // [
    json a = json::array();
    items(']', "',' or ']'", [&] { a.elements_.push_back(value(depth)); });
    return a;
  }

  unsigned hex4() {
    unsigned v = 0;
    for (int i = 0; i < 4; ++i, ++pos_) {
      if (pos_ >= text_.size()) fail_here("four hex digits after \\u");
      const char c = text_[pos_];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else fail_here("four hex digits after \\u");
    }
    return v;
  }

  static void append_utf8(std::string& s, unsigned cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | cp >> 6);
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      s += static_cast<char>(0xE0 | cp >> 12);
      s += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xF0 | cp >> 18);
      s += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
      s += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string string() {
    ++pos_;  // "
    std::string s;
    while (true) {
      // The run up to the next quote, backslash or control character is copied at once.
      const std::size_t start = pos_;
      while (pos_ < text_.size() && text_[pos_] != '"' && text_[pos_] != '\\' && static_cast<unsigned char>(text_[pos_]) >= 0x20) ++pos_;
      const auto run = text_.substr(start, pos_ - start);
      if (auto bad = invalid_utf8_at(run); bad != std::string_view::npos)
        fail(start + bad, fmt::format("a string holds byte 0x{:02x}, which is not UTF-8 there", static_cast<unsigned char>(run[bad])));
      s.append(run);
      if (pos_ >= text_.size()) fail(pos_, "the text ends inside a string");
      const char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return s;
      }
      if (c != '\\') fail(pos_, fmt::format("a string holds control character 0x{:02x}; JSON needs it escaped", static_cast<unsigned>(c)));
      const std::size_t escape = pos_++;
      if (pos_ >= text_.size()) fail(pos_, "the text ends inside a string");
      switch (text_[pos_++]) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xDC00 && cp <= 0xDFFF) fail(escape, "\\u escape of a low surrogate with no high surrogate before it");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (pos_ + 1 >= text_.size() || text_[pos_] != '\\' || text_[pos_ + 1] != 'u')
              fail(escape, "\\u escape of a high surrogate with no low surrogate after it");
            pos_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail(escape, "\\u escape of a high surrogate with no low surrogate after it");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(s, cp);
          break;
        }
        default: fail(escape, fmt::format("'\\{}' is not a JSON escape", text_[pos_ - 1]));
      }
    }
  }

  json number_value() {
    const std::size_t start = pos_;
    auto digits = [&] {
      const std::size_t from = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      return pos_ - from;
    };
    const bool negative = at('-');
    if (negative) ++pos_;
    if (at('0')) ++pos_;
    else if (!digits()) fail_here("a digit");
    bool integral = true;
    if (at('.')) {
      ++pos_, integral = false;
      if (!digits()) fail_here("a digit after '.'");
    }
    if (at('e') || at('E')) {
      ++pos_, integral = false;
      if (at('+') || at('-')) ++pos_;
      if (!digits()) fail_here("a digit in the exponent");
    }
    const char* first = text_.data() + start;
    const char* last = text_.data() + pos_;
    json j;
    j.kind_ = kind::number;
    if (integral && !negative) {
      if (std::from_chars(first, last, j.uint_).ec == std::errc()) return j;  // else too large: a double
    } else if (integral) {
      if (std::from_chars(first, last, j.int_).ec == std::errc()) {
        j.number_ = j.int_ < 0 ? number::negative : number::non_negative;  // -0 is 0
        j.uint_ = 0;
        return j;
      }
    }
    j.number_ = number::real;
    const std::string_view written(first, static_cast<std::size_t>(last - first));
    auto [end, ec] = std::from_chars(first, last, j.real_);
    if (ec == std::errc::result_out_of_range && written.find_first_of("eE") != std::string_view::npos &&
        written[written.find_first_of("eE") + 1] == '-')
      j.real_ = negative ? -0.0 : 0.0;  // too small for a double: zero, as Python reads it
    else if (ec != std::errc() || end != last)
      fail(start, fmt::format("number {} is beyond the range of a double", written));
    return j;
  }

  std::string_view text_;
  const std::string& file_;
  std::size_t at_;
  std::size_t pos_ = 0;
};

inline json json::parse(std::string_view text, const std::string& file, std::size_t at) {
  return parser(text, file, at).document();
}

} // namespace graft::detail
