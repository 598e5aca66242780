#!/usr/bin/env bash
# The demo: a local Kubernetes control plane, the three cloud emulators (moto for AWS, the ACI and
# ECI emulators), the three providers against them, and three node-shims = three virtual nodes.
# It applies the acceptance manifests (examples/acceptance/) and a Fargate example, shows the pods
# Running on the virtual nodes and their logs.
#
#   scripts/demo.sh               run until Ctrl-C
#   scripts/demo.sh --check       the same, non-interactively: assert nodes, pods and logs, clean up, stop
#   scripts/demo.sh --in-cluster  the same through the chart, as users install it: the images built
#                                 here (scripts/images.sh) run on a real kubelet node (containerd +
#                                 runc, needs root), one `helm install` per virtual node; with
#                                 --check, `helm uninstall` drains them and no Node is left
#
# The first run builds the Kubernetes binaries (~8 min) and the workspace (~5 min); later runs start
# in seconds (--in-cluster: the release images, ~7 min warm, ~15 min cold).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK=0
IN_CLUSTER=0
for arg in "$@"; do
  case "$arg" in
    --check) CHECK=1 ;;
    --in-cluster) IN_CLUSTER=1 ;;
    *) echo "usage: $0 [--check] [--in-cluster]" >&2; exit 2 ;;
  esac
done
CACHE="${VK_CACHE:-$HOME/.cache/vk-rs}"
RUN="$(mktemp -d -t vk-demo-XXXXXX)"
step() { echo "==> $*" >&2; }
fail() {
  echo "demo: $*" >&2
  for f in "$RUN"/*.log; do echo "--- tail of $f" >&2; tail -n 15 "$f" >&2; done
  if [ "$IN_CLUSTER" = 1 ] && [ -n "${KUBECTL+x}" ]; then
    "${KUBECTL[@]}" -n vk-system get pods -o wide >&2 || true
    "${KUBECTL[@]}" -n vk-system logs -l app.kubernetes.io/name=virtual-node --all-containers \
      --prefix --tail=15 >&2 || true
  fi
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
HELM=("$CACHE/helm/helm" --kubeconfig="$RUN/kubeconfig")
NODE_IMAGES=()
if [ "$IN_CLUSTER" = 1 ]; then
  step "building the images (release binaries on a Debian root filesystem: scripts/images.sh)"
  # The images' own checks run in CI (scripts/test.sh); the demo only needs them built.
  VK_IMAGES_SKIP_NODE_CHECK=1 scripts/images.sh
  NODE_IMAGES=(--kubelet-node-images node-shim,provider-fargate,provider-aci,provider-eci)
fi

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
[ "$IN_CLUSTER" = 1 ] && step "and a real kubelet node (containerd + runc) with the images imported"
start control-plane "$TARGET/vk-control-plane" --kubeconfig-out "$RUN/kubeconfig" "${NODE_IMAGES[@]}"
wait_for 120 "the control plane" grep -q '^ready' "$RUN/control-plane.out"
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

# The chart, one release per virtual node, as users install it; the pods share the node's network
# (no pod network or kube-proxy here), reach the API server and the emulators on loopback, and use
# the images imported into the node (pullPolicy Never).
install_chart() {
  local p="$1" server port
  server="$("${KUBECTL[@]}" config view --raw -o jsonpath='{.clusters[0].cluster.server}')"
  port="${server##*:}"
  local -a common=(
    --set "provider=$p,nodeName=vk-$p,clusterId=demo,hostNetwork=true"
    --set "apiServer.host=127.0.0.1,apiServer.port=$port"
    --set "image.registry=docker.io/vk-rs,image.pullPolicy=Never"
    --set "kubelet.port=$(port),metrics.shimPort=$(port),metrics.providerPort=$(port)"
    --set "credentials.existingSecret=$p-credentials"
    --set-json "nodeLabels={\"vk-rs.io/cloud\":\"$p\"}"
    --set-json "nodeSelector={\"kubernetes.io/hostname\":\"$KUBELET_NODE\"}"
    --set "providerConfig.$p.status-interval-seconds=1"
  )
  case "$p" in
    fargate) common+=(--set-json 'extraTaints=["eks.amazonaws.com/compute-type=fargate:NoSchedule"]'
      --set-string "providerConfig.fargate.endpoint-url=$MOTO_URL,providerConfig.fargate.region=us-east-1"
      --set-string "providerConfig.fargate.cluster=$MOTO_CLUSTER,providerConfig.fargate.subnets=$MOTO_SUBNET"
      --set-string "providerConfig.fargate.security-groups=$MOTO_SG,providerConfig.fargate.log-group=$MOTO_LOGS"
      --set-string "providerConfig.fargate.execution-role-arn=arn:aws:iam::123456789012:role/ecsTaskExecutionRole") ;;
    aci) common+=(--set-json 'extraTaints=["azure.com/aci:NoSchedule"]'
      --set-string "providerConfig.aci.subscription-id=00000000-0000-0000-0000-000000000001"
      --set-string "providerConfig.aci.resource-group=vk-rg,providerConfig.aci.location=westeurope"
      --set-string "providerConfig.aci.arm-endpoint=$ACI_URL,providerConfig.aci.authority-host=$ACI_URL"
      --set-string "providerConfig.aci.subnet-ids=/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/vk-rg/providers/Microsoft.Network/virtualNetworks/vk-vnet/subnets/aci") ;;
    eci) common+=(--set-string "providerConfig.eci.region=cn-hangzhou,providerConfig.eci.endpoint=$ECI_URL"
      --set-string "providerConfig.eci.vswitch-id=vsw-emulator0001,providerConfig.eci.security-group-id=sg-emulator0001"
      --set-string "providerConfig.eci.zone-id=cn-hangzhou-h") ;;
  esac
  "${HELM[@]}" install "vk-$p" helm -n vk-system "${common[@]}" >/dev/null
}

if [ "$IN_CLUSTER" = 1 ]; then
  read -r _ _ KUBELET_NODE _ <"$RUN/control-plane.out"
  step "installing the chart three times (vk-fargate, vk-aci, vk-eci) onto the kubelet node $KUBELET_NODE"
  "${KUBECTL[@]}" create namespace vk-system >/dev/null
  # The emulators' default credentials (see emulators/*/README.md), as the chart's Secrets.
  "${KUBECTL[@]}" -n vk-system create secret generic fargate-credentials \
    --from-literal=AWS_ACCESS_KEY_ID=testing --from-literal=AWS_SECRET_ACCESS_KEY=testing >/dev/null
  "${KUBECTL[@]}" -n vk-system create secret generic aci-credentials \
    --from-literal=AZURE_TENANT_ID=00000000-0000-0000-0000-0000000000aa \
    --from-literal=AZURE_CLIENT_ID=vk-client --from-literal=AZURE_CLIENT_SECRET=vk-client-secret >/dev/null
  "${KUBECTL[@]}" -n vk-system create secret generic eci-credentials \
    --from-literal=ALIBABA_CLOUD_ACCESS_KEY_ID=LTAI5tEmulatorKey0001 \
    --from-literal=ALIBABA_CLOUD_ACCESS_KEY_SECRET=EmulatorSecret0001EmulatorSecret >/dev/null
  for p in fargate aci eci; do install_chart "$p"; done
else
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

fi

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
# lists every node's pods). In the cluster the providers listen on their pods' unix sockets only.
if [ "$IN_CLUSTER" = 0 ]; then
  "$GRPCURL" -plaintext "127.0.0.1:${PORTS[aci]}" podprovider.v1.PodProvider/ListPods | grep -q '"aks-sample-' \
    || fail "grpcurl ListPods on provider-aci does not list the aks-sample pods"
fi

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
fargate_uid="$("${KUBECTL[@]}" get pod "$fargate_pod" -o jsonpath='{.metadata.uid}')"
# The pod's task, found in moto's own state by the pod UID tag the provider puts on it.
task_arn="$(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$CACHE/venv/bin/python" -c '
import sys, boto3
ecs = boto3.client("ecs", endpoint_url=sys.argv[1], region_name="us-east-1")
arns = ecs.list_tasks(cluster=sys.argv[2])["taskArns"]
tasks = ecs.describe_tasks(cluster=sys.argv[2], tasks=arns, include=["TAGS"])["tasks"] if arns else []
print(next((t["taskArn"] for t in tasks
            if {"key": "vk-pod-uid", "value": sys.argv[3]} in t.get("tags", [])), ""))' \
  "$MOTO_URL" "$MOTO_CLUSTER" "$fargate_uid")"
[ -n "$task_arn" ] || fail "moto has no task tagged with $fargate_pod's UID"
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

if [ "$IN_CLUSTER" = 1 ]; then
  TRY="  releases:         ${HELM[*]} list -n vk-system
  shim logs:        ${KUBECTL[*]} -n vk-system logs -l app.kubernetes.io/instance=vk-aci -c node-shim"
else
  TRY="  providers (gRPC): $GRPCURL -plaintext 127.0.0.1:${PORTS[aci]} podprovider.v1.PodProvider/ListPods"
fi
cat <<MSG

The demo is running: three virtual nodes (vk-fargate, vk-aci, vk-eci) with pods on them.

  kubectl:          ${KUBECTL[*]} get nodes,pods -o wide
  logs:             ${KUBECTL[*]} logs mypod
  scale:            ${KUBECTL[*]} scale deployment aks-sample --replicas=20
$TRY
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
  if [ "$IN_CLUSTER" = 1 ]; then
    step "check: helm uninstall drains and removes each virtual node"
    for p in fargate aci eci; do
      "${HELM[@]}" uninstall "vk-$p" -n vk-system --timeout 5m >/dev/null || fail "helm uninstall vk-$p failed"
    done
    left="$("${KUBECTL[@]}" get nodes -o name | grep '^node/vk-\(fargate\|aci\|eci\)$' || true)"
    [ -z "$left" ] || fail "virtual nodes left after helm uninstall: $left"
  fi
  step "check passed"
  exit 0
fi
wait "${PIDS[0]}"
