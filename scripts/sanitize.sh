#!/usr/bin/env bash
# ThreadSanitizer over graft's multi-threaded code: the file-to-tensor copies that split a large
# load across threads, and the distributed tests (each rank a process, c10d over Gloo).
# AddressSanitizer and UndefinedBehaviorSanitizer run on every CI run instead: scripts/test.sh
# builds its libtorch 2.13 set (the torch2 preset) with them. See docs/testing.md.
#   scripts/sanitize.sh        # build/tsan, then the tests; ~10 minutes on 2 cores
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
graft_install_packages "${GRAFT_PACKAGES[@]}" "${GRAFT_TEST_PACKAGES[@]}"
graft_python_env vision
cd "$GRAFT_ROOT"
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target test_formats test_distributed
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
# The copies run on several threads only for loads over 8 MiB; these cases make such loads.
build/tsan/tests/test_formats "[merge]"
build/tsan/tests/test_distributed
echo "graft: ThreadSanitizer found nothing in the threaded copies and the distributed tests"
