#!/usr/bin/env bash
# Provides etcd + kube-apiserver + kube-scheduler + kube-controller-manager for tests and the demo,
# and what a real node needs: kubelet, the pause binary, containerd + runc + CNI plugins.
#
# The Kubernetes binaries are built once from Debian's `kubernetes` source package (1.20.2) with
# Debian's Go, and cached outside the checkout; only missing ones are built (the source tree is
# deleted afterwards). `pause` is the tree's build/pause/linux/pause.c, compiled statically.
# etcd comes from Debian's `etcd-server`; containerd, runc and the CNI plugins from Debian too.
# Then the node's images (pause, busybox) are packaged by `scripts/images.sh --node-images`.
# Prints the directory holding the binaries on its last line of stdout.
#
# Env: VK_CACHE (default ~/.cache/vk-rs), VK_SKIP_APT=1 to skip package installation.
set -euo pipefail

CACHE="${VK_CACHE:-$HOME/.cache/vk-rs}"
OUT="$CACHE/k8s-1.20.2/bin"
log() { echo "[k8s-build] $*" >&2; }

need_root() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }

install_packages() {
  [ "${VK_SKIP_APT:-0}" = 1 ] && return 0
  local missing=()
  for p in golang-go etcd-server golang-github-modern-go-reflect2-dev dpkg-dev rsync make gcc \
    containerd runc containernetworking-plugins; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  $(need_root) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $(need_root) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

enable_deb_src() {
  local f=/etc/apt/sources.list.d/debian.sources
  if [ -f "$f" ] && ! grep -q '^Types: deb deb-src' "$f"; then
    log "enabling deb-src in $f"
    $(need_root) sed -i 's/^Types: deb$/Types: deb deb-src/' "$f"
    $(need_root) env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  fi
}

build_kubernetes() {
  local src="$CACHE/k8s-src"
  mkdir -p "$src"
  local tree
  tree="$(find "$src" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -n1)"
  if [ -z "$tree" ]; then
    enable_deb_src
    log "fetching Debian's kubernetes source package"
    (cd "$src" && apt-get source -qq kubernetes >&2)
    tree="$(find "$src" -maxdepth 1 -type d -name 'kubernetes-1.20*' | head -n1)"
  fi
  [ -n "$tree" ] || { log "kubernetes source tree not found"; exit 1; }

  # The vendored reflect2 1.0.1 makes the API server segfault under Go 1.19 whenever it writes
  # YAML or pretty JSON; Debian's 1.0.2 does not.
  local vr="$tree/vendor/github.com/modern-go/reflect2"
  if [ ! -f "$vr/go_above_118.go" ]; then
    log "replacing vendored reflect2 with Debian's 1.0.2"
    find "$vr" -maxdepth 1 \( -name '*.go' -o -name '*.s' \) -delete
    find /usr/share/gocode/src/github.com/modern-go/reflect2 -maxdepth 1 \
      \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$vr/" \;
  fi

  local targets=() bin
  for bin in "${missing_bins[@]}"; do
    [ "$bin" = pause ] || targets+=("cmd/$bin")
  done
  mkdir -p "$OUT"
  if [ ${#targets[@]} -gt 0 ]; then
    log "building ${targets[*]} (about 7-10 minutes for the control plane, 4-6 for kubelet; once)"
    (
      cd "$tree"
      export GOPATH="$tree/.go" CGO_ENABLED=0 PATH="/usr/lib/go/bin:$PATH" GOFLAGS= GO111MODULE=off
      mkdir -p .go/src/k8s.io
      [ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes
      cd .go/src/k8s.io/kubernetes
      make WHAT="${targets[*]}" >&2
    )
    local built="$tree/_output/bin"
    [ -d "$built" ] || built="$tree/_output/local/bin/linux/amd64"
    for bin in "${missing_bins[@]}"; do
      [ "$bin" = pause ] && continue
      cp "$built/$bin" "$OUT/$bin.tmp" && mv "$OUT/$bin.tmp" "$OUT/$bin"
    done
  fi
  if [[ " ${missing_bins[*]} " == *" pause "* ]]; then
    # The sandbox ("infra") container's process, as upstream builds it for its pause image.
    log "compiling pause"
    gcc -Os -Wall -Werror -static -DVERSION=v3.4-vk-rs -o "$OUT/pause.tmp" \
      "$tree/build/pause/linux/pause.c"
    strip "$OUT/pause.tmp"
    mv "$OUT/pause.tmp" "$OUT/pause"
  fi
  # The source tree and Go build cache are large and no longer needed.
  rm -rf "$src" "$HOME/.cache/go-build"
}

install_packages
missing_bins=()
for bin in kube-apiserver kube-scheduler kube-controller-manager kubelet pause; do
  [ -x "$OUT/$bin" ] || missing_bins+=("$bin")
done
if [ ${#missing_bins[@]} -gt 0 ]; then
  build_kubernetes
fi
ln -sf "$(command -v etcd || echo /usr/bin/etcd)" "$OUT/etcd"
"$(dirname "$0")/images.sh" --node-images >&2
log "binaries in $OUT"
echo "$OUT"
