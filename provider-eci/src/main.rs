//! `provider-eci`: the PodProvider gRPC service for Alibaba Cloud Elastic Container Instance (ECI).
//!
//! Pods become ECI container groups (`CreateContainerGroup`, RPC API 2018-08-08, requests signed
//! with ACS3-HMAC-SHA256); statuses come from `DescribeContainerGroupStatus` per interval and a
//! periodic full `DescribeContainerGroups`; logs from `DescribeContainerLog`; exec over the
//! WebSocket of `ExecContainerCommand`. See README.md for the flags.
#![forbid(unsafe_code)]

provider_common::provider_main!(
    "PodProvider gRPC service for Alibaba Cloud Elastic Container Instance (ECI)",
    EciArgs,
    provider
);

mod client;
mod config;
mod credentials;
mod error;
mod exec;
mod logs;
mod params;
mod plan;
mod provider;
mod signing;
mod sizes;
mod status;
mod wire;

use anyhow::Context;
use provider_common::{PollTask, retry::RetryPolicy, status_loop};

use crate::{
    client::Cloud,
    config::EciArgs,
    plan::Placement,
    provider::{EciProvider, Settings},
};

/// The ECI provider from its flags, its state rebuilt from ECI, and its poll loop.
async fn provider(args: &EciArgs) -> anyhow::Result<(EciProvider, PollTask)> {
    args.validate()?;
    let creds = credentials::CredentialProvider::new(config::credentials_from_env(args)?)
        .map_err(anyhow::Error::msg)
        .context("credentials")?;
    let region = args.region.clone().unwrap_or_default();
    let endpoint = args
        .endpoint
        .clone()
        .unwrap_or_else(|| client::default_endpoint(&region, args.vpc_endpoint));
    tracing::info!(%endpoint, %region, credentials = %creds.describe(), cluster = %args.cluster(), "ECI client");
    let cloud = Cloud::new(&endpoint, &region, creds, RetryPolicy::default())
        .map_err(anyhow::Error::msg)
        .context("ECI client")?;
    let settings = Settings {
        placement: Placement {
            vswitch_id: args.vswitch_id.clone().unwrap_or_default(),
            security_group_id: args.security_group_id.clone().unwrap_or_default(),
            zone_id: args.zone_id.clone(),
            cluster_id: args.cluster(),
        },
        capacity: args.capacity(),
        full_sync: args.full_sync(),
    };
    let provider = EciProvider::new(cloud, settings);

    // Rebuild state from ECI before serving, so the first WatchPods snapshot is complete.
    match provider.poll().await {
        Ok(pods) => tracing::info!(pods, "state rebuilt from ECI"),
        Err(e) => {
            tracing::warn!(error = %e, "first status poll failed; serving anyway, reporting NotReady");
            provider
                .hub()
                .set_health(status_loop::PollHealth::Failed(e.to_string()));
        }
    }
    // ECI's poll publishes to the hub itself (under the provider's lock), so it has its own loop.
    let poll_loop = provider.clone().poll_forever(args.status_interval());
    Ok((provider, Box::pin(poll_loop)))
}
