#!/usr/bin/env bash
# Installs what is missing, then builds and runs graft's tests against two libtorch releases:
#   default: Debian's libtorch 1.13, every test;
#   torch2:  libtorch 2.13 from the PyTorch wheel, the core set (GRAFT_TEST_SET=core), under
#            AddressSanitizer and UndefinedBehaviorSanitizer.
# Arguments go to both ctest runs.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
graft_install_packages "${GRAFT_PACKAGES[@]}" "${GRAFT_TEST_PACKAGES[@]}"
graft_python_env vision
graft_python_env torch2

summary=()
# The README's first command, scripts/demo.sh, installs only GRAFT_PACKAGES and builds the
# flagship tutorial alone: build it the same way, and check that every system header it
# includes comes from that list (CI has every list installed, so only this check can see one
# missing); the 1.13 test build is checked against both lists below.
start=$SECONDS
cd "$GRAFT_ROOT"
cmake --preset demo >/dev/null
cmake --build --preset demo --target 05_transfer_fashion_mnist
bash scripts/check-packages.sh build/demo GRAFT_PACKAGES
summary+=("demo build and its package check: $((SECONDS - start)) s")
for preset in default torch2; do
  start=$SECONDS
  graft_build "$preset"
  # The 2.13 build's headers come from the wheel, outside Debian's packages.
  [ "$preset" = default ] && bash "$GRAFT_ROOT/scripts/check-packages.sh" build/default GRAFT_PACKAGES GRAFT_TEST_PACKAGES
  built=$((SECONDS - start))
  cd "$GRAFT_ROOT"
  log="build/$preset/ctest-summary.log"
  rc=0
  ctest --preset "$preset" "$@" | tee "$log" || rc=$?
  counted=$(grep -E "tests passed, [0-9]+ tests failed out of [0-9]+" "$log" | tail -1 || true)
  torch=$(grep -m1 "^GRAFT_TORCH_VERSION:" "build/$preset/CMakeCache.txt" | cut -d= -f2 || true)
  summary+=("libtorch ${torch:-?} ($preset): ${counted:-no test summary} (build ${built} s, tests $((SECONDS - start - built)) s)")
  [ $rc -eq 0 ] || { printf 'graft: %s\n' "${summary[@]}"; exit $rc; }
done
printf 'graft: %s\n' "${summary[@]}"
