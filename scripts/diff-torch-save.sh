#!/usr/bin/env bash
# Runs graft's torch.save differential test (tests/formats/test_torch_save_differential.cpp) with
# many random checkpoints, by hand:
#   scripts/diff-torch-save.sh [CASES] [SEED]
# CASES (default 2000) files are written by each of the build's torch and PyTorch 2.x
# (tests/formats/differential/make_cases.py); SEED defaults to a random one, printed so that a
# failure can be replayed: scripts/diff-torch-save.sh CASES SEED. Uses the test binary built
# already (build/default/tests/test_formats; GRAFT_TEST_FORMATS=path picks another, e.g. the
# torch2 preset's) and builds nothing. Exits non-zero if graft reads any case differently from
# torch.load(weights_only=True).
set -euo pipefail
GRAFT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CASES=${1:-2000}
SEED=${2:-$(( (RANDOM << 15 | RANDOM) ))}
BIN=${GRAFT_TEST_FORMATS:-$GRAFT_ROOT/build/default/tests/test_formats}
if [ ! -x "$BIN" ]; then
  echo "diff-torch-save: no test binary at $BIN; build the tests first (scripts/test.sh)" >&2
  exit 2
fi

echo "diff-torch-save: GRAFT_DIFF_SEED=$SEED GRAFT_DIFF_CASES=$CASES ($BIN)"
status=0
GRAFT_DIFF_SEED=$SEED GRAFT_DIFF_CASES=$CASES OMP_NUM_THREADS=1 "$BIN" "[differential]" --warn NoTests || status=$?  # NoTests: a binary built before the test
if [ "$status" -ne 0 ]; then
  echo "diff-torch-save: failed (exit $status); replay with: scripts/diff-torch-save.sh $CASES $SEED" >&2
fi
exit "$status"
