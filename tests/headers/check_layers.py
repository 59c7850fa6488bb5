#!/usr/bin/env python3
"""graft's headers form layers (docs/architecture.md); a header includes only its own layer and
the layers below it. A header that reaches up makes two folders depend on each other, and this
check fails naming the include.

    check_layers.py INCLUDE_DIR
"""
import pathlib
import re
import sys

# Each layer and the layers its headers may include (besides its own): the edges the headers
# use, and no more, so that a new edge is a decision made here and in docs/architecture.md.
BELOW = {
    "base": [],
    "walk": ["base"],
    "select": ["base", "walk"],
    "transforms": ["base", "walk", "select"],
    "optim": ["base", "walk", "select"],
    "io": ["base"],
    "state_dict": ["base", "walk", "select", "io"],
    "formats": ["base", "io", "state_dict"],
    "distributed": ["base", "select", "state_dict", "formats"],
    "lora": ["base", "walk", "select", "optim", "io", "state_dict", "formats"],
    "script": ["base"],
    "amp": ["base"],
    "train": ["base", "walk", "transforms", "optim", "state_dict", "formats", "amp"],
    "combine": ["base", "select", "io", "state_dict", "formats"],
    # graft.hpp; script.hpp, distributed.hpp, amp.hpp, train.hpp and combine.hpp are opt-in
    # (impl/src.hpp, which compiles every definition once, includes combine's).
    "all": ["base", "walk", "select", "transforms", "optim", "state_dict", "formats", "lora", "combine"],
}


def layer(rel):
    """The layer of a header, from its path under include/graft/."""
    parts = rel.split("/")
    if rel == "graft.hpp" or parts[0] == "impl":  # impl/src.hpp: every definition, compiled once
        return "all"
    if rel in ("error.hpp", "error-inl.hpp", "config.hpp") or parts[0] == "detail":
        return "base"
    name = parts[0][:-4] if len(parts) == 1 else parts[0]  # walk.hpp -> walk, walk/... -> walk
    if name not in BELOW:
        raise SystemExit(f"check_layers.py: header graft/{rel} is in no layer; add its folder to BELOW")
    return name


def main():
    root = pathlib.Path(sys.argv[1]) / "graft"
    bad, n = [], 0
    for path in sorted(root.rglob("*.hpp")):
        rel = path.relative_to(root).as_posix()
        mine = layer(rel)
        n += 1
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"\s*#\s*include\s*<graft/([^>]+)>", line)
            if not m:
                continue
            theirs = layer(m.group(1))
            if theirs != mine and theirs not in BELOW[mine]:
                bad.append(f"graft/{rel}:{lineno}: the {mine} layer includes <graft/{m.group(1)}> of the {theirs} layer above it")
    for b in bad:
        print(b)
    print(f"checked {n} headers: {len(bad)} includes reach up a layer")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
