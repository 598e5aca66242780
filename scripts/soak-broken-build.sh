#!/usr/bin/env bash
# Shows that the soak's checker can fail: builds provider-eci with a deliberate bug (its create
# sends no ClientToken, so a create retried after a lost or late answer makes a second container
# group), runs a short ECI-only soak against that build and
# expects the check to report duplicates. Exits 0 when the soak failed as it should, 1 when the
# broken build passed (the checker missed the bug).
#
# Usage: scripts/soak-broken-build.sh [--seed N]
# The broken provider is built from a temporary git worktree of HEAD into
# $VK_BROKEN_TARGET (default: $CARGO_TARGET_DIR-broken, or target-broken), so the checkout and its
# build stay untouched. The soak's other binaries come from this checkout's debug build.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

seed=20261203
if [[ "${1:-}" == "--seed" ]]; then seed="$2"; fi

target="${CARGO_TARGET_DIR:-$root/target}"
broken_target="${VK_BROKEN_TARGET:-$target-broken}"
work="$(mktemp -d /tmp/vk-broken-XXXXXX)"
wt="$work/tree"
cleanup() {
    git -C "$root" worktree remove --force "$wt" 2>/dev/null || true
    rm -rf "$work/bin"
}
trap cleanup EXIT

cargo build --workspace --bins
git -C "$root" worktree add --detach "$wt" HEAD >/dev/null

# The bug: no ClientToken, so ECI cannot tell a retried create from a new one. (A token that
# differs per CreatePod call is not enough: the provider's own retries of one call reuse the
# request, and only a whole failed CreatePod would then make a second group; a soak of that build
# passed, 75 groups, none duplicated.)
mapping="$wt/provider-eci/src/plan.rs"
python3 - "$mapping" <<'EOF'
import sys
path = sys.argv[1]
src = open(path).read()
good = 'req.insert("ClientToken".into(), json!(client_token(pod_ref)));'
if good not in src:
    sys.exit(f"{path}: the ClientToken line moved; update this script")
open(path, "w").write(src.replace(good, "let _ = client_token(pod_ref);"))
EOF
CARGO_TARGET_DIR="$broken_target" cargo build --manifest-path "$wt/Cargo.toml" -p provider-eci

# vk-soak runs the binaries next to itself: this build's, with the broken provider-eci.
mkdir -p "$work/bin"
for b in vk-soak node-shim eci-emulator; do cp "$target/debug/$b" "$work/bin/"; done
cp "$broken_target/debug/provider-eci" "$work/bin/"

echo "soak-broken-build: seed $seed, logs in $work" >&2
set +e
RUST_LOG="${RUST_LOG:-info,kube_client=warn,kube_runtime=warn}" \
    "$work/bin/vk-soak" --seed "$seed" --providers eci --lifecycles 60 --duration 90s \
    --workers 4 --settle-timeout 90s --log-dir "$work/logs" --json "$work/report.json" \
    2> "$work/vk-soak.log" | tee "$work/summary.txt"
status=${PIPESTATUS[0]}
set -e
duplicated="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["counts"]["duplicated"])' "$work/report.json" 2>/dev/null || echo "?")"
if [[ "$status" == 1 && "$duplicated" =~ ^[1-9][0-9]*$ ]]; then
    echo "soak-broken-build: the checker failed the broken build ($duplicated duplicated): good" >&2
    exit 0
fi
echo "soak-broken-build: the broken build was not caught (exit $status, duplicated $duplicated); logs in $work" >&2
exit 1
