//! `provider-eci`: the PodProvider gRPC service for Alibaba Cloud Elastic Container Instance (ECI).
//!
//! Skeleton: serves the contract with health and reflection; every PodProvider RPC answers
//! UNIMPLEMENTED until the provider's own issue lands.

#![allow(dead_code)]
mod api;
mod cloud;
mod error;
mod mapping;
mod params;
mod signing;
mod sizes;
mod status;

use clap::Parser;
use provider_common::ServerArgs;

/// Command-line flags (each with an environment fallback).
#[derive(Parser, Debug)]
#[command(
    name = "provider-eci",
    version,
    about = "PodProvider gRPC service for Alibaba Cloud Elastic Container Instance (ECI)"
)]
struct Cli {
    #[command(flatten)]
    server: ServerArgs,
}

/// The Alibaba Cloud Elastic Container Instance (ECI) provider.
#[derive(Debug, Default)]
struct EciProvider;

// Every RPC keeps its generated default: UNIMPLEMENTED.
#[tonic::async_trait]
impl podprovider_proto::PodProvider for EciProvider {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    provider_common::run("provider-eci", EciProvider, &cli.server).await?;
    Ok(())
}
