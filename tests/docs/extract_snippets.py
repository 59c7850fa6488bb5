#!/usr/bin/env python3
"""Writes the C++ blocks of a Markdown page as one translation unit, so that the build compiles
what the page shows:  extract_snippets.py PAGE.md OUT.cpp [NAME]

The conventions (docs/testing.md, "Docs that compile"):
- A ```cpp block holds statements: it is compiled as the body of a function of its own.
  Its leading #include and `using namespace` lines go to the top of the unit.
- A ```cpp continued block holds statements that go on in the scope of the block before it
  (a walk-through in several steps).
- A ```cpp file block holds code at file scope (includes, types, functions, a main); the
  statement blocks after it on the same page see what it declares.
- A line holding only `...` (or `// ...`) stands for code the page leaves out, and is dropped.
- Every unit starts with tests/docs/prelude.hpp: graft, libtorch, fmt, graft's literals and
  the few names every page may use without declaring them (net, x, y, batches, ...).
Compiler messages point at the page's own lines (#line).
"""
import re
import sys


def blocks(text):
    """(first line number, kind, lines) for each ```cpp block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = re.match(r"^```cpp(\s.*)?$", lines[i])
        if m:
            words = (m.group(1) or "").split()
            kind = "file" if "file" in words else "continued" if "continued" in words else "statements"
            start = i + 2  # 1-based number of the block's first line
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if j == len(lines):
                raise SystemExit(f"{sys.argv[1]}:{i + 1}: a ```cpp block that never closes")
            yield start, kind, lines[i + 1:j]
            i = j
        i += 1


def main():
    page, out = sys.argv[1], sys.argv[2]
    name = re.sub(r"[^A-Za-z0-9]", "_", sys.argv[3] if len(sys.argv) > 3 else page)
    text = open(page, encoding="utf-8").read()
    hoisted, body = [], []
    open_function = False
    for n, (start, kind, lines) in enumerate(blocks(text)):
        kept = [(start + k, l) for k, l in enumerate(lines) if l.strip() not in ("...", "// ...")]
        if kind == "continued" and not open_function:
            raise SystemExit(f"{page}:{start - 1}: a ```cpp continued block must follow a statement block")
        if kind != "continued" and open_function:
            body.append("}")
            open_function = False
        if kind == "statements":
            while kept and (re.match(r"^\s*#include\b", kept[0][1]) or re.match(r"^\s*using namespace\b", kept[0][1])
                            or not kept[0][1].strip()):
                if kept[0][1].strip() and kept[0][1] not in hoisted:
                    hoisted.append(kept[0][1])
                kept.pop(0)
            body.append(f"[[maybe_unused]] static void {name}_block_{n}_line_{start}() {{")
            open_function = True
        expected = None
        for line_no, l in kept:
            if line_no != expected:
                body.append(f'#line {line_no} "{page}"')
            body.append(l)
            expected = line_no + 1
    if open_function:
        body.append("}")
    with open(out, "w", encoding="utf-8") as f:
        f.write(f"// The C++ blocks of {page}, made by tests/docs/extract_snippets.py: edit the page, not this file.\n")
        f.write('#include "prelude.hpp"\n')
        for h in hoisted:
            f.write(h + "\n")
        f.write("\n".join(body) + "\n")


if __name__ == "__main__":
    main()
