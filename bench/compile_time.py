#!/usr/bin/env python3
"""What including graft costs a user's compile: time and peak memory of one translation unit.

    bench/compile_time.py [--torch-python PY] [--runs N] [--opt -O2]

Compiles the units in bench/compile/ (no precompiled header, the flags CMake gives a user of
graft::graft) in N rounds of one compile per unit, one at a time, after one untimed compile, and prints median
seconds, peak MiB and the ratio to the torch-only unit measured in the same run:

    torch_only    a freeze loop, two param groups, SGD and StepLR by hand; libtorch only
    include_only  the same, plus #include <graft/graft.hpp>
    without_io    graft's freeze, param groups and cosine schedule, through their own headers
    with_graft    the same plus read | strip_prefix | filter | merge of a Python checkpoint
    with_graft_compiled  with_graft in the separately compiled mode (linking graft::compiled)
    graft_compiled       graft::compiled itself: compiled once per build, not per unit
"""
import argparse
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
UNITS = ["torch_only", "include_only", "without_io", "with_graft", "with_graft_compiled", "graft_compiled"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--torch-python", default="", help="a Python whose torch holds the libtorch to use")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--opt", default="-O2")
    args = ap.parse_args()

    build = pathlib.Path(tempfile.mkdtemp(prefix="graft-compile-cost-"))
    cfg = ["cmake", "-S", str(HERE / "compile"), "-B", str(build), "-G", "Ninja",
           "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_CXX_FLAGS_RELEASE={args.opt}"]
    if args.torch_python:
        cfg.append(f"-DGRAFT_TORCH_PYTHON={args.torch_python}")
    subprocess.run(cfg, check=True, stdout=subprocess.DEVNULL)
    # keyed by target: with_graft.cpp is compiled twice, once per mode
    commands = {}
    for c in json.loads((build / "compile_commands.json").read_text()):
        argv = shlex.split(c["command"])
        output = argv[argv.index("-o") + 1]  # .../CMakeFiles/<target>.dir/<file>.o
        commands[output.split("CMakeFiles/", 1)[1].split(".dir/", 1)[0]] = c
    version = next((l.split("=", 1)[1] for l in (build / "CMakeCache.txt").read_text().splitlines()
                    if l.startswith("GRAFT_TORCH_VERSION:")), "?")

    # Round after round, every unit once per round: a slow spell of the machine then slows
    # every unit alike instead of skewing the one being compiled (the ratios moved by 15%
    # between runs that compiled each unit N times in a row).
    # One untimed compile first: the first compile in a while reads the compiler and every header
    # from disk and took a third longer (24.8 s against 18.6 s for torch_only), which a median
    # of two rounds would carry into the baseline.
    warm = commands["torch_only"]
    subprocess.run(shlex.split(warm["command"]), cwd=warm["directory"], check=True, capture_output=True)
    times = {unit: [] for unit in UNITS}
    mems = {unit: [] for unit in UNITS}
    for r in range(args.runs):
        for unit in UNITS:
            c = commands[unit]
            argv = shlex.split(c["command"])
            out = subprocess.run(["/usr/bin/time", "-f", "%e %M"] + argv, cwd=c["directory"],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            secs, kb = out.stderr.strip().splitlines()[-1].split()
            times[unit].append(float(secs))
            mems[unit].append(int(kb) / 1024)
            print(f"  round {r + 1}, {unit}: {float(secs):.1f} s, {int(kb) / 1024:.0f} MiB", file=sys.stderr)
    results = {unit: (statistics.median(times[unit]), max(mems[unit])) for unit in UNITS}

    base_t, base_m = results["torch_only"]
    print(f"\nlibtorch {version}, g++ {args.opt}, no precompiled header, median of {args.runs}\n")
    print("| unit | seconds | peak MiB | time / torch-only | memory / torch-only |")
    print("|---|---:|---:|---:|---:|")
    for unit in UNITS:
        t, m = results[unit]
        print(f"| {unit} | {t:.1f} | {m:.0f} | {t / base_t:.2f}x | {m / base_m:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
