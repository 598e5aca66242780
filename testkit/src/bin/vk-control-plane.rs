//! Runs a local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) until
//! SIGTERM or Ctrl-C, for the demo and for trying things by hand.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use vk_testkit::ControlPlane;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(
    name = "vk-control-plane",
    about = "Run a local Kubernetes 1.20 control plane on loopback"
)]
struct Cli {
    /// Copy the admin kubeconfig here once the control plane is ready.
    #[arg(long, env = "VK_KUBECONFIG_OUT")]
    kubeconfig_out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vk_testkit::init_bin_logging();
    let mut term = signal(SignalKind::terminate())?;
    let mut cp = ControlPlane::start().await?;
    if let Some(out) = &cli.kubeconfig_out {
        std::fs::copy(&cp.kubeconfig, out)
            .with_context(|| format!("copying the kubeconfig to {}", out.display()))?;
    }
    println!("ready {}", cp.kubeconfig.display());
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => cp.ensure_running()?,
        }
    }
    cp.stop().await
}
