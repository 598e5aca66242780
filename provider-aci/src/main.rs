//! `provider-aci`: the PodProvider gRPC service for Azure Container Instances (ACI).
//!
//! Pods become container groups (ARM `Microsoft.ContainerInstance/containerGroups`, api-version
//! 2023-05-01) named from the pod's identity and tagged with it; statuses come from one List By
//! Resource Group per interval plus a GET for groups whose entry changed; logs from List Logs;
//! exec over ACI's WebSocket sessions. See README.md for the flags.
#![forbid(unsafe_code)]

provider_common::provider_main!(
    "PodProvider gRPC service for Azure Container Instances (ACI)",
    AciArgs,
    provider
);

mod auth;
mod client;
mod config;
mod error;
mod exec;
mod http;
mod logs;
mod plan;
mod provider;
mod status;
mod wire;

use std::sync::Arc;

use provider_common::{PollTask, retry::RetryPolicy, status_loop};

use crate::{
    auth::{Endpoints, TokenSource},
    client::{Arm, Scope},
    config::AciArgs,
    plan::GroupSettings,
    provider::{AciProvider, Settings},
};

/// The ACI provider from its flags, its state rebuilt from ARM, and its poll loop.
async fn provider(args: &AciArgs) -> anyhow::Result<(AciProvider, PollTask)> {
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
        capacity: args.capacity(),
        operating_system: os,
        instance_view_refresh: args.instance_view_refresh(),
        refreshes_per_poll: args.instance_view_refreshes_per_poll,
        node_names: args.nodes(),
    };
    let provider = AciProvider::new(arm, settings);

    let hub = provider.hub();
    let poller = provider.clone();
    let poll_loop = status_loop::rebuild_then_poll(hub, args.status_interval(), "ACI", move || {
        let p = poller.clone();
        async move { p.poll().await }
    })
    .await;
    Ok((provider, Box::pin(poll_loop)))
}
