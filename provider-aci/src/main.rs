//! `provider-aci`: the PodProvider gRPC service for Azure Container Instances (ACI).
//!
//! Pods become container groups (ARM `Microsoft.ContainerInstance/containerGroups`, api-version
//! 2023-05-01) named from the pod's identity and tagged with it; statuses come from one List By
//! Resource Group per interval plus a GET for groups whose entry changed; logs from List Logs;
//! exec over ACI's WebSocket sessions. See README.md for the flags.
#![forbid(unsafe_code)]

mod arm;
mod auth;
mod config;
mod error;
mod group;
mod http;
mod logs;
mod model;
mod provider;
mod status;
mod ws_exec;

use std::{collections::HashMap, sync::Arc};

use clap::Parser;
use provider_common::{ServerArgs, retry::RetryPolicy, status_loop};

use crate::{
    arm::{Arm, Scope},
    auth::{Endpoints, TokenSource},
    config::AciArgs,
    group::GroupSettings,
    provider::{AciProvider, Settings},
};

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
    #[command(flatten)]
    aci: AciArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // Before any cloud call: an exposed plaintext listen is a configuration error.
    cli.server.check_listen()?;
    let _telemetry = provider_common::logging::init(
        "provider-aci",
        cli.server.log_format,
        &cli.server.log_filter,
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let grpc_metrics = vk_telemetry::grpc::GrpcMetrics::register(&mut registry, "server");
    provider_common::retry::register_metrics(&mut registry);
    let args = &cli.aci;
    let required = args.validate()?;
    let credential = args.credential()?;
    tracing::info!(credential = credential.kind(), arm = %args.arm_endpoint, resource_group = %required.resource_group, cluster = %args.cluster(&required.resource_group), nodes = ?args.nodes(), "starting");

    let http = http::Http::new();
    let tokens = Arc::new(
        TokenSource::new(
            http.clone(),
            credential,
            Endpoints {
                authority: args.authority_host.clone(),
                imds: args.imds_endpoint.clone(),
                resource: args.arm_audience.clone(),
            },
        )
        .with_imds_retry(args.imds_retry()),
    );
    let arm = Arm::new(
        http,
        tokens,
        Scope {
            endpoint: args.arm_endpoint.clone(),
            subscription: required.subscription.clone(),
            resource_group: required.resource_group.clone(),
        },
        RetryPolicy::default(),
    );
    let os = args.os_type.to_ascii_lowercase();
    let mut capacity = HashMap::from([
        ("cpu".to_owned(), args.capacity_cpu.clone()),
        ("memory".to_owned(), args.capacity_memory.clone()),
        ("pods".to_owned(), args.capacity_pods.clone()),
    ]);
    if !args.gpu_skus.is_empty() {
        capacity.insert("nvidia.com/gpu".to_owned(), args.capacity_gpu.clone());
    }
    let settings = Settings {
        groups: GroupSettings {
            location: required.location.clone(),
            cluster_id: args.cluster(&required.resource_group),
            subnet_ids: args
                .subnet_ids
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            gpu_skus: args
                .gpu_skus
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .collect(),
            default_cpu_millis: args.default_cpu_millis,
            default_memory_bytes: args.default_memory_mb * 1_000_000,
            cluster_dns: args
                .cluster_dns
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            cluster_domain: args.cluster_domain.trim().trim_matches('.').to_owned(),
        },
        capacity,
        operating_system: os,
        instance_view_refresh: args.instance_view_refresh(),
        refreshes_per_poll: args.instance_view_refreshes_per_poll,
        node_names: args.nodes(),
    };
    let provider = AciProvider::new(arm, settings);

    // Rebuild state from ARM before serving, so the first WatchPods snapshot is complete.
    let hub = provider.hub();
    match provider.poll().await {
        Ok(pods) => {
            tracing::info!(pods = pods.len(), "state rebuilt from ACI");
            hub.replace_all(pods);
            hub.set_health(status_loop::PollHealth::Ok);
        }
        Err(e) => {
            tracing::warn!(error = %e, "first status poll failed; serving anyway, reporting NotReady");
            hub.set_health(status_loop::PollHealth::Failed(e.to_string()));
        }
    }
    let poller = provider.clone();
    let poll_loop = tokio::spawn(status_loop::run_poll_loop(
        hub,
        args.status_interval(),
        move || {
            let p = poller.clone();
            async move { p.poll().await }
        },
    ));
    provider_common::serve_metrics(&cli.server, registry).await?;
    let served = provider_common::serve_args(
        provider,
        &cli.server,
        Some(grpc_metrics),
        provider_common::shutdown::signal(),
    )
    .await;
    poll_loop.abort();
    served?;
    Ok(())
}
