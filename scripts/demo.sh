#!/usr/bin/env bash
# The demo: a local Kubernetes control plane, the three cloud emulators (moto for AWS, the ACI and
# ECI emulators), the three providers against them, and three node-shims = three virtual nodes.
# It applies the acceptance manifests (examples/acceptance/) and a Fargate example, shows the pods
# Running on the virtual nodes and their logs.
#
#   scripts/demo.sh           run until Ctrl-C
#   scripts/demo.sh --check   the same, non-interactively: assert nodes, pods and logs, clean up, stop
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
fail() {
  echo "demo: $*" >&2
  for f in "$RUN"/*.log; do echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; done
  exit 1
}

PIDS=()
cleanup() {
  step "stopping"
  # Shims first (they stop pods' status writes), then providers, emulators, control plane.
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[$i]}" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "installing prerequisites (first run builds Kubernetes 1.20 from Debian's source: ~8 minutes)"
scripts/setup.sh
step "building the workspace (first run: several minutes; cargo shows progress)"
# All targets, so the features match `cargo test --workspace` and one build serves both.
cargo build --workspace --all-targets
TARGET="${CARGO_TARGET_DIR:-target}/debug"
GRPCURL="$CACHE/venv/bin/grpcurl"
KUBECTL=(kubectl --kubeconfig="$RUN/kubeconfig")

# A free loopback port, the preferred one when it is free.
port() {
  python3 - "${1:-0}" <<'PY'
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
# Starts a background process logging to $RUN/<name>.log.
start() {
  local name="$1"
  shift
  "$@" >"$RUN/$name.out" 2>"$RUN/$name.log" &
  PIDS+=($!)
}
# Waits until `cmd` succeeds (up to $1 seconds), else fails with $2.
wait_for() {
  local seconds="$1" what="$2"
  shift 2
  for _ in $(seq 1 $((seconds * 5))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  fail "timed out waiting for $what"
}

step "starting the control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)"
start control-plane "$TARGET/vk-control-plane" --kubeconfig-out "$RUN/kubeconfig"
wait_for 60 "the control plane" grep -q '^ready' "$RUN/control-plane.out"
# The cluster CA, which also signs the API server's kubelet client certificate: the shims trust it.
"${KUBECTL[@]}" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' \
  | base64 -d >"$RUN/ca.crt"

step "starting the cloud emulators: moto (AWS ECS), aci-emulator (Azure), eci-emulator (Alibaba Cloud)"
start moto "$TARGET/vk-moto"
ACI_URL="http://127.0.0.1:$(port 8081)"
ECI_URL="http://127.0.0.1:$(port 8082)"
start aci-emulator "$TARGET/aci-emulator" --listen "${ACI_URL#http://}"
start eci-emulator "$TARGET/eci-emulator" --listen "${ECI_URL#http://}"
wait_for 60 "moto" grep -q '^ready' "$RUN/moto.out"
read -r _ MOTO_URL MOTO_CLUSTER MOTO_SUBNET MOTO_SG MOTO_LOGS <"$RUN/moto.out"
wait_for 30 "aci-emulator" curl -sf "$ACI_URL/_emulator/health"
wait_for 30 "eci-emulator" curl -sf "$ECI_URL/_emulator/health"

declare -A PORTS=([fargate]=$(port 50051) [aci]=$(port 50052) [eci]=$(port 50053))
step "starting provider-fargate, provider-aci and provider-eci against them"
start provider-fargate env AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
  "$TARGET/provider-fargate" --listen "127.0.0.1:${PORTS[fargate]}" --endpoint-url "$MOTO_URL" \
  --region us-east-1 --cluster "$MOTO_CLUSTER" --subnets "$MOTO_SUBNET" --security-groups "$MOTO_SG" \
  --log-group "$MOTO_LOGS" --execution-role-arn arn:aws:iam::123456789012:role/ecsTaskExecutionRole \
  --status-interval-seconds 1
# The emulators' default credentials (see emulators/*/README.md).
start provider-aci env AZURE_TENANT_ID=00000000-0000-0000-0000-0000000000aa AZURE_CLIENT_ID=vk-client \
  AZURE_CLIENT_SECRET=vk-client-secret \
  "$TARGET/provider-aci" --listen "127.0.0.1:${PORTS[aci]}" \
  --subscription-id 00000000-0000-0000-0000-000000000001 --resource-group vk-rg --location westeurope \
  --arm-endpoint "$ACI_URL" --authority-host "$ACI_URL" --status-interval-seconds 1 \
  --subnet-ids /subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/vk-rg/providers/Microsoft.Network/virtualNetworks/vk-vnet/subnets/aci
start provider-eci env ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI5tEmulatorKey0001 \
  ALIBABA_CLOUD_ACCESS_KEY_SECRET=EmulatorSecret0001EmulatorSecret \
  "$TARGET/provider-eci" --listen "127.0.0.1:${PORTS[eci]}" --region cn-hangzhou --endpoint "$ECI_URL" \
  --vswitch-id vsw-emulator0001 --security-group-id sg-emulator0001 --zone-id cn-hangzhou-h \
  --status-interval-seconds 1
for p in fargate aci eci; do
  wait_for 60 "provider-$p" "$GRPCURL" -plaintext -d '{"service":"podprovider.v1.PodProvider"}' \
    "127.0.0.1:${PORTS[$p]}" grpc.health.v1.Health/Check
done

# Taints as in the walk-throughs: ECI's key is alibabacloud.com/eci; ACI's nodes carry
# virtual-kubelet.io/provider plus azure.com/aci; the Fargate node has its own extra taint, so the
# ACI manifests (which tolerate any virtual-kubelet.io/provider) stay on the ACI node.
declare -A SHIM_ARGS=(
  [fargate]="--extra-taint=eks.amazonaws.com/compute-type=fargate:NoSchedule"
  [aci]="--extra-taint=azure.com/aci:NoSchedule"
  [eci]="--taint-key=alibabacloud.com/eci"
)
for p in fargate aci eci; do
  step "starting node-shim for virtual node vk-$p"
  # shellcheck disable=SC2086 # SHIM_ARGS holds separate flags
  start "shim-$p" "$TARGET/node-shim" --node-name "vk-$p" --kubeconfig "$RUN/kubeconfig" \
    --provider-endpoint "http://127.0.0.1:${PORTS[$p]}" --kubelet-port "$(port)" \
    --metrics-address "127.0.0.1:$(port)" --client-ca-file "$RUN/ca.crt" --node-label "vk-rs.io/cloud=$p" ${SHIM_ARGS[$p]}
done

has_csr() { "${KUBECTL[@]}" get csr -o name | grep -q "csr-vk-$1-"; }
three_ready_agents() {
  [ "$("${KUBECTL[@]}" get nodes --no-headers 2>/dev/null | grep -c ' Ready  *agent ')" = 3 ]
}
no_pods() { [ -z "$("${KUBECTL[@]}" get pods --no-headers 2>/dev/null)" ]; }
no_groups() {
  curl -sf "$1/_emulator/stats" | python3 -c 'import json, sys; sys.exit(json.load(sys.stdin)["live"] != 0)'
}
no_tasks() {
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$CACHE/venv/bin/python" -c '
import sys, boto3
ecs = boto3.client("ecs", endpoint_url=sys.argv[1], region_name="us-east-1")
sys.exit(len(ecs.list_tasks(cluster=sys.argv[2], desiredStatus="RUNNING")["taskArns"]) != 0)' \
    "$MOTO_URL" "$MOTO_CLUSTER"
}

step "approving the nodes' kubelet serving certificates (what a cluster's CSR approver does)"
for p in fargate aci eci; do
  wait_for 60 "the serving CSR of vk-$p" has_csr "$p"
  csr="$("${KUBECTL[@]}" get csr -o name | grep "csr-vk-$p-" | head -n 1)"
  "${KUBECTL[@]}" certificate approve "${csr#*/}" >/dev/null
done
wait_for 60 "three Ready nodes with role agent" three_ready_agents
"${KUBECTL[@]}" get nodes -o wide

step "applying the acceptance manifests (examples/acceptance/) and a Fargate example (examples/demo/)"
for f in examples/acceptance/*.yaml examples/demo/*.yaml; do
  "${KUBECTL[@]}" apply -f "$f"
done
step "waiting for the pods to run on the virtual nodes"
"${KUBECTL[@]}" wait --for=condition=Ready pod --all --timeout=180s >/dev/null \
  || { "${KUBECTL[@]}" get pods -o wide; fail "pods did not become Ready"; }
"${KUBECTL[@]}" get pods -o wide

# Where the walk-throughs say each pod belongs.
node_of() { "${KUBECTL[@]}" get pods -l "$1" -o jsonpath='{.items[*].spec.nodeName}'; }
expect_on() {
  local selector="$1" node="$2" nodes
  nodes="$(node_of "$selector")"
  [ -n "$nodes" ] || fail "no pod with $selector"
  for n in $nodes; do [ "$n" = "$node" ] || fail "a $selector pod runs on $n, not $node"; done
}
expect_on app=aci-helloworld vk-aci
expect_on app=aks-sample vk-aci
expect_on app=fargate-hello vk-fargate
[ "$("${KUBECTL[@]}" get pod mypod -o jsonpath='{.spec.nodeName}')" = vk-eci ] \
  || fail "mypod (eci-nginx-pod.yaml) is not on vk-eci"
# provider-aci runs in a VNet subnet, as AKS virtual nodes do: every ACI pod has an IP.
for ip in $("${KUBECTL[@]}" get pods -l 'app in (aci-helloworld,aks-sample)' \
  -o jsonpath='{range .items[*]}{.status.podIP}{"-"}{" "}{end}'); do
  [ "$ip" != "-" ] || fail "an ACI pod has no pod IP"
done

# The command the demo prints for trying a provider answers with its pods (an empty node name
# lists every node's pods).
"$GRPCURL" -plaintext "127.0.0.1:${PORTS[aci]}" podprovider.v1.PodProvider/ListPods | grep -q '"aks-sample-' \
  || fail "grpcurl ListPods on provider-aci does not list the aks-sample pods"

step "logs, through the API server and each node's kubelet API"
for pod in mypod "$("${KUBECTL[@]}" get pods -l app=aks-sample -o name | head -n 1)"; do
  echo "--- kubectl logs $pod" >&2
  logs="$("${KUBECTL[@]}" logs "$pod")"
  echo "$logs" | head -n 5
  echo "$logs" | grep -q 'Emulated container' || fail "kubectl logs $pod did not return the emulator's log lines"
done

# moto runs no containers, so nothing writes the Fargate pod's CloudWatch log stream: write what
# the awslogs driver would (stream <prefix>/<container>/<task id>), then read it back through
# kubectl logs -> API server -> the shim's kubelet API -> provider-fargate -> CloudWatch Logs.
fargate_pod="$("${KUBECTL[@]}" get pods -l app=fargate-hello -o jsonpath='{.items[0].metadata.name}')"
task_arn="$("$GRPCURL" -plaintext -d '{"nodeName":"vk-fargate"}' "127.0.0.1:${PORTS[fargate]}" \
  podprovider.v1.PodProvider/ListPods | python3 -c '
import json, sys
pods = json.load(sys.stdin).get("pods", [])
print(next(p.get("cloudId", "") for p in pods if p["podRef"]["name"] == sys.argv[1]))' "$fargate_pod")"
[ -n "$task_arn" ] || fail "provider-fargate does not list $fargate_pod"
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$CACHE/venv/bin/python" - "$MOTO_URL" \
  "$MOTO_LOGS" "vk/hello/${task_arn##*/}" <<'PY'
import sys, time, boto3
endpoint, group, stream = sys.argv[1:4]
logs = boto3.client("logs", endpoint_url=endpoint, region_name="us-east-1")
logs.create_log_stream(logGroupName=group, logStreamName=stream)
now = int(time.time() * 1000)
logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
    {"timestamp": now - 2000, "message": "nginx: start worker processes (written to moto as awslogs would)"},
    {"timestamp": now - 1000, "message": "GET / HTTP/1.1 200"},
])
PY
echo "--- kubectl logs pod/$fargate_pod" >&2
logs="$("${KUBECTL[@]}" logs "$fargate_pod")"
echo "$logs"
echo "$logs" | grep -q 'start worker processes' || fail "kubectl logs $fargate_pod did not return its CloudWatch log lines"

cat <<MSG

The demo is running: three virtual nodes (vk-fargate, vk-aci, vk-eci) with pods on them.

  kubectl:          ${KUBECTL[*]} get nodes,pods -o wide
  logs:             ${KUBECTL[*]} logs mypod
  scale:            ${KUBECTL[*]} scale deployment aks-sample --replicas=20
  providers (gRPC): $GRPCURL -plaintext 127.0.0.1:${PORTS[aci]} podprovider.v1.PodProvider/ListPods
  emulator state:   curl $ACI_URL/_emulator/stats ; curl $ECI_URL/_emulator/stats
  process logs:     $RUN/*.log

Stop with Ctrl-C: every process stops and $RUN is removed.
MSG

if [ "$CHECK" = 1 ]; then
  step "check: deleting everything; the clouds must end up empty"
  for f in examples/acceptance/*.yaml examples/demo/*.yaml; do
    "${KUBECTL[@]}" delete -f "$f" --wait=false >/dev/null
  done
  wait_for 120 "all pods gone" no_pods
  wait_for 60 "no ACI container group left" no_groups "$ACI_URL"
  wait_for 60 "no ECI container group left" no_groups "$ECI_URL"
  wait_for 60 "no Fargate task left running" no_tasks
  step "check passed"
  exit 0
fi
wait "${PIDS[0]}"
