#!/usr/bin/env bash
# ThreadSanitizer over graft's multi-threaded code: the file-to-tensor copies that split a large
# load across threads (io/detail/file_copy.hpp), through the merge tests that make such loads.
# AddressSanitizer and UndefinedBehaviorSanitizer run on every CI run instead: scripts/test.sh
# builds its libtorch 2.13 set (the torch2 preset) with them. See docs/testing.md, which also
# says why the distributed tests are not run here.
#   scripts/sanitize.sh        # build/tsan, then the tests; ~5 minutes on 2 cores
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
graft_install_packages "${GRAFT_PACKAGES[@]}" "${GRAFT_TEST_PACKAGES[@]}"
graft_python_env vision
cd "$GRAFT_ROOT"
cmake --preset tsan >/dev/null
cmake --build --preset tsan --target test_formats
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
build/tsan/tests/test_formats "[merge]"
echo "graft: ThreadSanitizer found nothing in the threaded file copies"
