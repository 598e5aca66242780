//! Runs a local control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) until
//! SIGTERM or Ctrl-C, for the demo and for trying things by hand; with `--kubelet-node`, also a
//! real kubelet node (containerd + runc) with the project's images imported, for the in-cluster demo.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use vk_testkit::{
    ControlPlane,
    kubelet_node::{KubeletNode, image_tarball},
};

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
    /// Also run a real kubelet node (needs root), importing these images built by
    /// scripts/images.sh (names such as `node-shim`, `provider-eci`), so the chart can run on it.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    kubelet_node_images: Vec<String>,
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
    let mut node = if cli.kubelet_node_images.is_empty() {
        None
    } else {
        let images = cli
            .kubelet_node_images
            .iter()
            .map(|name| image_tarball(name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Some(KubeletNode::start(&cp, &images).await?)
    };
    // `ready <kubeconfig> [<kubelet node> <its IP>]`: what scripts read.
    match &node {
        Some(n) => println!("ready {} {} {}", cp.kubeconfig.display(), n.name, n.node_ip),
        None => println!("ready {}", cp.kubeconfig.display()),
    }
    let result = loop {
        tokio::select! {
            _ = term.recv() => break Ok(()),
            _ = tokio::signal::ctrl_c() => break Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {
                let checked = cp.ensure_running().and_then(|()| match node.as_mut() {
                    Some(n) => n.ensure_running(),
                    None => Ok(()),
                });
                if let Err(err) = checked {
                    break Err(err);
                }
            }
        }
    };
    if let Some(n) = node {
        n.stop().await?;
    }
    cp.stop().await?;
    result
}
