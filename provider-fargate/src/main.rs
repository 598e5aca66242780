//! `provider-fargate`: the PodProvider gRPC service for AWS Fargate (through ECS).
//!
//! Skeleton: serves the contract with health and reflection; every PodProvider RPC answers
//! UNIMPLEMENTED until the provider's own issue lands.

use clap::Parser;
use provider_common::ServerArgs;

/// Command-line flags (each with an environment fallback).
#[derive(Parser, Debug)]
#[command(
    name = "provider-fargate",
    version,
    about = "PodProvider gRPC service for AWS Fargate (through ECS)"
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

/// The AWS Fargate (through ECS) provider.
#[derive(Debug, Default)]
struct FargateProvider;

// Every RPC keeps its generated default: UNIMPLEMENTED.
#[tonic::async_trait]
impl podprovider_proto::PodProvider for FargateProvider {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    provider_common::run(FargateProvider, &cli.server).await?;
    Ok(())
}
