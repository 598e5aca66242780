//! Managed identity against the emulator's IMDS answering "not yet", retried as the managed
//! identity documentation advises (shortened schedule: 50 ms first 404 backoff, 410s for 1.5 s
//! instead of 70 s):
//! - three 410s, then a token: the provider starts ready;
//! - three 404s, then a token: the same; a fourth 404 is given up on and the next poll recovers;
//! - 410s that do not stop are retried for the whole window, then reported (NotReady).

mod support;

use std::time::Duration;

use anyhow::ensure;
use podprovider_proto::{PodProviderClient, v1::CreatePodRequest};
use support::*;
use vk_testkit::{
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    process::ManagedProcess,
    provider_calls::{self, Client},
    wait::eventually,
};

const GONE_SECONDS: f64 = 1.5;

async fn start_mi(
    emu: &AciEmulator,
    dir: &std::path::Path,
) -> anyhow::Result<(ManagedProcess, Client)> {
    let gone = GONE_SECONDS.to_string();
    let (p, _, addr) = start_provider_with_env(
        emu,
        dir,
        &[
            "--auth-method=managed-identity",
            "--imds-retry-base-ms",
            "50",
            "--imds-gone-retry-seconds",
            &gone,
        ],
        &[],
    )
    .await?;
    let c = PodProviderClient::connect(format!("http://{addr}")).await?;
    Ok((p, c))
}

async fn ready(c: &Client) -> anyhow::Result<bool> {
    Ok(provider_calls::ping(c, NODE).await?.ready)
}

#[tokio::test]
async fn imds_not_yet_answers_are_retried_as_documented() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = AciEmulator::start(dir.path(), AciEmulatorOptions::default()).await?;

    // 410s: retried within the window; the first poll (before serving) succeeds.
    emu.set_imds_faults(410, 3).await?;
    let (p, c) = start_mi(&emu, dir.path()).await?;
    ensure!(emu.imds_faults().await? == (0, 3), "410s not all retried");
    ensure!(ready(&c).await?, "not ready after 410s");
    c.clone()
        .create_pod(CreatePodRequest {
            pod: Some(pod("mi", "mi-uid")),
        })
        .await?;
    drop(p);

    // 404s: three retries with backoff are enough.
    emu.set_imds_faults(404, 3).await?;
    let (p, c) = start_mi(&emu, dir.path()).await?;
    ensure!(emu.imds_faults().await? == (0, 6), "404s not all retried");
    ensure!(ready(&c).await?, "not ready after 404s");
    drop(p);

    // A fourth 404 is an answer: the first poll fails, the next one gets a token.
    emu.set_imds_faults(404, 4).await?;
    let (p, c) = start_mi(&emu, dir.path()).await?;
    ensure!(emu.imds_faults().await? == (0, 10));
    let log = p.log_tail(100);
    ensure!(
        log.contains("first status poll failed"),
        "a fourth 404 was retried:\n{log}"
    );
    eventually(WAIT, "ready once IMDS answers", || async {
        Ok(ready(&c).await?.then_some(()))
    })
    .await?;

    // 410s that go on: asked again for the whole window (steps of a seventh), then reported.
    emu.set_imds_faults(410, 1000).await?;
    let started = tokio::time::Instant::now();
    let (_p, c) = start_mi(&emu, dir.path()).await?;
    let (_, served) = emu.imds_faults().await?;
    ensure!(
        started.elapsed() >= Duration::from_secs_f64(GONE_SECONDS),
        "gave up before the window ended"
    );
    ensure!(served - 10 >= 8, "only {} 410s asked about", served - 10);
    ensure!(!ready(&c).await?, "ready without a token");
    emu.set_imds_faults(410, 0).await?;
    eventually(WAIT, "ready once IMDS is back", || async {
        Ok(ready(&c).await?.then_some(()))
    })
    .await?;
    Ok(())
}
