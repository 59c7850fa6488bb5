#!/usr/bin/env python3
"""Every graft header includes the standard, fmt and range headers of what it uses.

libtorch brings most of the standard library along, so a header that forgets <memory> or
<algorithm> still compiles against it today, and breaks when a libtorch release includes less.
The compile check (tests/headers/CMakeLists.txt) cannot see that; this table can: a header that
names one of these entities must include the header that declares it.

    check_includes.py INCLUDE_DIR
"""
import pathlib
import re
import sys

# entity pattern (a regex on the code with comments and strings removed) -> required header
TABLE = [
    (r"std::(unique_ptr|shared_ptr|weak_ptr|make_shared|make_unique|enable_shared_from_this)\b", "memory"),
    (r"std::(optional|nullopt)\b", "optional"),
    (r"std::(variant|visit|get_if|holds_alternative|monostate)\b", "variant"),
    (r"std::vector\b", "vector"),
    (r"std::(string|to_string|stoull|stoll|stoi)\b", "string"),
    (r"std::string_view\b", "string_view"),
    (r"std::(map|multimap)\b", "map"),
    (r"std::(set|multiset)\b", "set"),
    (r"std::unordered_map\b", "unordered_map"),
    (r"std::unordered_set\b", "unordered_set"),
    (r"std::deque\b", "deque"),
    (r"std::array\b", "array"),
    (r"std::span\b", "span"),
    (r"std::tuple\b|std::make_tuple\b|std::apply\b", "tuple"),
    (r"std::(function|invoke|reference_wrapper|ref|cref|hash|less|greater|identity)\b", "functional"),
    (r"std::(sort|stable_sort|find|find_if|any_of|all_of|none_of|min|max|clamp|reverse|copy|fill|"
     r"count|count_if|equal|lower_bound|upper_bound|unique|remove_if|transform|max_element|"
     r"min_element|minmax)\b|std::ranges::(sort|stable_sort|find|find_if|any_of|all_of|none_of|"
     r"min|max|copy|fill|count|count_if|equal|lower_bound|upper_bound|unique|remove_if|"
     r"transform|max_element|min_element|reverse|binary_search|includes|mismatch)\b", "algorithm"),
    (r"std::(accumulate|iota|gcd|lcm|reduce)\b", "numeric"),
    (r"std::(views|ranges::(views|subrange|range|input_range|forward_range|view_base|"
     r"iterator_t|range_value_t|begin|end|size|empty|data|enable_view))\b|std::views\b", "ranges"),
    (r"std::(mutex|lock_guard|scoped_lock|unique_lock|once_flag|call_once)\b", "mutex"),
    (r"std::(thread|jthread)\b", "thread"),
    (r"std::(atomic|atomic_flag)\b", "atomic"),
    (r"std::chrono\b", "chrono"),
    (r"std::filesystem\b", "filesystem"),
    (r"std::(runtime_error|logic_error|invalid_argument|out_of_range|range_error|overflow_error)\b", "stdexcept"),
    (r"std::(exception_ptr|current_exception|rethrow_exception|make_exception_ptr|terminate)\b", "exception"),
    (r"std::numeric_limits\b", "limits"),
    (r"std::(memcpy|memcmp|memset|memmove|strlen|strerror)\b", "cstring"),
    (r"std::(u?int(8|16|32|64)_t|uintptr_t|intptr_t)\b", "cstdint"),
    (r"std::(size_t|ptrdiff_t|byte|nullptr_t)\b", "cstddef"),
    (r"std::(is_same_v|is_same|decay_t|remove_cvref_t|enable_if_t|conditional_t|is_base_of_v|"
     r"is_convertible_v|is_integral_v|is_floating_point_v|is_enum_v|underlying_type_t|"
     r"invoke_result_t|is_invocable_v|integral_constant|true_type|false_type|"
     r"is_trivially_copyable_v|is_constant_evaluated)\b", "type_traits"),
    (r"std::(move|forward|exchange|pair|make_pair|swap|in_place|declval|as_const|unreachable)\b", "utility"),
    (r"std::(ifstream|ofstream|fstream)\b", "fstream"),
    (r"std::(ostringstream|istringstream|stringstream)\b", "sstream"),
    (r"std::(sqrt|pow|exp|log|cos|sin|floor|ceil|round|abs|fabs|isnan|isinf|isfinite)\b", "cmath"),
    (r"std::(input_iterator_tag|forward_iterator_tag|default_sentinel_t|default_sentinel|"
     r"back_inserter|next|prev|distance|advance|iterator_traits)\b", "iterator"),
    (r"std::(condition_variable)\b", "condition_variable"),
    (r"std::(errc|error_code|system_error|system_category|generic_category)\b", "system_error"),
    (r"\bfmt::(join)\b", "fmt/ranges.h"),
    (r"\bfmt::(format|format_to|print|formatter|format_context|format_parse_context|"
     r"format_string|memory_buffer|to_string)\b", "fmt/format.h"),
]

# Headers that also declare an entity, so either satisfies the rule.
ALSO = {
    "string": {"string_view"},       # never the other way round
    "fmt/format.h": {"fmt/ranges.h", "fmt/core.h"},
    "iterator": {"ranges", "string", "vector", "array"},  # those must provide std::begin & co
    "cstddef": {"cstdint", "cstring", "cstdio", "cstdlib", "new"},
    "utility": {"tuple", "map", "unordered_map", "algorithm"},  # pair via these in the standard
    "exception": {"stdexcept"},
    "functional": {"memory"},  # std::hash is declared by every container header; keep it simple
    "string_view": {"string"},
}


def strip(code: str) -> str:
    code = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
    code = re.sub(r"//[^\n]*", " ", code)
    code = re.sub(r'R"([^(]*)\(.*?\)\1"', '""', code, flags=re.S)
    code = re.sub(r'"(\\.|[^"\\\n])*"', '""', code)
    return code


def main() -> int:
    root = pathlib.Path(sys.argv[1])
    problems = []
    headers = sorted(root.rglob("*.hpp"))
    for path in headers:
        text = path.read_text()
        included = set(re.findall(r"^#include <([^>]+)>", text, flags=re.M))
        code = strip(text)
        for pattern, header in TABLE:
            m = re.search(pattern, code)
            if not m:
                continue
            if header in included or included & ALSO.get(header, set()):
                continue
            line = code.count("\n", 0, m.start()) + 1
            problems.append(f"{path.relative_to(root)}:{line}: uses {m.group(0)} without #include <{header}>")
    for p in problems:
        print(p)
    print(f"checked {len(headers)} headers: {len(problems)} missing includes")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
