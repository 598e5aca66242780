#!/usr/bin/env bash
# Long fuzz run of the property tests (CI runs 256 cases each):
#   spdy:      spdy/tests/fuzz.rs
#   node-shim: the `fuzz_*` proptest blocks in node-shim's modules (remotecommand, quantity,
#              handlers, resolve), selected by name
#   providers: each provider's `fuzz_any_pod_is_planned_or_refused` (arbitrary contract pods
#              from provider-common::arbitrary through the pod → cloud plan)
#
#   scripts/fuzz.sh                   200000 cases per property, both crates (the spdy session
#                                     property runs a quarter)
#   scripts/fuzz.sh 1000000           that many
#   scripts/fuzz.sh 100000 node-shim  one group only (spdy | node-shim | providers)
#
# A failing case is shrunk and saved under <crate>/proptest-regressions/ (commit it), then
# replayed first on every later run; add a named regression test for it next to the property.
# Env: CARGO_TARGET_DIR as usual; PROPTEST_* variables pass through to proptest.
set -euo pipefail
cd "$(dirname "$0")/.."
CASES="${1:-200000}"
ONLY="${2:-all}"
case "$ONLY" in all | spdy | node-shim | providers) ;; *) echo "fuzz: unknown crate $ONLY" >&2; exit 2 ;; esac
echo "fuzz: ${CASES} cases per property, release build, ${ONLY}" >&2
start=$(date +%s)
if [[ "$ONLY" == all || "$ONLY" == spdy ]]; then
    PROPTEST_CASES="$CASES" cargo test -p spdy --release --test fuzz -- --nocapture
fi
if [[ "$ONLY" == all || "$ONLY" == node-shim ]]; then
    PROPTEST_CASES="$CASES" cargo test -p node-shim --release --lib fuzz_ -- --nocapture
fi
if [[ "$ONLY" == all || "$ONLY" == providers ]]; then
    PROPTEST_CASES="$CASES" cargo test -p provider-aci -p provider-eci -p provider-fargate \
        --release --bins fuzz_ -- --nocapture
fi
echo "fuzz: done in $(( $(date +%s) - start ))s" >&2
