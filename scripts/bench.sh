#!/usr/bin/env bash
# Builds graft's benchmarks (Release) and runs them, or only those named:
#   scripts/bench.sh [bench_select bench_param_groups ...]
# bench/README.md says how each figure there was measured.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
graft_install_packages "${GRAFT_PACKAGES[@]}" "${GRAFT_TEST_PACKAGES[@]}" libbenchmark-dev
graft_python_env vision
cd "$GRAFT_ROOT"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(bench_select bench_param_groups bench_checkpoint bench_distributed bench_lora bench_script bench_combine)
cmake --preset release >/dev/null
cmake --build --preset release --target "${benches[@]}"
for b in "${benches[@]}"; do
  echo "graft: $b"
  OMP_NUM_THREADS=1 "build/release/bench/$b"
done
