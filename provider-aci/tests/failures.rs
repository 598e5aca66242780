//! Failures as ACI reports them, against the ACI emulator's fault knobs:
//! - the REST reference's failed group (ContainerGroupsGet_Failed: provisioningState `Failed`,
//!   a group-level `FailedMount` event of type `Normal`) fails the pod with that message;
//! - a `Canceled` group fails the pod;
//! - a malformed group someone else put in the resource group is skipped: the poll stays
//!   healthy and our pods' statuses keep moving.

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use podprovider_proto::v1::{CreatePodRequest, Pod, PodPhase, PodStatus};
use support::*;
use vk_testkit::{
    aci_emulator::AciEmulatorOptions,
    provider_calls::{self, Client, connect, status_until},
};

async fn create(c: &Client, p: &Pod) -> anyhow::Result<()> {
    let mut c = c.clone();
    c.create_pod(CreatePodRequest {
        pod: Some(p.clone()),
    })
    .await?;
    Ok(())
}

fn group_name(s: &PodStatus) -> anyhow::Result<String> {
    s.cloud_id
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .context("status without a cloud id")
}

fn is(phase: PodPhase) -> impl Fn(&PodStatus) -> bool {
    move |s| s.phase == phase as i32
}

#[tokio::test]
async fn failed_and_canceled_groups_fail_their_pods_with_acis_words() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, _provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c = connect(&addr).await?;

    let mount = pod("mount", "mount-uid");
    let cancel = pod("cancel", "cancel-uid");
    create(&c, &mount).await?;
    create(&c, &cancel).await?;
    let m = status_until(&c, &mount.pod_ref, "mount Running", is(PodPhase::Running)).await?;
    let k = status_until(&c, &cancel.pod_ref, "cancel Running", is(PodPhase::Running)).await?;

    // The reference's example event, word for word (type Normal, not Warning).
    emu.fault_group(
        &group_name(&m)?,
        "Failed",
        serde_json::json!([{
            "name": "FailedMount",
            "type": "Normal",
            "message": "Output: mount error(2): Permission denied"
        }]),
    )
    .await?;
    emu.fault_group(&group_name(&k)?, "Canceled", serde_json::json!([]))
        .await?;

    let m = status_until(&c, &mount.pod_ref, "mount Failed", is(PodPhase::Failed)).await?;
    ensure!(m.reason == "ProviderFailed", "{m:?}");
    ensure!(
        m.message
            == "ACI reports the container group Failed: FailedMount: Output: mount error(2): Permission denied",
        "{m:?}"
    );
    let k = status_until(&c, &cancel.pod_ref, "cancel Failed", is(PodPhase::Failed)).await?;
    ensure!(k.reason == "ProviderFailed", "{k:?}");
    ensure!(k.message.contains("Canceled"), "{k:?}");
    Ok(())
}

#[tokio::test]
async fn a_malformed_foreign_group_never_stops_the_poll() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, _provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c = connect(&addr).await?;
    let ours = pod("ours", "ours-uid");
    create(&c, &ours).await?;
    let s = status_until(&c, &ours.pod_ref, "ours Running", is(PodPhase::Running)).await?;

    // Someone else's group in our resource group, in a shape no container group has.
    emu.put_raw_group(
        "foreign-bad",
        serde_json::json!({
            "id": "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/vk-rg/providers/Microsoft.ContainerInstance/containerGroups/foreign-bad",
            "name": "foreign-bad",
            "tags": {"owner": "someone-else"},
            "properties": {"provisioningState": 42, "containers": "not a list"}
        }),
    )
    .await?;

    // Ours still moves: an exit and restart (seen through a GET), and a new pod comes up.
    emu.exit_container(&group_name(&s)?, "web", 1).await?;
    status_until(&c, &ours.pod_ref, "the restart seen", |s| {
        s.container_statuses
            .first()
            .is_some_and(|c| c.restart_count >= 1)
    })
    .await?;
    let later = pod("later", "later-uid");
    create(&c, &later).await?;
    status_until(&c, &later.pod_ref, "later Running", is(PodPhase::Running)).await?;
    // And the poll itself is healthy over several intervals (0.5 s each).
    for _ in 0..4 {
        let ping = provider_calls::ping(&c, NODE).await?;
        ensure!(ping.ready, "poll unhealthy: {ping:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
