#!/usr/bin/env bash
# A long soak (testkit's vk-soak): one control plane, the three clouds behind fault-injecting
# proxies, three providers and three shims; pod lifecycles from a seed while shims, providers,
# kube-apiserver and etcd are killed and restarted and a share of the cloud calls is throttled,
# failed, answered late or not answered at all; then a check that nothing leaked, nothing was
# duplicated, no pod phase went backwards and every pod is where its spec says.
#
# Usage: scripts/soak.sh [--seed N] [--lifecycles N] [--duration 30m] [--providers eci,aci,fargate]
#                        [--workers N] [--log-dir DIR] [--json FILE]
# Defaults here: 500 lifecycles, at most 45 minutes of driving, logs and the JSON report under
# $VK_SOAK_DIR (default /tmp/vk-soak-<seed>). Exits 1 when the check found something.
#
# Needs the Kubernetes binaries (scripts/k8s-build.sh) and moto (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

seed="${VK_SOAK_SEED:-$(date +%s)}"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    if [[ "${args[$i]}" == "--seed" ]]; then seed="${args[$((i + 1))]}"; fi
    if [[ "${args[$i]}" == --seed=* ]]; then seed="${args[$i]#--seed=}"; fi
done
dir="${VK_SOAK_DIR:-/tmp/vk-soak-$seed}"
mkdir -p "$dir"

# The soak runs the workspace's binaries from the same target directory as vk-soak.
cargo build --workspace --bins

target="${CARGO_TARGET_DIR:-target}"
echo "soak: seed $seed, logs in $dir" >&2
set +e
RUST_LOG="${RUST_LOG:-info,kube_client=warn,kube_runtime=warn}" \
    "$target/debug/vk-soak" --seed "$seed" --lifecycles 500 --duration 45m \
    --log-dir "$dir/logs" --json "$dir/report.json" "$@" 2> "$dir/vk-soak.log" | tee "$dir/summary.txt"
status=${PIPESTATUS[0]}
set -e
echo "soak: exit $status; report $dir/report.json, log $dir/vk-soak.log" >&2
exit "$status"
