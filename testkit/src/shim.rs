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

/// What a test that runs the real shim does first: rustls' crypto provider and test logging
/// installed, the shim binary checked (so the test fails before starting anything); answers
/// the test's temporary directory.
pub fn prepare() -> anyhow::Result<tempfile::TempDir> {
    crate::install_crypto_provider();
    crate::init_test_logging();
    shim_bin()?;
    Ok(tempfile::tempdir()?)
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

/// A one-container pod named `name` bound to `node`, requesting `cpu` and `memory`, for the
/// stats tests.
pub fn measured_pod(
    node: &str,
    name: &str,
    cpu: &str,
    memory: &str,
) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node,
                 "containers": [{"name": "app", "image": "nginx:1.25",
                                 "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                 "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]}
    }))?)
}

/// Pod `name`'s entry of the kubelet summary (`/stats/summary`) that `node`'s shim serves,
/// read through the API server's node proxy as metrics-server reads it.
pub fn summary_of(cp: &ControlPlane, node: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let raw = node_proxy(cp, node, "/stats/summary")?;
    let summary: serde_json::Value = serde_json::from_str(&raw)?;
    summary["pods"]
        .as_array()
        .and_then(|pods| pods.iter().find(|p| p["podRef"]["name"] == name))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("pod {name} missing from the summary: {summary}"))
}

/// GET `path` of `node`'s kubelet API through the API server's node proxy.
pub fn node_proxy(cp: &ControlPlane, node: &str, path: &str) -> anyhow::Result<String> {
    cp.run_kubectl(&["get", "--raw", &format!("/api/v1/nodes/{node}/proxy{path}")])
}

/// The sample line of `family` for container `container` of pod `pod` in a Prometheus text
/// exposition such as `/metrics/resource`.
pub fn metric_line<'a>(
    metrics: &'a str,
    family: &str,
    pod: &str,
    container: &str,
) -> Option<&'a str> {
    let pod = format!("pod=\"{pod}\"");
    let container = format!("container=\"{container}\"");
    metrics
        .lines()
        .find(|l| l.starts_with(family) && l.contains(&container) && l.contains(&pod))
}

/// The two nodes the acceptance manifests need (`examples/acceptance/`), served by the provider
/// at `provider`: `aci_node` with the taints the ACI walk-throughs tolerate (the default
/// provider taint plus `azure.com/aci`), `eci_node` with the ECI walk-through's taint key
/// `alibabacloud.com/eci` and `eci_extra` flags.
pub fn spawn_acceptance_shims(
    cp: &ControlPlane,
    dir: &Path,
    provider: &str,
    [aci_node, eci_node]: [&str; 2],
    eci_extra: &[&str],
) -> anyhow::Result<(ManagedProcess, ManagedProcess)> {
    let aci = spawn_shim(
        cp,
        dir,
        aci_node,
        provider,
        &["--extra-taint=azure.com/aci:NoSchedule"],
    )?;
    let eci_args = [&["--taint-key=alibabacloud.com/eci"], eci_extra].concat();
    let eci = spawn_shim(cp, dir, eci_node, provider, &eci_args)?;
    Ok((aci, eci))
}
