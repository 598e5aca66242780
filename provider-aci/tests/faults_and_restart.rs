//! Throttling and restarts against the ACI emulator:
//! - with 20 % of ARM requests answered 429 + Retry-After, 50 creates and 50 deletes create
//!   exactly 50 container groups and delete exactly 50;
//! - a provider restarted under running pods rebuilds them from the groups' tags, creates
//!   nothing, and still tells an unchanged pod from a changed one in UpdatePod.

mod support;

use std::time::Duration;

use anyhow::ensure;
use podprovider_proto::v1::{PodPhase, UpdatePodRequest};
use support::*;
use vk_testkit::{
    aci_emulator::AciEmulatorOptions,
    provider_calls::{self, Client, connect},
    provider_checks::numbered_pods,
    wait::eventually,
};

async fn running(c: &Client) -> anyhow::Result<usize> {
    Ok(provider_calls::listed(c, NODE)
        .await?
        .iter()
        .filter(|p| p.phase == PodPhase::Running as i32)
        .count())
}

#[tokio::test]
async fn twenty_percent_throttling_creates_and_deletes_exactly_fifty_groups() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default()
        .throttle_rate(0.2)
        .retry_after_secs(1);
    let (emu, _provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c = connect(&addr).await?;
    let pods = numbered_pods(NODE, 50, "t");
    provider_calls::create_all(&c, pods.clone()).await?;
    eventually(Duration::from_secs(120), "50 pods Running", || {
        let c = c.clone();
        async move { Ok((running(&c).await? == 50).then_some(())) }
    })
    .await?;
    provider_calls::delete_all(&c, pods.into_iter().filter_map(|p| p.pod_ref)).await?;
    provider_calls::wait_none_listed(&c, NODE, Duration::from_secs(120)).await?;
    let stats = emu.stats().await?;
    ensure!(
        stats.created == 50,
        "{} groups created: {stats:?}",
        stats.created
    );
    ensure!(
        stats.deleted == 50,
        "{} groups deleted: {stats:?}",
        stats.deleted
    );
    ensure!(stats.live == 0, "{stats:?}");
    ensure!(
        stats.throttled > 10,
        "only {} requests throttled",
        stats.throttled
    );
    ensure!(stats.auth_failures == 0, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn restart_under_running_pods_adopts_them_and_creates_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, mut provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c = connect(&addr).await?;
    provider_calls::create_all(&c, numbered_pods(NODE, 10, "r")).await?;
    eventually(WAIT, "10 pods Running", || {
        let c = c.clone();
        async move { Ok((running(&c).await? == 10).then_some(())) }
    })
    .await?;
    let status = provider.stop(Duration::from_secs(10)).await?;
    ensure!(status.success(), "provider exited with {status}");

    let (_provider, _, addr) = start_provider(&emu, dir.path(), &[]).await?;
    let mut c = connect(&addr).await?;
    // State is rebuilt before the provider serves: the first answer is complete. The shim's
    // retried create of a running pod is answered from the adopted state.
    provider_calls::check_rebuilt_then_create(&c, NODE, 10, pod("r-3", "r-uid-3")).await?;
    let stats = emu.stats().await?;
    ensure!(stats.created == 10 && stats.live == 10, "{stats:?}");
    // An adopted pod is recognised from its group's spec-hash tag: the same pod is an update
    // with nothing to do; a new image is one ACI cannot make in place.
    c.update_pod(UpdatePodRequest {
        pod: Some(pod("r-4", "r-uid-4")),
    })
    .await?;
    let mut changed = pod("r-4", "r-uid-4");
    changed.containers[0].image = "nginx:1.26".into();
    let err = c
        .update_pod(UpdatePodRequest { pod: Some(changed) })
        .await
        .err()
        .map(|s| s.code());
    ensure!(err == Some(tonic::Code::Unimplemented), "{err:?}");
    Ok(())
}
