#!/usr/bin/env bash
# The demo: a local Kubernetes control plane and the three provider services, on loopback.
#
#   scripts/demo.sh           run until Ctrl-C
#   scripts/demo.sh --check   start everything, verify it answers, stop (non-interactive)
#
# The first run builds the Kubernetes binaries (~8 min) and the workspace (~5 min); later runs start
# in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=0
[ "${1:-}" = "--check" ] && CHECK=1
CACHE="${VK_CACHE:-$HOME/.cache/vk-rs}"
RUN="$(mktemp -d -t vk-demo-XXXXXX)"
step() { echo "==> $*" >&2; }

PIDS=()
cleanup() {
  step "stopping"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "installing prerequisites (first run builds Kubernetes 1.20 from Debian's source: ~8 minutes)"
scripts/setup.sh
step "building the workspace"
# All targets, so the features match `cargo test --workspace` and one build serves both.
cargo build --workspace --all-targets
TARGET="${CARGO_TARGET_DIR:-target}/debug"
GRPCURL="$CACHE/venv/bin/grpcurl"

step "starting the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)"
"$TARGET/vk-control-plane" --kubeconfig-out "$RUN/kubeconfig" >"$RUN/control-plane.out" 2>"$RUN/control-plane.log" &
PIDS+=($!)
for _ in $(seq 1 120); do
  grep -q '^ready' "$RUN/control-plane.out" 2>/dev/null && break
  kill -0 "${PIDS[0]}" 2>/dev/null || { cat "$RUN/control-plane.log" >&2; exit 1; }
  sleep 0.5
done
grep -q '^ready' "$RUN/control-plane.out" || { echo "control plane did not start" >&2; exit 1; }

# Preferred ports, unless taken (they lie in Linux's ephemeral range): then any free one.
port() {
  python3 - "$1" <<'PY'
import socket, sys
for candidate in (int(sys.argv[1]), 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", candidate))
        print(s.getsockname()[1])
        break
    except OSError:
        pass
    finally:
        s.close()
PY
}
declare -A PORTS=([fargate]=$(port 50051) [aci]=$(port 50052) [eci]=$(port 50053))
step "starting moto (the AWS emulator behind provider-fargate)"
"$TARGET/vk-moto" >"$RUN/moto.out" 2>"$RUN/moto.log" &
PIDS+=($!)
for _ in $(seq 1 120); do
  grep -q '^ready' "$RUN/moto.out" 2>/dev/null && break
  kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$RUN/moto.log" >&2; exit 1; }
  sleep 0.5
done
read -r _ MOTO_URL MOTO_CLUSTER MOTO_SUBNET MOTO_SG MOTO_LOGS <"$RUN/moto.out" \
  || { echo "moto did not start; log:" >&2; cat "$RUN/moto.log" >&2; exit 1; }

declare -A EXTRA=(
  [fargate]="--endpoint-url $MOTO_URL --region us-east-1 --cluster $MOTO_CLUSTER --subnets $MOTO_SUBNET --security-groups $MOTO_SG --log-group $MOTO_LOGS --execution-role-arn arn:aws:iam::123456789012:role/ecsTaskExecutionRole"
  [aci]="" [eci]=""
)
for p in fargate aci eci; do
  step "starting provider-$p on 127.0.0.1:${PORTS[$p]}"
  # shellcheck disable=SC2086 # EXTRA holds separate flags
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    "$TARGET/provider-$p" --listen "127.0.0.1:${PORTS[$p]}" ${EXTRA[$p]} 2>"$RUN/provider-$p.log" &
  PIDS+=($!)
done
for p in fargate aci eci; do
  for _ in $(seq 1 50); do
    "$GRPCURL" -plaintext "127.0.0.1:${PORTS[$p]}" list >/dev/null 2>&1 && break
    sleep 0.2
  done
  "$GRPCURL" -plaintext "127.0.0.1:${PORTS[$p]}" list | grep -q podprovider.v1.PodProvider \
    || { echo "provider-$p is not answering; log:" >&2; cat "$RUN/provider-$p.log" >&2; exit 1; }
done

KUBECTL="kubectl --kubeconfig=$RUN/kubeconfig"
cat <<MSG

The demo is running.

  Kubernetes API:   $KUBECTL get namespaces
  Providers (gRPC): $GRPCURL -plaintext 127.0.0.1:${PORTS[fargate]} list          # fargate
                    $GRPCURL -plaintext 127.0.0.1:${PORTS[aci]} describe podprovider.v1.PodProvider   # aci
                    $GRPCURL -plaintext 127.0.0.1:${PORTS[eci]} grpc.health.v1.Health/Check          # eci
  Logs:             $RUN/*.log

Virtual nodes (node-shim) join the demo as they are built. Stop with Ctrl-C.
MSG
$KUBECTL get namespaces

if [ "$CHECK" = 1 ]; then
  step "check passed"
  exit 0
fi
wait "${PIDS[0]}"
