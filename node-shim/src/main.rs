//! `node-shim`: one virtual Kubernetes Node whose pods run through a PodProvider gRPC service.
//!
//! Not yet implemented: this binary only parses its flags and says so. The shim's behaviour
//! (SPEC §3) is the next piece of work.

use clap::Parser;

/// Command-line flags (each with an environment fallback).
#[derive(Parser, Debug)]
#[command(
    name = "node-shim",
    version,
    about = "Kubernetes virtual node backed by a PodProvider"
)]
struct Cli {
    /// Name of the virtual Node.
    #[arg(long, env = "NODE_NAME", default_value = "virtual-kubelet")]
    node_name: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    anyhow::bail!(
        "node-shim for node {:?} is not implemented yet",
        cli.node_name
    )
}
