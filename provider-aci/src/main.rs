//! `provider-aci`: the PodProvider gRPC service for Azure Container Instances (ACI).
//!
//! Skeleton: serves the contract with health and reflection; every PodProvider RPC answers
//! UNIMPLEMENTED until the provider's own issue lands.

use clap::Parser;
use provider_common::ServerArgs;

/// Command-line flags (each with an environment fallback).
#[derive(Parser, Debug)]
#[command(
    name = "provider-aci",
    version,
    about = "PodProvider gRPC service for Azure Container Instances (ACI)"
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

/// The Azure Container Instances (ACI) provider.
#[derive(Debug, Default)]
struct AciProvider;

// Every RPC keeps its generated default: UNIMPLEMENTED.
#[tonic::async_trait]
impl podprovider_proto::PodProvider for AciProvider {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    provider_common::run("provider-aci", AciProvider, &cli.server).await?;
    Ok(())
}
