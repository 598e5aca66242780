//! The real `node-shim` binary, as the providers' end-to-end tests run it against their provider,
//! and the project's copies of the acceptance manifests.

use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::process::Command;

use crate::{ControlPlane, bins::workspace_bin, ports::free_port, process::ManagedProcess};

/// The workspace's `node-shim` binary, next to the running test's target profile directory.
pub fn shim_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("node-shim").context(
        "this test runs the real node-shim binary: build it into the same target directory \
         (`cargo build -p node-shim`, or run `cargo test --workspace`)",
    )
}

/// `examples/acceptance/<file>`: the manifests from users' walk-throughs, unchanged.
pub fn example(file: &str) -> String {
    format!(
        "{}/../examples/acceptance/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Starts a shim for node `name` against the provider at `provider` (`HOST:PORT`), with quick
/// pings and resyncs, metrics off, and `extra_args` (taints, serving certificate, …).
pub fn spawn_shim(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    provider: &str,
    extra_args: &[&str],
) -> anyhow::Result<ManagedProcess> {
    ManagedProcess::spawn(
        &format!("node-shim-{name}"),
        Command::new(shim_bin()?)
            .arg(format!("--node-name={name}"))
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=http://{provider}"))
            .arg(format!("--kubelet-port={}", free_port()?))
            .arg("--metrics-address=off")
            .args(["--ping-interval=1s", "--resync-period=5s"])
            .args(extra_args)
            .env("RUST_LOG", "info,node_shim=debug"),
        dir,
    )
}

/// [`spawn_shim`] with the kubelet API reachable through the API server (`kubectl logs/exec`,
/// `/stats/summary`): the API server's client certificate is accepted (cluster CA) and the
/// endpoint serves a self-signed certificate, which the API server does not verify here.
pub fn spawn_shim_with_kubelet_api(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    provider: &str,
    extra_args: &[&str],
) -> anyhow::Result<ManagedProcess> {
    let client_ca = format!("--client-ca-file={}", cp.pki.ca_files.cert.display());
    let mut args = vec![client_ca.as_str(), "--serving-cert=self-signed"];
    args.extend_from_slice(extra_args);
    spawn_shim(cp, dir, name, provider, &args)
}
