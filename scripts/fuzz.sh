#!/usr/bin/env bash
# Fuzzes graft's checkpoint parsers with libFuzzer for a bounded time:
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# SECONDS (default 60) is per target; TARGETs default to all of tests/fuzz/targets.hpp's
# (torch_save torch_save_legacy safetensors safetensors_index zip pickle read). Installs what is missing (clang 16
# and its libFuzzer/sanitizer runtimes besides graft's own packages), builds build/fuzz with
# clang, seeds each target from tests/fuzz/corpus, tests/fuzz/regressions and files freshly
# written by PyTorch, then runs the targets one after another. Inputs that add coverage
# accumulate in build/fuzz/corpus/<target> across runs. Exits non-zero if any target crashed,
# naming the reproducer; copy it into tests/fuzz/regressions/ once the bug is fixed.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SECONDS_PER_TARGET=${1:-60}
shift $(( $# > 0 ? 1 : 0 ))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(torch_save torch_save_legacy safetensors safetensors_index zip pickle read)
CLANG=${GRAFT_FUZZ_CLANG:-clang++-16}
FUZZ_DIR="$GRAFT_ROOT/build/fuzz"
# /usr/bin/python3 first: another python3 earlier on PATH may lack torch.
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON=python3

GRAFT_PACKAGES+=(clang-16 libclang-rt-16-dev llvm-16)  # llvm-16: llvm-symbolizer for stacks
graft_install_packages

cd "$GRAFT_ROOT"
cmake -S tests/fuzz -B "$FUZZ_DIR" -G Ninja -DCMAKE_CXX_COMPILER="$CLANG" >/dev/null
cmake --build "$FUZZ_DIR" -j2 --target $(printf 'fuzz_%s ' "${TARGETS[@]}")

rm -rf "$FUZZ_DIR/seeds"
"$PYTHON" tests/fuzz/make_seeds.py "$FUZZ_DIR/seeds"

# Symbolized stacks; libtorch's own leaks are not graft's (see the suppression file).
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-/usr/lib/llvm-16/bin/llvm-symbolizer}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$GRAFT_ROOT/tests/fuzz/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}

failed=()
for t in "${TARGETS[@]}"; do
  corpus="$FUZZ_DIR/corpus/$t" artifacts="$FUZZ_DIR/artifacts/$t" log="$FUZZ_DIR/logs/$t.log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  seeds=()
  for d in "tests/fuzz/corpus/$t" "$FUZZ_DIR/seeds/$t" tests/fuzz/regressions; do
    [ -d "$d" ] && seeds+=("$d")
  done
  echo "graft: fuzzing $t for ${SECONDS_PER_TARGET}s (log: $log)"
  # The first folder receives new inputs; the others only seed. A crash stops the target and
  # leaves its input under $artifacts.
  rc=0
  "$FUZZ_DIR/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" "${seeds[@]}" >"$log" 2>&1 || rc=$?
  grep -E '^stat::number_of_executed_units|^stat::peak_rss_mb' "$log" | sed "s/^/  /" || true
  if [ $rc -ne 0 ]; then
    failed+=("$t")
    echo "graft: fuzz_$t FAILED (exit $rc); the end of its log:"
    grep -n -E 'ERROR:|BUG|runtime error|terminate called|what\(\):' "$log" | head -5 | sed "s/^/  /"
    tail -n 40 "$log" | sed "s/^/  | /"
    for f in "$artifacts"/*; do
      [ -e "$f" ] && echo "graft: reproducer: $f (run: $FUZZ_DIR/fuzz_$t $f)"
    done
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "graft: fuzzing found crashes in: ${failed[*]}"
  exit 1
fi
echo "graft: no crashes in ${TARGETS[*]} (${SECONDS_PER_TARGET}s each)"
