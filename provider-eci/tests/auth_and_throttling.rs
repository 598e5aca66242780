//! Credentials and throttling against the ECI emulator:
//! - a provider with a wrong AccessKey secret has its calls rejected, and CreatePod surfaces
//!   UNAVAILABLE (the code every provider gives rejected credentials, PROTOCOL.md §8) naming
//!   `SignatureDoesNotMatch`, without the secret;
//! - STS credentials (key, secret and security token) are accepted;
//! - with 20 % of calls throttled (`Throttling.User`), 50 creates and 50 deletes make exactly 50
//!   groups and delete exactly 50 (retries with backoff; ClientToken keeps creates idempotent).

mod support;

use std::time::Duration;

use anyhow::ensure;
use podprovider_proto::v1::{
    CreatePodRequest, DeletePodRequest, PodPhase, pod_provider_client::PodProviderClient,
};
use support::*;
use vk_testkit::{
    eci_emulator::{self, EciEmulator, EciEmulatorOptions},
    provider_calls,
    wait::eventually,
};

async fn client(addr: &str) -> anyhow::Result<PodProviderClient<tonic::transport::Channel>> {
    Ok(PodProviderClient::connect(format!("http://{addr}")).await?)
}

#[tokio::test]
async fn a_wrong_secret_is_rejected_with_a_clear_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    let wrong_secret = "NotTheRightSecret0000000000000000";
    let env = vec![
        (
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            eci_emulator::ACCESS_KEY_ID.to_owned(),
        ),
        ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", wrong_secret.to_owned()),
    ];
    let (provider, _, addr) = start_provider_with(&emu, &env, dir.path()).await?;
    let mut c = client(&addr).await?;
    let err = c
        .create_pod(CreatePodRequest {
            pod: Some(pod("web", "uid-auth")),
        })
        .await
        .expect_err("a create with a wrong secret must fail");
    ensure!(err.code() == tonic::Code::Unavailable, "{err:?}");
    ensure!(
        err.message().contains("SignatureDoesNotMatch"),
        "{}",
        err.message()
    );
    ensure!(
        !err.message().contains(wrong_secret),
        "the secret is in the error"
    );
    let stats = emu.stats().await?;
    ensure!(stats.auth_failures > 0 && stats.created == 0, "{stats:?}");
    // Ping reports the failing status poll.
    let ping = c
        .ping(podprovider_proto::v1::PingRequest {
            node_name: NODE.into(),
        })
        .await?
        .into_inner();
    ensure!(
        !ping.ready && ping.message.contains("SignatureDoesNotMatch"),
        "{ping:?}"
    );
    let log = std::fs::read_to_string(provider.log_path())?;
    ensure!(
        !log.contains(wrong_secret),
        "the secret is in the provider's log"
    );
    Ok(())
}

#[tokio::test]
async fn sts_credentials_work() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    let env = vec![
        (
            "ALIBABA_CLOUD_ACCESS_KEY_ID",
            eci_emulator::STS_ACCESS_KEY_ID.to_owned(),
        ),
        (
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            eci_emulator::STS_ACCESS_KEY_SECRET.to_owned(),
        ),
        (
            "ALIBABA_CLOUD_SECURITY_TOKEN",
            eci_emulator::STS_TOKEN.to_owned(),
        ),
    ];
    let (provider, _, addr) = start_provider_with(&emu, &env, dir.path()).await?;
    let mut c = client(&addr).await?;
    c.create_pod(CreatePodRequest {
        pod: Some(pod("web", "uid-sts")),
    })
    .await?;
    ensure!(emu.stats().await?.created == 1);
    let log = std::fs::read_to_string(provider.log_path())?;
    ensure!(
        !log.contains(eci_emulator::STS_TOKEN),
        "the token is in the provider's log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_lost_answers_at_20_percent_create_and_delete_exactly_50()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // One call in five throttled; of the creates and deletes that go through, one in five loses
    // its answer after taking effect, so the retry must not make a second group (ClientToken)
    // nor fail the delete.
    let opts = EciEmulatorOptions::default()
        .throttle_rate(0.2)
        .lost_answer_rate(0.2);
    let (emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let result = async {
        let c = client(&addr).await?;
        let creates = (0..50).map(|i| {
            let mut c = c.clone();
            async move {
                c.create_pod(CreatePodRequest {
                    pod: Some(pod(&format!("p{i}"), &format!("uid-{i}"))),
                })
                .await
            }
        });
        for r in futures::future::join_all(creates).await {
            r?;
        }
        let stats = emu.stats().await?;
        ensure!(stats.created == 50 && stats.live == 50, "{stats:?}");
        ensure!(stats.throttled > 0, "nothing was throttled: {stats:?}");
        ensure!(stats.lost_answers > 0, "no answer was lost: {stats:?}");
        let attempts = stats
            .actions
            .get("CreateContainerGroup")
            .copied()
            .unwrap_or(0);
        ensure!(attempts > 50, "creates were not retried: {stats:?}");
        // All of them reach Running through the (throttled) status poll.
        eventually(Duration::from_secs(90), "50 pods Running", || {
            let c = c.clone();
            async move {
                let pods = provider_calls::listed(&c, NODE).await?;
                Ok(
                    (pods.len() == 50 && pods.iter().all(|p| p.phase == PodPhase::Running as i32))
                        .then_some(()),
                )
            }
        })
        .await?;
        let deletes = (0..50).map(|i| {
            let mut c = c.clone();
            async move {
                c.delete_pod(DeletePodRequest {
                    pod_ref: pod(&format!("p{i}"), &format!("uid-{i}")).pod_ref,
                    grace_period_seconds: None,
                })
                .await
            }
        });
        for r in futures::future::join_all(deletes).await {
            ensure!(r?.into_inner().found, "a delete did not find its group");
        }
        let stats = emu.stats().await?;
        ensure!(
            stats.created == 50 && stats.deleted == 50 && stats.live == 0,
            "{stats:?}"
        );
        let c = c.clone();
        let left = provider_calls::listed(&c, NODE).await?;
        ensure!(left.is_empty(), "{} pods still listed", left.len());
        Ok(())
    }
    .await;
    result.map_err(|e| {
        e.context(format!(
            "--- provider log ---\n{}",
            provider.log_excerpt(40)
        ))
    })
}
