//! Shared set-up for the shim's end-to-end tests: a control plane, test providers and shim
//! processes.

#![allow(dead_code)] // each test binary uses a different part

use std::{path::Path, time::Duration};

use provider_common::ListenAddr;
use tokio::process::Command;
use vk_testkit::{
    ControlPlane,
    ports::free_port,
    process::ManagedProcess,
    test_provider::{Control, RunningServer},
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
    let out = cp.kubectl().args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
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
