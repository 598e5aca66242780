//! Two clusters in one resource group, against the ACI emulator: providers with different
//! `--cluster-id`s (and the same node name, so only the cluster identity tells them apart) run
//! 50 pods each (issue 20's count); one provider is restarted; all pods are deleted. Neither
//! adopts nor deletes a group of the other, counted from the emulator's own state (live groups
//! and the log of deletions with the deleted groups' tags). A provider of the same cluster
//! serving another node adopts nothing either.

mod support;

use std::{collections::BTreeSet, time::Duration};

use anyhow::ensure;
use futures::{StreamExt, stream};
use podprovider_proto::v1::{CreatePodRequest, PodPhase};
use support::*;
use vk_testkit::{
    aci_emulator::{AciEmulatorOptions, TaggedGroup},
    provider_calls,
    provider_calls::{Client, connect},
    wait::eventually,
};

const N: usize = 50;

/// The UIDs a provider lists for the node, and how many are Running.
async fn listed(c: &Client) -> anyhow::Result<(BTreeSet<String>, usize)> {
    let pods = provider_calls::listed(c, NODE).await?;
    let running = pods
        .iter()
        .filter(|p| p.phase == PodPhase::Running as i32)
        .count();
    let uids = pods
        .into_iter()
        .filter_map(|p| p.pod_ref.map(|r| r.uid))
        .collect();
    Ok((uids, running))
}

fn uids(prefix: &str) -> BTreeSet<String> {
    (0..N).map(|i| format!("{prefix}-uid-{i}")).collect()
}

async fn for_each(
    c: &Client,
    prefix: &str,
    delete: bool,
) -> anyhow::Result<Vec<anyhow::Result<()>>> {
    Ok(stream::iter(0..N)
        .map(|i| {
            let mut c = c.clone();
            let p = pod(&format!("{prefix}-{i}"), &format!("{prefix}-uid-{i}"));
            async move {
                if delete {
                    let found = provider_calls::delete(&c, p.pod_ref, None).await?;
                    ensure!(found, "{prefix}-{i} not found");
                } else {
                    c.create_pod(CreatePodRequest { pod: Some(p) }).await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await)
}

async fn all(c: &Client, prefix: &str, delete: bool) -> anyhow::Result<()> {
    for_each(c, prefix, delete).await?.into_iter().collect()
}

/// Waits until `c` lists exactly `want`, all Running (checking at every look that nothing
/// else ever shows up).
async fn lists_exactly(c: &Client, want: &BTreeSet<String>) -> anyhow::Result<()> {
    eventually(WAIT, "the provider's own pods, Running", || async {
        let (got, running) = listed(c).await?;
        ensure!(
            got.is_subset(want),
            "foreign pods listed: {:?}",
            got.difference(want).collect::<Vec<_>>()
        );
        Ok((got == *want && running == want.len()).then_some(()))
    })
    .await
}

fn of_cluster<'a>(groups: &'a [TaggedGroup], cluster: &str) -> Vec<&'a TaggedGroup> {
    groups
        .iter()
        .filter(|g| g.tags.get("vk-cluster").map(String::as_str) == Some(cluster))
        .collect()
}

#[tokio::test]
async fn two_clusters_in_one_resource_group_never_touch_each_others_groups() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, mut alpha, _, a_addr) =
        start_with_emulator(dir.path(), opts, &["--cluster-id", "alpha"]).await?;
    let (_beta, _, b_addr) = start_provider(&emu, dir.path(), &["--cluster-id", "beta"]).await?;
    let a = connect(&a_addr).await?;
    let b = connect(&b_addr).await?;
    let (a_uids, b_uids) = (uids("a"), uids("b"));

    let (ra, rb) = tokio::join!(all(&a, "a", false), all(&b, "b", false));
    ra?;
    rb?;
    lists_exactly(&a, &a_uids).await?;
    lists_exactly(&b, &b_uids).await?;
    let live = emu.live_groups().await?;
    ensure!(live.len() == 2 * N, "{} groups live", live.len());
    ensure!(of_cluster(&live, "alpha").len() == N && of_cluster(&live, "beta").len() == N);

    // Restarted, alpha rebuilds its own pods only, and creates nothing.
    let status = alpha.stop(Duration::from_secs(10)).await?;
    ensure!(status.success(), "alpha exited with {status}");
    let (_alpha, _, a_addr) = start_provider(&emu, dir.path(), &["--cluster-id", "alpha"]).await?;
    let a = connect(&a_addr).await?;
    let (got, _) = listed(&a).await?;
    ensure!(got == a_uids, "alpha after restart lists {got:?}");
    let stats = emu.stats().await?;
    ensure!(stats.created == 2 * N as u64, "{stats:?}");

    // Asked to delete one of beta's pods (the name is derived from the pod), alpha finds
    // nothing of its own and deletes nothing.
    let theirs = pod("b-0", "b-uid-0").pod_ref;
    let found = provider_calls::delete(&a, theirs, None).await?;
    ensure!(!found, "alpha claimed beta's pod");
    ensure!(emu.deleted_groups().await?.is_empty(), "something deleted");

    // Same cluster, another node: nothing to adopt, and pods of our node are refused.
    let (_other, _, o_addr) = start_provider(
        &emu,
        dir.path(),
        &["--cluster-id", "alpha", "--node-name", "vk-other"],
    )
    .await?;
    let o = connect(&o_addr).await?;
    let (got, _) = listed(&o).await?;
    ensure!(got.is_empty(), "the other node's provider adopted {got:?}");
    let refused = o
        .clone()
        .create_pod(CreatePodRequest {
            pod: Some(pod("x", "x-uid")),
        })
        .await
        .err()
        .map(|s| s.code());
    ensure!(refused == Some(tonic::Code::InvalidArgument), "{refused:?}");

    // Alpha deletes its pods: exactly its N groups go, beta's N stay and stay Running.
    all(&a, "a", true).await?;
    eventually(WAIT, "alpha's pods gone", || async {
        Ok(listed(&a).await?.0.is_empty().then_some(()))
    })
    .await?;
    let deleted = emu.deleted_groups().await?;
    ensure!(
        deleted.len() == N && of_cluster(&deleted, "alpha").len() == N,
        "deleted: {deleted:?}"
    );
    let live = emu.live_groups().await?;
    ensure!(
        live.len() == N && of_cluster(&live, "beta").len() == N,
        "live: {live:?}"
    );
    lists_exactly(&b, &b_uids).await?;

    // Beta deletes its own.
    all(&b, "b", true).await?;
    eventually(WAIT, "beta's pods gone", || async {
        Ok(listed(&b).await?.0.is_empty().then_some(()))
    })
    .await?;
    let deleted = emu.deleted_groups().await?;
    ensure!(
        deleted.len() == 2 * N && of_cluster(&deleted[N..], "beta").len() == N,
        "deleted: {deleted:?}"
    );
    let stats = emu.stats().await?;
    ensure!(
        stats.live == 0 && stats.deleted == 2 * N as u64,
        "{stats:?}"
    );
    Ok(())
}
