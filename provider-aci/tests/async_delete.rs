//! ContainerGroups_Delete as the long-running operation the REST reference declares, through the
//! emulator's async-delete knob: DELETE answers 202 with an `Azure-AsyncOperation` URL and the
//! group stays listed (`Deleting`) until the operation ends.
//! - the pod is reported deleted once the group is gone, and the operation was asked about;
//! - an operation that ends `Failed` makes the provider DELETE again, and the group goes.

mod support;

use anyhow::ensure;
use podprovider_proto::{
    PodProviderClient,
    v1::{CreatePodRequest, PodPhase},
};
use serde_json::json;
use support::*;
use vk_testkit::{
    aci_emulator::AciEmulatorOptions,
    provider_calls::{self, Client},
    wait::eventually,
};

async fn listed(c: &Client) -> anyhow::Result<Vec<(String, i32)>> {
    Ok(provider_calls::listed(c, NODE)
        .await?
        .into_iter()
        .filter_map(|p| p.pod_ref.map(|r| (r.uid, p.phase)))
        .collect())
}

async fn create_running(c: &Client, name: &str, uid: &str) -> anyhow::Result<()> {
    c.clone()
        .create_pod(CreatePodRequest {
            pod: Some(pod(name, uid)),
        })
        .await?;
    eventually(WAIT, "the pod Running", || async {
        Ok(listed(c)
            .await?
            .iter()
            .any(|(u, phase)| u == uid && *phase == PodPhase::Running as i32)
            .then_some(()))
    })
    .await
}

async fn delete(c: &Client, name: &str, uid: &str) -> anyhow::Result<bool> {
    let mut p = pod(name, uid);
    provider_calls::delete(c, p.pod_ref.take(), None).await
}

async fn gone(c: &Client, uid: &str) -> anyhow::Result<()> {
    eventually(WAIT, "the pod gone from ListPods", || async {
        Ok((!listed(c).await?.iter().any(|(u, _)| u == uid)).then_some(()))
    })
    .await
}

#[tokio::test]
async fn accepted_deletes_are_followed_to_their_end() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, _provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c: Client = PodProviderClient::connect(format!("http://{addr}")).await?;
    let status = admin_put(
        &emu,
        "/_emulator/async-delete",
        &json!({"enabled": true, "delay_ms": 1500}),
    )
    .await?;
    ensure!(status == 204, "knob: {status}");

    // 202: accepted, still listed as Deleting for a while, then gone.
    create_running(&c, "a", "a-uid").await?;
    ensure!(
        delete(&c, "a", "a-uid").await?,
        "found = false for an accepted delete"
    );
    let listed_meanwhile = emu.live_groups().await?.len();
    ensure!(
        listed_meanwhile == 1,
        "the group went at once: {listed_meanwhile}"
    );
    gone(&c, "a-uid").await?;
    ensure!(emu.deleted_groups().await?.len() == 1);
    let ops = emu.stats().await?.ops;
    ensure!(
        ops.get("operation").copied().unwrap_or(0) >= 1,
        "the operation URL was never asked: {ops:?}"
    );
    ensure!(ops.get("delete").copied() == Some(1), "{ops:?}");

    // The next operation fails: the provider asks ACI again, and the group goes.
    admin_put(
        &emu,
        "/_emulator/async-delete",
        &json!({"enabled": true, "delay_ms": 300, "fail": 1}),
    )
    .await?;
    create_running(&c, "b", "b-uid").await?;
    ensure!(delete(&c, "b", "b-uid").await?);
    gone(&c, "b-uid").await?;
    ensure!(emu.deleted_groups().await?.len() == 2);
    let ops = emu.stats().await?.ops;
    ensure!(
        ops.get("delete").copied() == Some(3),
        "one DELETE for a, two for b: {ops:?}"
    );
    Ok(())
}
