//! Isolation between clusters sharing one account, region and node name: two providers with
//! different `--cluster-id`s on one emulator each create 50 pods (the count), one is
//! restarted, and each deletes its own pods (and is asked to delete the other's). Counted from
//! the emulator's own state (live groups and the deletion log with tags): neither provider ever
//! adopts, lists or deletes a group of the other cluster.

mod support;

use std::{path::Path, time::Duration};

use anyhow::ensure;
use futures::StreamExt;
use podprovider_proto::v1::{
    CreatePodRequest, DeletePodRequest, pod_provider_client::PodProviderClient,
    watch_pods_event::Event,
};
use support::*;
use vk_testkit::{
    eci_emulator::{EciEmulator, EciEmulatorOptions},
    grpcurl::Target,
    ports::free_port,
    process::ManagedProcess,
    provider_calls, provider_checks,
    wait::eventually,
};

const PODS: usize = 50;

async fn start(
    emu: &EciEmulator,
    cluster: &str,
    dir: &Path,
) -> anyhow::Result<(ManagedProcess, String)> {
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut args = provider_args(emu, &addr);
    args.extend(["--cluster-id".to_owned(), cluster.to_owned()]);
    let dir = dir.join(cluster);
    std::fs::create_dir_all(&dir)?;
    let p = provider_checks::start_provider(
        Path::new(BIN),
        &args,
        &good_env(),
        &Target::Tcp(addr.clone()),
        &dir,
    )
    .await?;
    Ok((p, addr))
}

/// The uid of pod `i` of `cluster`; both clusters use the same pod names on the same node.
fn uid(cluster: &str, i: usize) -> String {
    format!("{cluster}-uid-{i}")
}

async fn listed(addr: &str) -> anyhow::Result<Vec<String>> {
    let c = PodProviderClient::connect(format!("http://{addr}")).await?;
    let pods = provider_calls::listed(&c, NODE).await?;
    let mut uids: Vec<String> = pods
        .into_iter()
        .filter_map(|s| s.pod_ref.map(|r| r.uid))
        .collect();
    uids.sort();
    Ok(uids)
}

async fn live_of(emu: &EciEmulator, cluster: &str) -> anyhow::Result<usize> {
    Ok(emu
        .live_groups()
        .await?
        .iter()
        .filter(|g| g.tag("vk-cluster") == Some(cluster))
        .count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_never_touch_each_others_groups() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    let (mut a, addr_a) = start(&emu, "cluster-a", dir.path()).await?;
    let (b, addr_b) = start(&emu, "cluster-b", dir.path()).await?;
    let result = async {
        for (cluster, addr) in [("cluster-a", &addr_a), ("cluster-b", &addr_b)] {
            let c = PodProviderClient::connect(format!("http://{addr}")).await?;
            for i in 0..PODS {
                c.clone()
                    .create_pod(CreatePodRequest {
                        pod: Some(pod(&format!("p{i}"), &uid(cluster, i))),
                    })
                    .await?;
            }
        }
        ensure!(live_of(&emu, "cluster-a").await? == PODS);
        ensure!(live_of(&emu, "cluster-b").await? == PODS);
        let mine = |cluster: &str| {
            let mut v: Vec<String> = (0..PODS).map(|i| uid(cluster, i)).collect();
            v.sort();
            v
        };
        // Several full syncs (3 s each) pass: neither adopts the other's groups.
        tokio::time::sleep(Duration::from_secs(7)).await;
        ensure!(
            listed(&addr_a).await? == mine("cluster-a"),
            "A lists others"
        );
        ensure!(
            listed(&addr_b).await? == mine("cluster-b"),
            "B lists others"
        );

        // A restarts and rebuilds its state from ECI: only its own 50.
        let status = a.stop(Duration::from_secs(10)).await?;
        ensure!(status.success(), "provider A exited with {status}");
        let (a2, addr_a) = start(&emu, "cluster-a", &dir.path().join("again")).await?;
        let c = PodProviderClient::connect(format!("http://{addr_a}")).await?;
        let mut watch = provider_calls::watch(&c, NODE).await?;
        let mut snapshot = Vec::new();
        while let Some(ev) = watch.next().await {
            match ev?.event {
                Some(Event::Status(s)) => snapshot.extend(s.pod_ref.map(|r| r.uid)),
                Some(Event::Synced(_)) => break,
                _ => {}
            }
        }
        snapshot.sort();
        ensure!(snapshot == mine("cluster-a"), "A adopted {snapshot:?}");

        // A is asked to delete B's pods too (same names, B's UIDs): nothing happens to them.
        for i in 0..PODS {
            let found = provider_calls::delete(
                &c,
                pod(&format!("p{i}"), &uid("cluster-b", i)).pod_ref,
                None,
            )
            .await?;
            ensure!(!found, "A found B's pod {i}");
        }
        for i in 0..PODS {
            let found = provider_calls::delete(
                &c,
                pod(&format!("p{i}"), &uid("cluster-a", i)).pod_ref,
                None,
            )
            .await?;
            ensure!(found, "A did not find its pod {i}");
        }
        ensure!(live_of(&emu, "cluster-a").await? == 0);
        ensure!(live_of(&emu, "cluster-b").await? == PODS);
        // B keeps all 50 through its next full syncs.
        tokio::time::sleep(Duration::from_secs(4)).await;
        ensure!(listed(&addr_b).await? == mine("cluster-b"), "B lost pods");

        let b_client = PodProviderClient::connect(format!("http://{addr_b}")).await?;
        for i in 0..PODS {
            b_client
                .clone()
                .delete_pod(DeletePodRequest {
                    pod_ref: pod(&format!("p{i}"), &uid("cluster-b", i)).pod_ref,
                    grace_period_seconds: None,
                })
                .await?;
        }
        eventually(WAIT, "B's pods gone from B's list", || {
            let addr = addr_b.clone();
            async move { Ok(listed(&addr).await?.is_empty().then_some(())) }
        })
        .await?;

        // The emulator's log: 100 created, 100 deleted, the first 50 all A's, the last 50 all B's.
        let stats = emu.stats().await?;
        ensure!(
            stats.created == 2 * PODS as u64 && stats.deleted == 2 * PODS as u64 && stats.live == 0,
            "{stats:?}"
        );
        let deletions = emu.deletions().await?;
        let (first, last) = deletions.split_at(PODS);
        ensure!(
            first
                .iter()
                .all(|g| g.tag("vk-cluster") == Some("cluster-a"))
                && last
                    .iter()
                    .all(|g| g.tag("vk-cluster") == Some("cluster-b")),
            "deletion order {deletions:?}"
        );
        drop(a2);
        Ok(())
    }
    .await;
    result.map_err(|e| e.context(format!("--- provider B log ---\n{}", b.log_excerpt(40))))
}
