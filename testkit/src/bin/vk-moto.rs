//! Runs a moto server (AWS emulator) set up for provider-fargate (ECS cluster, VPC subnet,
//! security group, log group) until SIGTERM or Ctrl-C, for the demo and for trying things by hand.
//! Prints `ready ENDPOINT CLUSTER SUBNET SECURITY_GROUP LOG_GROUP` once set up.

use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use vk_testkit::moto::Moto;

/// Command-line flags.
#[derive(Parser, Debug)]
#[command(
    name = "vk-moto",
    about = "Run moto on loopback, set up for provider-fargate"
)]
struct Cli {
    /// ECS cluster to create.
    #[arg(long, default_value = "vk")]
    cluster: String,
    /// CloudWatch Logs group to create.
    #[arg(long, default_value = "vk-logs")]
    log_group: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    vk_testkit::init_bin_logging();
    let mut term = signal(SignalKind::terminate())?;
    let dir = tempfile::tempdir()?;
    let moto = Moto::start(dir.path(), &cli.cluster, &cli.log_group).await?;
    println!(
        "ready {} {} {} {} {}",
        moto.endpoint, cli.cluster, moto.subnet, moto.security_group, cli.log_group
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
    }
    moto.stop().await
}
