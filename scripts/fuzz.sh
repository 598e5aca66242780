#!/usr/bin/env bash
# Long fuzz run of the property tests in spdy/tests/fuzz.rs (CI runs 256 cases each).
#
#   scripts/fuzz.sh              200000 cases per property (the session property runs a quarter)
#   scripts/fuzz.sh 1000000      that many
#
# A failing case is shrunk, saved to spdy/proptest-regressions/fuzz.txt (commit it) and replayed
# first on every later run; add a named regression test for it at the bottom of the fuzz file.
# Env: CARGO_TARGET_DIR as usual; PROPTEST_* variables pass through to proptest.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${1:-200000}"
echo "fuzz: ${CASES} cases per property, release build" >&2
start=$(date +%s)
PROPTEST_CASES="$CASES" cargo test -p spdy --release --test fuzz -- --nocapture
echo "fuzz: done in $(( $(date +%s) - start ))s" >&2
