//! Credentials without an AccessKey, against the ECI emulator (which also serves STS and the
//! instance metadata service) through the real provider binary:
//! - RRSA: `AssumeRoleWithOIDC` with the role ARN, OIDC provider ARN and a token file; the keys
//!   live 4 s, so a pod's create, status polls and delete over ~10 s need several refreshes, and
//!   the token file, rotated meanwhile, is read again — and no call fails for it;
//! - the RAM role from the instance metadata service, likewise refreshed.

mod support;

use std::time::Duration;

use anyhow::ensure;
use podprovider_proto::v1::{CreatePodRequest, PodPhase, pod_provider_client::PodProviderClient};
use support::*;
use vk_testkit::{
    eci_emulator::{EciEmulator, EciEmulatorOptions},
    provider_calls,
};

/// Runs one pod for `secs` seconds of polling, then deletes it; fails on any error. The tests use
/// 8 s with 4 s credentials: at least three fetches however fast the pod starts (5 s allowed
/// only two when it started at once).
async fn run_a_pod(addr: &str, secs: u64, mut halfway: impl FnMut()) -> anyhow::Result<()> {
    let c = PodProviderClient::connect(format!("http://{addr}")).await?;
    c.clone()
        .create_pod(CreatePodRequest {
            pod: Some(pod("web", "uid-web")),
        })
        .await?;
    let web = pod("web", "uid-web").pod_ref;
    provider_calls::status_until(&c, &web, "pod Running", |s| {
        s.phase == PodPhase::Running as i32
    })
    .await?;
    for i in 0..secs * 2 {
        if i == secs {
            halfway();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ping = provider_calls::ping(&c, NODE).await?;
        ensure!(ping.ready, "provider not ready: {ping:?}");
    }
    let found = provider_calls::delete(&c, pod("web", "uid-web").pod_ref, None).await?;
    ensure!(found, "pod not found at delete");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrsa_credentials_run_a_pod_and_refresh_without_a_failed_call() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    set_knobs(&emu, serde_json::json!({"credential_ttl_ms": 4000})).await?;
    let token = dir.path().join("oidc-token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.first-token.sig")?;
    let env = vec![
        (
            "ALIBABA_CLOUD_ROLE_ARN",
            "acs:ram::1234:role/eci-vk".to_owned(),
        ),
        (
            "ALIBABA_CLOUD_OIDC_PROVIDER_ARN",
            "acs:ram::1234:oidc-provider/ack-rrsa".to_owned(),
        ),
        (
            "ALIBABA_CLOUD_OIDC_TOKEN_FILE",
            token.to_string_lossy().into_owned(),
        ),
        ("ALIBABA_CLOUD_STS_ENDPOINT", emu.endpoint.clone()),
    ];
    let (provider, _, addr) = start_provider_with(&emu, &env, dir.path()).await?;
    let result = async {
        let rotate = || {
            // The kubelet rotates the projected token; the next refresh must use the new one.
            let _ = std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.second-token.sig");
        };
        run_a_pod(&addr, 8, rotate).await?;
        let stats = emu.stats().await?;
        ensure!(stats.auth_failures == 0, "{stats:?}");
        ensure!(stats.created == 1 && stats.deleted == 1, "{stats:?}");
        let raw = emulator_admin(&emu, "GET", "/_emulator/stats", "").await?.1;
        let v: serde_json::Value = serde_json::from_str(&raw)?;
        let issued = v["sts_issued"].as_u64().unwrap_or(0);
        ensure!(issued >= 3, "only {issued} AssumeRoleWithOIDC calls: {v}");
        ensure!(v["oidc_tokens_seen"] == 2, "{v}");
        ensure!(v["expired_keys"] == 0, "{v}");
        let log = provider.log_excerpt(400);
        ensure!(
            !log.contains("first-token") && !log.contains("second-token"),
            "the OIDC token was logged"
        );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ram_role_from_instance_metadata_runs_a_pod_and_refreshes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    set_knobs(
        &emu,
        serde_json::json!({"credential_ttl_ms": 4000, "ram_role": "eci-vk-role"}),
    )
    .await?;
    let env = vec![
        ("ALIBABA_CLOUD_ECS_METADATA", "eci-vk-role".to_owned()),
        ("ECI_METADATA_ENDPOINT", emu.endpoint.clone()),
    ];
    let (provider, _, addr) = start_provider_with(&emu, &env, dir.path()).await?;
    let result = async {
        run_a_pod(&addr, 8, || {}).await?;
        let stats = emu.stats().await?;
        ensure!(stats.auth_failures == 0, "{stats:?}");
        let raw = emulator_admin(&emu, "GET", "/_emulator/stats", "").await?.1;
        let v: serde_json::Value = serde_json::from_str(&raw)?;
        let issued = v["metadata_issued"].as_u64().unwrap_or(0);
        ensure!(issued >= 3, "only {issued} metadata fetches: {v}");
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
