//! ARM list paging against the emulator: with pages of three groups, ten pods are all seen
//! through `nextLink`s (one list request per page); a `nextLink` to another host is refused
//! with a clear error, and nothing is ever sent there.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::ensure;
use futures::{StreamExt, stream};
use podprovider_proto::{
    PodProviderClient,
    v1::{CreatePodRequest, PodPhase},
};
use support::*;
use vk_testkit::{
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    provider_calls::{self, Client},
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
async fn next_links_are_followed_on_the_arm_host_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = AciEmulator::start(dir.path(), AciEmulatorOptions::default()).await?;
    emu.set_paging(3, None).await?;
    let (_provider, _, addr) = start_provider(&emu, dir.path(), &[]).await?;
    let c: Client = PodProviderClient::connect(format!("http://{addr}")).await?;
    let created: Vec<anyhow::Result<()>> = stream::iter(0..10)
        .map(|i| {
            let mut c = c.clone();
            async move {
                c.create_pod(CreatePodRequest {
                    pod: Some(pod(&format!("p-{i}"), &format!("p-uid-{i}"))),
                })
                .await?;
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<()>>()?;
    eventually(WAIT, "10 pods Running", || async {
        Ok((running(&c).await? == 10).then_some(()))
    })
    .await?;
    // Ten groups in pages of three: four list requests per poll (0.5 s), so at least two
    // polls' worth in 1.2 s (the pods beyond the first page being Running already shows that
    // the links were followed).
    let before = emu.stats().await?.ops.get("list").copied().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let lists = emu.stats().await?.ops.get("list").copied().unwrap_or(0) - before;
    ensure!(lists >= 8, "{lists} list requests in 1.2 s");

    // A nextLink to another host (a listener that counts connections): refused, never called.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let trap_addr = trap.local_addr()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = trap.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    emu.set_paging(3, Some(&format!("http://{trap_addr}")))
        .await?;
    let ping = eventually(WAIT, "the poll refusing the foreign nextLink", || async {
        let p = provider_calls::ping(&c, NODE).await?;
        Ok((!p.ready).then_some(p))
    })
    .await?;
    ensure!(
        ping.message.contains("refusing to follow it") && ping.message.contains("127.0.0.1"),
        "{ping:?}"
    );
    ensure!(
        hits.load(Ordering::Relaxed) == 0,
        "the foreign host was called"
    );
    // Pods keep their last status meanwhile, and the poll recovers with sane links.
    ensure!(running(&c).await? == 10);
    emu.set_paging(3, None).await?;
    eventually(WAIT, "ready again", || async {
        let p = provider_calls::ping(&c, NODE).await?;
        Ok(p.ready.then_some(()))
    })
    .await?;
    Ok(())
}
