// The JSON reader and writer behind safetensors headers, shard indexes and adapter configs:
// RFC 8259 strictly, every refusal naming the byte, line and column, and text that Python's
// json module reads back to the same values.

#include <cstdint>
#include <fstream>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <graft/formats/detail/json.hpp>

#include "oracle.hpp"

using graft::detail::json;

namespace {

json parse(std::string_view text) { return json::parse(text, "f.json", 100); }

// The message of parsing `text`, without the "'f.json': " it starts with.
std::string refusal(std::string_view text) {
  try {
    parse(text);
  } catch (const graft::format_error& e) {
    std::string what = e.message();
    const std::string prefix = "'f.json': ";
    return what.starts_with(prefix) ? what.substr(prefix.size()) : "unprefixed: " + what;
  }
  return "no error";
}

} // namespace

TEST_CASE("json: values, in written order, with their types", "[json]") {
  auto j = parse(R"( {"b": [1, -2, 2.5, 1e3, true, false, null, "s"], "a": {}, "c": [], "d": {"x": {"y": [[]]}}} )");
  REQUIRE(j.is_object());
  REQUIRE(j.size() == 4);
  CHECK(j.members()[0].key == "b");
  CHECK(j.members()[1].key == "a");
  CHECK(j.members()[3].key == "d");
  const auto& b = *j.find("b");
  REQUIRE(b.size() == 8);
  CHECK(b.elements()[0].as_index() == 1u);
  CHECK(b.elements()[1].as_integer() == -2);
  CHECK(!b.elements()[1].as_index());
  CHECK(b.elements()[2].as_double() == 2.5);
  CHECK(!b.elements()[2].as_integer());
  // 1e3 is a number written as a float: an integer by value, not an index.
  CHECK(!b.elements()[3].as_index());
  CHECK(b.elements()[3].as_integer() == 1000);
  CHECK(b.elements()[4].as_bool());
  CHECK(b.elements()[5].is_boolean());
  CHECK(b.elements()[6].is_null());
  CHECK(b.elements()[7].as_string() == "s");
  CHECK(j.find("a")->is_object());
  CHECK(j.find("c")->is_array());
  CHECK(!j.find("e"));
  CHECK(j.find("b")->type_name() == "array");
  CHECK(j.find("a")->type_name() == "object");
  CHECK(b.elements()[0].type_name() == "number");
  CHECK(b.elements()[7].type_name() == "string");
  CHECK(b.elements()[4].type_name() == "boolean");
  CHECK(b.elements()[6].type_name() == "null");
}

TEST_CASE("json: numbers at the edges of 64 bits", "[json]") {
  CHECK(parse("18446744073709551615").as_index() == 18446744073709551615u);
  CHECK(!parse("18446744073709551615").as_integer());
  CHECK(parse("9223372036854775807").as_integer() == 9223372036854775807);
  CHECK(parse("-9223372036854775808").as_integer() == std::numeric_limits<std::int64_t>::min());
  // Past 64 bits a number is a double, as Python's float() would read it.
  CHECK(!parse("18446744073709551616").as_index());
  CHECK(parse("18446744073709551616").as_double() == 18446744073709551616.0);
  // Past 64 bits signed, as a double: -2^63 itself fits, the next double below it does not.
  CHECK(parse("-9223372036854775809").as_integer() == std::numeric_limits<std::int64_t>::min());
  CHECK(!parse("-9223372036854777856").as_integer());
  CHECK(parse("-0").as_index() == 0u);
  CHECK(parse("0.1").as_double() == 0.1);
  CHECK(parse("-2.5E-3").as_double() == -2.5e-3);
  CHECK(parse("1e-400").as_double() == 0.0);
  CHECK(refusal("1e400") == "invalid JSON at byte 100 (line 1, column 1): number 1e400 is beyond the range of a double");
}

TEST_CASE("json: strings with escapes and UTF-8", "[json]") {
  CHECK(parse(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse(R"("\u00e9\u20AC")").as_string() == "\xc3\xa9\xe2\x82\xac");
  CHECK(parse(R"("\ud83d\ude00")").as_string() == "\xf0\x9f\x98\x80");  // a surrogate pair: U+1F600
  CHECK(parse("\"\xf0\x9f\x98\x80 \xc3\xa9\"").as_string() == "\xf0\x9f\x98\x80 \xc3\xa9");
  CHECK(parse(R"("\u0000")").as_string() == std::string(1, '\0'));
}

TEST_CASE("json: UTF-8 checked, and strings shown with what is not UTF-8 escaped", "[json]") {
  using graft::detail::invalid_utf8_at, graft::detail::quoted;
  CHECK(invalid_utf8_at("caf\xc3\xa9 \xf0\x9f\x98\x80") == std::string_view::npos);
  CHECK(invalid_utf8_at("ab\xc3.") == 2);       // a lead byte without its continuation
  CHECK(invalid_utf8_at("ab\xe2\x82") == 2);    // cut short
  CHECK(invalid_utf8_at("\xc1\x81") == 0);      // overlong 'A'
  CHECK(invalid_utf8_at("x\xf5\x80\x80\x80") == 1);  // past U+10FFFF
  CHECK(quoted("a\"b\\c\xc3.\n\x01\xc3\xa9") == R"("a\"b\\c\xc3.\n\x01)" "\xc3\xa9\"");
}

TEST_CASE("json: what it refuses, and where", "[json]") {
  CHECK(refusal("") == "invalid JSON at byte 100 (line 1, column 1): the text ends where a value should be");
  CHECK(refusal("[1,]") == "invalid JSON at byte 103 (line 1, column 4): ']' where a value should be");
  CHECK(refusal("{\"a\":1,}") == "invalid JSON at byte 107 (line 1, column 8): '}' where a key (a string) should be");
  CHECK(refusal("{\"a\" 1}") == "invalid JSON at byte 105 (line 1, column 6): '1' where ':' should be");
  CHECK(refusal("[1 2]") == "invalid JSON at byte 103 (line 1, column 4): '2' where ',' or ']' should be");
  CHECK(refusal("{'a': 1}") == "invalid JSON at byte 101 (line 1, column 2): ''' where a key (a string) should be");
  CHECK(refusal("[\n01]") == "invalid JSON at byte 103 (line 2, column 2): '1' where ',' or ']' should be");
  CHECK(refusal("+1") == "invalid JSON at byte 100 (line 1, column 1): '+' where a value should be");
  CHECK(refusal(".5") == "invalid JSON at byte 100 (line 1, column 1): '.' where a value should be");
  CHECK(refusal("1.") == "invalid JSON at byte 102 (line 1, column 3): the text ends where a digit after '.' should be");
  CHECK(refusal("1e+") == "invalid JSON at byte 103 (line 1, column 4): the text ends where a digit in the exponent should be");
  CHECK(refusal("-") == "invalid JSON at byte 101 (line 1, column 2): the text ends where a digit should be");
  CHECK(refusal("NaN") == "invalid JSON at byte 100 (line 1, column 1): 'N' where a value should be");
  CHECK(refusal("tru") == "invalid JSON at byte 103 (line 1, column 4): the text ends where the rest of 'true' should be");
  CHECK(refusal("[] []") == "invalid JSON at byte 103 (line 1, column 4): more text after the JSON value");
  CHECK(refusal("\"abc") == "invalid JSON at byte 104 (line 1, column 5): the text ends inside a string");
  CHECK(refusal("\"a\tb\"") == "invalid JSON at byte 102 (line 1, column 3): a string holds control character 0x09; JSON needs it escaped");
  CHECK(refusal(R"("\x")") == "invalid JSON at byte 101 (line 1, column 2): '\\x' is not a JSON escape");
  CHECK(refusal(R"("\u12g4")") == "invalid JSON at byte 105 (line 1, column 6): 'g' where four hex digits after \\u should be");
  CHECK(refusal(R"("\ud83d")") ==
        "invalid JSON at byte 101 (line 1, column 2): \\u escape of a high surrogate with no low surrogate after it");
  CHECK(refusal(R"("\ude00")") ==
        "invalid JSON at byte 101 (line 1, column 2): \\u escape of a low surrogate with no high surrogate before it");
  // UTF-8 that is ill-formed: a lone continuation byte, an overlong '/', an encoded surrogate,
  // a code point past U+10FFFF, a sequence cut short.
  CHECK(refusal("\"a\x80\"") == "invalid JSON at byte 102 (line 1, column 3): a string holds byte 0x80, which is not UTF-8 there");
  CHECK(refusal("\"\xc0\xaf\"") == "invalid JSON at byte 101 (line 1, column 2): a string holds byte 0xc0, which is not UTF-8 there");
  CHECK(refusal("\"\xed\xa0\x80\"") == "invalid JSON at byte 101 (line 1, column 2): a string holds byte 0xed, which is not UTF-8 there");
  CHECK(refusal("\"\xf4\x90\x80\x80\"") == "invalid JSON at byte 101 (line 1, column 2): a string holds byte 0xf4, which is not UTF-8 there");
  CHECK(refusal("\"ab\xc3.\"") == "invalid JSON at byte 103 (line 1, column 4): a string holds byte 0xc3, which is not UTF-8 there");
  CHECK(refusal("\"\xe2\x82\"") == "invalid JSON at byte 101 (line 1, column 2): a string holds byte 0xe2, which is not UTF-8 there");
  CHECK(refusal(std::string("[1]\0", 4)) ==
        "invalid JSON at byte 103 (line 1, column 4): a NUL byte after the value (JSON never holds one; safetensors pads its header "
        "with spaces)");
  CHECK(refusal(R"({"a": {"b": 1, "b": 2}})") == "key 'b' appears twice in one JSON object");
  // The parts are kept apart too: the file, and the key repeated.
  auto context = [](std::string_view text) {
    try {
      parse(text);
    } catch (const graft::format_error& e) {
      return e.context();
    }
    return graft::error_context{.record = "no error"};
  };
  CHECK(context("[1,]").file == "f.json");
  CHECK(context(R"({"b": 1, "b": 2})").file == "f.json");
  CHECK(context(R"({"b": 1, "b": 2})").key == "b");
  CHECK(refusal(std::string(256, '[') + std::string(256, ']')) == "no error");
  CHECK(refusal(std::string(257, '[') + std::string(257, ']')) ==
        "invalid JSON at byte 356 (line 1, column 257): values nest more than 256 deep");
}

TEST_CASE("json: text written compactly or indented, read back the same by Python", "[json][python]") {
  auto j = json::object();
  j.append("name", "caf\xc3\xa9 \"q\" \\ \n\x01");
  j.append("ints", json::array_of(std::vector<std::int64_t>{0, -1, 9223372036854775807}));
  j.append("big", std::uint64_t{18446744073709551615u});
  j.append("reals", json::array_of(std::vector<double>{16.0, 0.1, 1e-7, 1e300, -0.5}));
  j.append("flags", json::array_of(std::vector<bool>{true, false}));
  j.append("none", nullptr);
  j.append("empty", json::object());
  j.append("list", json::array());
  CHECK(j.dump() ==
        R"({"name":"café \"q\" \\ \n\u0001","ints":[0,-1,9223372036854775807],"big":18446744073709551615,)"
        R"("reals":[16.0,0.1,1e-07,1e+300,-0.5],"flags":[true,false],"none":null,"empty":{},"list":[]})");
  CHECK(j.find("none")->dump(2) == "null");
  CHECK(json::array_of(std::vector<int>{1, 2}).dump(2) == "[\n  1,\n  2\n]");

  // Python's json module reads both forms to the same values, and writes its indented form as we do.
  graft::test::scratch_dir dir;
  auto compact = dir.file("compact.json"), indented = dir.file("indented.json");
  std::ofstream(compact, std::ios::binary) << j.dump();
  std::ofstream(indented, std::ios::binary) << j.dump(2);
  auto out = graft::test::run_python(fmt::format(R"(
import json
a = json.load(open('{}', encoding='utf-8'))
b = json.load(open('{}', encoding='utf-8'))
assert a == b, (a, b)
assert a['name'] == 'café "q" \\ \n\x01', a['name']
assert a['ints'] == [0, -1, 9223372036854775807] and a['big'] == 18446744073709551615
assert a['reals'] == [16.0, 0.1, 1e-7, 1e300, -0.5] and all(type(x) is float for x in a['reals'])
assert a['flags'] == [True, False] and a['none'] is None and a['empty'] == {{}} and a['list'] == []
print(json.dumps(a, indent=2, ensure_ascii=False) == open('{}', encoding='utf-8').read())
)",
                                                 compact, indented, indented));
  CHECK(out == "True\n");
  // And our reader reads back what we wrote.
  CHECK(parse(j.dump(2)).dump() == j.dump());
}
