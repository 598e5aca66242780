//! Shared set-up for the shim's end-to-end tests: a control plane, test providers and shim
//! processes.

#![allow(dead_code)] // each test binary uses a different part

use std::{path::Path, time::Duration};

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use provider_common::ListenAddr;
use tokio::process::Command;
use vk_testkit::{
    ControlPlane,
    ports::free_port,
    process::ManagedProcess,
    test_provider::{Control, RunningServer},
    wait::eventually,
};

/// One virtual node: its test provider and its shim process.
pub struct VirtualNode {
    pub name: String,
    /// Where the shim serves `/metrics` (kept across restarts).
    pub metrics_port: u16,
    pub control: Control,
    pub server: Option<RunningServer>,
    pub shim: ManagedProcess,
    pub socket: std::path::PathBuf,
}

/// Starts a test provider on a unix socket in `dir` and a shim for `name` with `extra_args`.
pub async fn start_node(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    extra_args: &[&str],
) -> anyhow::Result<VirtualNode> {
    start_node_with_env(cp, dir, name, extra_args, &[]).await
}

/// [`start_node`] with extra environment variables for the shim.
pub async fn start_node_with_env(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<VirtualNode> {
    let socket = dir.join(format!("{name}.sock"));
    let control = Control::new();
    let server = control.serve(ListenAddr::Unix(socket.clone())).await?;
    let metrics_port = free_port()?;
    let mut args = vec![format!("--metrics-address=127.0.0.1:{metrics_port}")];
    args.extend(extra_args.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let shim = spawn_shim_with_env(cp, dir, name, &socket, &args, env)?;
    Ok(VirtualNode {
        name: name.to_owned(),
        metrics_port,
        control,
        server: Some(server),
        shim,
        socket,
    })
}

/// Starts a shim process for node `name` talking to the provider on `socket` (metrics off unless
/// `extra_args` has `--metrics-address`).
pub fn spawn_shim(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    socket: &Path,
    extra_args: &[&str],
) -> anyhow::Result<ManagedProcess> {
    spawn_shim_with_env(cp, dir, name, socket, extra_args, &[])
}

/// [`spawn_shim`] with extra environment variables.
pub fn spawn_shim_with_env(
    cp: &ControlPlane,
    dir: &Path,
    name: &str,
    socket: &Path,
    extra_args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<ManagedProcess> {
    ManagedProcess::spawn(
        &format!("node-shim-{name}"),
        Command::new(Path::new(env!("CARGO_BIN_EXE_node-shim")))
            .arg(format!("--node-name={name}"))
            .arg(format!("--kubeconfig={}", cp.kubeconfig.display()))
            .arg(format!("--provider-endpoint=unix:{}", socket.display()))
            .arg(format!("--kubelet-port={}", free_port()?))
            .args(["--ping-interval=1s", "--resync-period=5s"])
            .args(
                (!extra_args
                    .iter()
                    .any(|a| a.starts_with("--metrics-address")))
                .then_some("--metrics-address=off"),
            )
            .args(extra_args)
            .env("RUST_LOG", "info,node_shim=debug")
            .envs(env.iter().copied()),
        dir,
    )
}

/// Runs kubectl against the control plane; fails with its output unless it succeeds.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    cp.run_kubectl(args)
}

/// A pod for the scheduler to place on a virtual node: it selects `type=virtual-kubelet`,
/// tolerates the provider taint, and gets one nginx container unless `spec` has containers.
pub fn scheduled_pod(
    name: &str,
    labels: serde_json::Value,
    spec: serde_json::Value,
) -> anyhow::Result<k8s_openapi::api::core::v1::Pod> {
    let mut spec = spec;
    spec["nodeSelector"] = serde_json::json!({"type": "virtual-kubelet"});
    spec["tolerations"] =
        serde_json::json!([{"key": "virtual-kubelet.io/provider", "operator": "Exists"}]);
    if spec.get("containers").is_none() {
        spec["containers"] = serde_json::json!([{"name": "c", "image": "nginx"}]);
    }
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels}, "spec": spec
    }))?)
}

impl VirtualNode {
    /// Starts the shim again (after a stop), on the same socket and metrics port.
    pub fn restart_shim(&mut self, cp: &ControlPlane, dir: &Path) -> anyhow::Result<()> {
        let metrics = format!("--metrics-address=127.0.0.1:{}", self.metrics_port);
        self.shim = spawn_shim(cp, dir, &self.name, &self.socket, &[&metrics])?;
        Ok(())
    }

    /// The shim's `/metrics` exposition.
    pub async fn shim_metrics(&self) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:{}/metrics", self.metrics_port),
            ])
            .output()
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The project's copy of the acceptance manifests.
pub fn example(file: &str) -> String {
    format!(
        "{}/../examples/acceptance/{file}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Generous deadline for things the control plane and shim do in seconds.
pub const SLOW: Duration = Duration::from_secs(120);

/// Adds the last lines of each shim's log to a failing result, so CI output shows what they did.
pub fn with_logs<T>(result: anyhow::Result<T>, nodes: &[&VirtualNode]) -> anyhow::Result<T> {
    result.map_err(|err| {
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} log (excerpt) ---\n{}",
                    n.name,
                    n.shim.log_excerpt(60)
                )
            })
            .collect();
        err.context(logs.join("\n"))
    })
}

/// Approves the node's serving certificate request; returns the kubelet port and the certificate.
pub async fn approve_serving_cert(cp: &ControlPlane, name: &str) -> anyhow::Result<(u16, String)> {
    let nodes: Api<Node> = Api::all(cp.client().await?);
    let port = kubelet_port(&nodes, name).await?;
    let prefix = format!("csr-{name}-");
    let csr_name = eventually(SLOW, "serving certificate request", || async {
        let out = kubectl(cp, &["get", "csr", "-o", "name"])?;
        Ok(out
            .lines()
            .map(|l| l.trim_start_matches("certificatesigningrequest.certificates.k8s.io/"))
            .find(|n| n.starts_with(&prefix))
            .map(str::to_owned))
    })
    .await?;
    let signer = kubectl(
        cp,
        &["get", "csr", &csr_name, "-o", "jsonpath={.spec.signerName}"],
    )?;
    assert_eq!(signer, "kubernetes.io/kubelet-serving");
    kubectl(cp, &["certificate", "approve", &csr_name])?;
    let cert = eventually(SLOW, "certificate issued", || async {
        let b64 = kubectl(
            cp,
            &[
                "get",
                "csr",
                &csr_name,
                "-o",
                "jsonpath={.status.certificate}",
            ],
        )?;
        Ok((!b64.is_empty()).then_some(b64))
    })
    .await?;
    use base64::Engine;
    let pem = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(cert.trim())?)?;
    // Served once the certificate is in: every path needs credentials, so 401.
    eventually(SLOW, "kubelet API serving", || async {
        let (code, body) = curl(port, "/healthz", None).await?;
        tracing::info!(port, code, %body, "kubelet API probe");
        Ok((code == 401).then_some(()))
    })
    .await?;
    Ok((port, pem))
}

/// The kubelet port the Node publishes (0 until its status is written).
pub async fn kubelet_port(nodes: &Api<Node>, name: &str) -> anyhow::Result<u16> {
    eventually(SLOW, "node with kubelet endpoint", || async {
        Ok(nodes
            .get_opt(name)
            .await?
            .and_then(|n| n.status?.daemon_endpoints?.kubelet_endpoint)
            .and_then(|e| u16::try_from(e.port).ok())
            .filter(|p| *p != 0))
    })
    .await
}

/// `curl -k` against the kubelet port: (status, body).
pub async fn curl(port: u16, path: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-k", "-s", "-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    let out = cmd.output().await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((code.trim().parse().unwrap_or(0), body.to_owned()))
}

/// Lets service account `default:<sa>` reach the kubelet API (`get nodes/proxy`, as the kubelet
/// authorizes), through a ClusterRole and binding named after `name`.
pub fn grant_node_proxy(cp: &ControlPlane, name: &str, sa: &str) -> anyhow::Result<()> {
    kubectl(
        cp,
        &[
            "create",
            "clusterrole",
            name,
            "--verb=get",
            "--resource=nodes/proxy",
        ],
    )?;
    kubectl(
        cp,
        &[
            "create",
            "clusterrolebinding",
            name,
            &format!("--clusterrole={name}"),
            &format!("--serviceaccount=default:{sa}"),
        ],
    )?;
    Ok(())
}
