#!/usr/bin/env bash
# Builds the project's OCI images from the working tree, on this machine, without pulling any base
# image: release binaries plus a root filesystem assembled from Debian packages (libc6, libgcc-s1,
# ca-certificates), one layer, written by scripts/oci-image.py as OCI image-layout tarballs that
# `ctr images import` loads.
#
#   scripts/images.sh                 node-shim, provider-eci, provider-aci, provider-fargate
#                                     (and the node images below), then --check
#   scripts/images.sh --node-images   only what the test node needs: pause (the sandbox image) and
#                                     busybox (Debian's busybox-static, for test pods)
#   scripts/images.sh --check         checks the built app images: non-root user, no shell,
#                                     `--version` answers (run as 65532 in the image's root), size,
#                                     then runs each on a real kubelet node as runAsNonRoot
#                                     (VK_IMAGES_SKIP_NODE_CHECK=1 skips that part)
#
# Images are tagged docker.io/vk-rs/<name>:<version> and <version>-<gitrev> (version from
# Cargo.toml; "-dirty" is appended when the working tree differs from HEAD). Output:
# $VK_IMAGES_DIR (default $VK_CACHE/images, VK_CACHE default ~/.cache/vk-rs): <name>.oci.tar and
# images.json (refs, digests, sizes). Release binaries are built with `--profile image` in
# $CARGO_TARGET_DIR (default $VK_CACHE/cargo-target); VK_IMAGES_PREBUILT=DIR packages the binaries
# already in DIR instead (e.g. built by an earlier step of CI).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${VK_CACHE:-$HOME/.cache/vk-rs}"
OUT="${VK_IMAGES_DIR:-$CACHE/images}"
DEBS="$CACHE/debs"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/cargo-target}"
APPS=(node-shim provider-eci provider-aci provider-fargate)
# Each image, compressed or not, stays under this size.
BUDGET_BYTES=$((40 * 1000 * 1000))
SOURCE_URL="https://github.com/vk-rs/vk-rs"
log() { echo "[images] $*" >&2; }

mode=all
case "${1:-}" in
  "") ;;
  --node-images) mode=node ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--node-images | --check]" >&2; exit 2 ;;
esac

mkdir -p "$OUT" "$DEBS"
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)"
[ -n "$version" ] || { log "no workspace version in Cargo.toml"; exit 1; }
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
gitrev="${revision:0:12}"
if [ "$revision" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  gitrev="$gitrev-dirty"
fi
# Reproducible timestamps: the commit's time.
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

# The .deb of each package: the one cached in $DEBS, else the candidate version, fetched once
# (remove $DEBS to move to newer packages).
deb() {
  local pkg="$1" file
  file="$(find "$DEBS" -maxdepth 1 -name "${pkg}_*.deb" | LC_ALL=C sort | tail -n1)"
  if [ -z "$file" ]; then
    log "fetching $pkg"
    (cd "$DEBS" && apt-get download -qq "$pkg" 2>/dev/null) \
      || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
           && (cd "$DEBS" && apt-get download -qq "$pkg" 2>/dev/null); }
    file="$(find "$DEBS" -maxdepth 1 -name "${pkg}_*.deb" | LC_ALL=C sort | tail -n1)"
  fi
  [ -n "$file" ] || { log "could not fetch $pkg"; exit 1; }
  echo "$file"
}

# A minimal root: the C runtime the Rust binaries link (ldd: libc, libm, libgcc_s, the loader),
# CA certificates for HTTPS to the clouds, passwd/group entries for the non-root user, /tmp.
base_rootfs() {
  local root="$1" f
  for pkg in libc6 libgcc-s1 ca-certificates; do
    dpkg-deb -x "$(deb "$pkg")" "$root"
  done
  # Not needed by a program that only links libc: charset converters, locales, tools, docs
  # (the copyright files stay).
  rm -rf "$root/usr/lib/x86_64-linux-gnu/gconv" "$root/usr/share/locale" "$root/usr/share/lintian" \
    "$root/usr/libexec" "$root/usr/bin" "$root/usr/sbin" "$root/sbin" "$root/bin" \
    "$root/usr/share/doc-base"
  find "$root/usr/share/doc" -type f ! -name copyright -delete
  # The bundle update-ca-certificates would write: Mozilla's roots, in order.
  mkdir -p "$root/etc/ssl/certs"
  find "$root/usr/share/ca-certificates/mozilla" -name '*.crt' | LC_ALL=C sort | while read -r f; do
    cat "$f"
  done > "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root/usr/share/ca-certificates" "$root/etc/ca-certificates.conf"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    > "$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
  printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
  mkdir -p "$root/tmp" "$root/home/nonroot"
  chmod 1777 "$root/tmp"
}

labels() {
  echo --label "org.opencontainers.image.source=$SOURCE_URL"
  echo --label "org.opencontainers.image.revision=$revision"
  echo --label "org.opencontainers.image.version=$1"
  echo --label "org.opencontainers.image.title=$2"
}

build_apps() {
  local t0=$SECONDS bin_dir="${VK_IMAGES_PREBUILT:-}"
  if [ -z "$bin_dir" ]; then
    log "cargo build --profile image (${APPS[*]}) in $CARGO_TARGET_DIR"
    local pkgs=()
    for app in "${APPS[@]}"; do pkgs+=(-p "$app"); done
    cargo build --profile image --locked "${pkgs[@]}" >&2
    log "binaries built in $((SECONDS - t0)) s"
    bin_dir="$CARGO_TARGET_DIR/image"
  else
    log "using the binaries in $bin_dir (VK_IMAGES_PREBUILT)"
  fi
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  base_rootfs "$work/base"
  for app in "${APPS[@]}"; do
    local root="$work/$app"
    cp -a "$work/base" "$root"
    mkdir -p "$root/usr/local/bin"
    install -m 0755 "$bin_dir/$app" "$root/usr/local/bin/$app"
    # shellcheck disable=SC2046
    python3 scripts/oci-image.py build --rootfs "$root" --out "$OUT/$app.oci.tar" \
      --ref "docker.io/vk-rs/$app:$version" --ref "docker.io/vk-rs/$app:$version-$gitrev" \
      --entrypoint "/usr/local/bin/$app" --user 65532:65532 \
      --env PATH=/usr/local/bin:/usr/bin:/bin \
      --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
      --chown home/nonroot=65532:65532 \
      $(labels "$version" "$app") > "$OUT/$app.json"
    log "$app: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["archive_bytes"], "bytes,", d["uncompressed_bytes"], "uncompressed")' "$OUT/$app.json")"
  done
}

build_node_images() {
  local work k8s_bin
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  k8s_bin="${VK_K8S_BIN_DIR:-$CACHE/k8s-1.20.2/bin}"
  [ -x "$k8s_bin/pause" ] || { log "$k8s_bin/pause is missing: run scripts/k8s-build.sh"; exit 1; }
  local bb stamp
  bb="$(deb busybox-static)"
  # Skipped when nothing they are made from has changed (k8s-build.sh runs this on every setup).
  stamp="$(cat "$k8s_bin/pause" "$bb" scripts/oci-image.py | sha256sum | cut -d' ' -f1)"
  if [ -f "$OUT/pause.oci.tar" ] && [ -f "$OUT/busybox.oci.tar" ] \
    && [ "$(cat "$OUT/.node-images.stamp" 2>/dev/null)" = "$stamp" ]; then
    return 0
  fi
  mkdir -p "$work/pause"
  install -m 0755 "$k8s_bin/pause" "$work/pause/pause"
  # shellcheck disable=SC2046
  python3 scripts/oci-image.py build --rootfs "$work/pause" --out "$OUT/pause.oci.tar" \
    --ref docker.io/vk-rs/pause:3.4 --entrypoint /pause --user 65535:65535 \
    $(labels 3.4 pause) > "$OUT/pause.json"

  local bbver
  bbver="$(dpkg-deb -f "$bb" Version | sed 's/^[0-9]*://; s/[^A-Za-z0-9_.-]/_/g')"
  dpkg-deb -x "$bb" "$work/busybox"
  rm -rf "$work/busybox/usr/share/man" "$work/busybox/usr/share/doc-base"
  local applet
  for applet in $("$work/busybox/bin/busybox" --list); do
    [ -e "$work/busybox/bin/$applet" ] || ln -s busybox "$work/busybox/bin/$applet"
  done
  mkdir -p "$work/busybox/tmp" && chmod 1777 "$work/busybox/tmp"
  # shellcheck disable=SC2046
  python3 scripts/oci-image.py build --rootfs "$work/busybox" --out "$OUT/busybox.oci.tar" \
    --ref "docker.io/vk-rs/busybox:$bbver" --ref docker.io/vk-rs/busybox:test \
    --env PATH=/bin --cmd sh $(labels "$bbver" busybox) > "$OUT/busybox.json"
  log "node images: pause, busybox ($bbver) in $OUT"
  echo "$stamp" > "$OUT/.node-images.stamp"
}

check_apps() {
  local failed=0 app info work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  for app in "${APPS[@]}"; do
    local image="$OUT/$app.oci.tar"
    [ -f "$image" ] || { log "FAIL $app: $image missing (run scripts/images.sh)"; failed=1; continue; }
    info="$work/$app.inspect.json"
    python3 scripts/oci-image.py inspect "$image" > "$info"
    if ! python3 - "$info" "$app" "$BUDGET_BYTES" "$version" <<'EOF'
import json, sys
info, app, budget, version = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), sys.argv[4]
cfg, problems = info["config"], []
user = cfg.get("User", "")
uid = user.split(":")[0]
if not uid.isdigit() or int(uid) == 0:
    problems.append(f"User is {user!r}, not a numeric non-root uid")
if cfg.get("Entrypoint") != [f"/usr/local/bin/{app}"]:
    problems.append(f"Entrypoint is {cfg.get('Entrypoint')}")
labels = cfg.get("Labels", {})
for key in ("source", "revision", "version"):
    if not labels.get(f"org.opencontainers.image.{key}"):
        problems.append(f"label org.opencontainers.image.{key} missing")
for size in ("archive_bytes", "uncompressed_bytes"):
    if info[size] >= budget:
        problems.append(f"{size} {info[size]} >= {budget}")
shells = {"sh", "bash", "dash", "ash", "zsh", "busybox", "toybox"}
for f in info["files"]:
    if f["path"].rsplit("/", 1)[-1] in shells:
        problems.append(f"shell in the image: {f['path']}")
if "etc/ssl/certs/ca-certificates.crt" not in {f["path"] for f in info["files"]}:
    problems.append("no CA bundle")
if f"docker.io/vk-rs/{app}:{version}" not in info["refs"]:
    problems.append(f"not tagged {version}: {info['refs']}")
for p in problems:
    print(f"[images] FAIL {app}: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    then
      failed=1
      continue
    fi
    # --version answers inside the image's own root, as the image's user: only the image's
    # libraries are there, and nothing runs as root.
    local root="$work/$app-root" out
    mkdir -p "$root"
    tar -xOf "$image" "$(python3 -c '
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
idx = json.load(t.extractfile("index.json"))
m = json.load(t.extractfile("blobs/sha256/" + idx["manifests"][0]["digest"][7:]))
print("blobs/sha256/" + m["layers"][0]["digest"][7:])' "$image")" | tar -xzf - -C "$root"
    if out="$(chroot --userspec=65532:65532 "$root" "/usr/local/bin/$app" --version 2>&1)" \
      && [ "$out" = "$app $version" ]; then
      log "ok $app: $(stat -c %s "$image") bytes, user 65532, '$out'"
    else
      log "FAIL $app: --version as 65532 in the image root printed: $out"
      failed=1
    fi
  done
  [ "$failed" = 0 ] || return 1
  # The same images in a real container on a real kubelet: the kubelet refuses a runAsNonRoot
  # pod whose image user is root, and each pod must log "<app> <version>".
  if [ "${VK_IMAGES_SKIP_NODE_CHECK:-0}" != 1 ]; then
    log "running each image on a real node (testkit/tests/kubelet_node.rs)"
    cargo test -p vk-testkit --locked --test kubelet_node -- --ignored --exact \
      app_images_run_as_non_root_and_answer_version >&2
  fi
}

write_index() {
  python3 - "$OUT" <<'EOF' > "$OUT/images.json.tmp"
import glob, json, os, sys
out = sys.argv[1]
images = {}
for f in sorted(glob.glob(os.path.join(out, "*.json"))):
    if f.endswith("images.json"):
        continue
    d = json.load(open(f))
    images[os.path.basename(f)[:-5]] = d
json.dump(images, sys.stdout, indent=2)
EOF
  mv "$OUT/images.json.tmp" "$OUT/images.json"
}

case "$mode" in
  node) build_node_images; write_index ;;
  check) check_apps ;;
  all)
    build_apps
    build_node_images
    write_index
    check_apps
    ;;
esac
