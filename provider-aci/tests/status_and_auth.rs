//! provider-aci's status loop, its per-UID ordering and its Azure AD credentials, against the ACI
//! emulator (whose list, like ARM's, carries no instance views):
//! - a container that exits reaches the pod's status (Terminated, exit code, phase);
//! - steady state costs one list per poll and no GET; with refreshes due, at most
//!   `--instance-view-refreshes-per-poll` GETs per poll;
//! - a delete that arrives while the pod's create is still being retried waits for it, so no
//!   group is left behind;
//! - workload identity (federated token file) and managed identity (IMDS) work, a wrong
//!   federated token is refused with Azure AD's reason, and short-lived tokens are renewed
//!   before they expire.

mod support;

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context, ensure};
use podprovider_proto::v1::{
    CreatePodRequest, DeletePodRequest, PodPhase, PodStatus, RestartPolicy, container_state::State,
};
use support::*;
use vk_testkit::{
    aci_emulator::{self, AciEmulator, AciEmulatorOptions},
    process::ManagedProcess,
    provider_calls,
    provider_calls::{Client, connect},
    wait::eventually,
};

async fn listed(c: &Client) -> anyhow::Result<Vec<PodStatus>> {
    let c = c.clone();
    provider_calls::listed(&c, NODE).await
}

async fn all_running(c: &Client, n: usize) -> anyhow::Result<()> {
    eventually(WAIT, &format!("{n} pods Running"), || async {
        let pods = listed(c).await?;
        Ok(
            (pods.len() == n && pods.iter().all(|p| p.phase == PodPhase::Running as i32))
                .then_some(()),
        )
    })
    .await
}

fn ops(stats: &aci_emulator::EmulatorStats) -> BTreeMap<String, u64> {
    stats.ops.clone()
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, op: &str) -> u64 {
    after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_container_exit_reaches_the_pod_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, _provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c = connect(&addr).await?;
    let mut p = pod("job", "job-uid");
    p.restart_policy = RestartPolicy::Never as i32;
    c.clone()
        .create_pod(CreatePodRequest { pod: Some(p) })
        .await?;
    all_running(&c, 1).await?;
    let group = listed(&c).await?[0]
        .cloud_id
        .rsplit('/')
        .next()
        .context("cloud id")?
        .to_owned();
    emu.exit_container(&group, "web", 3).await?;
    // The list does not show the exit; the refresh GET (every 2 s in these tests) does.
    let status = eventually(WAIT, "the pod Failed with exit code 3", || async {
        Ok(listed(&c)
            .await?
            .into_iter()
            .find(|s| s.phase == PodPhase::Failed as i32))
    })
    .await?;
    let state = status.container_statuses[0]
        .state
        .as_ref()
        .and_then(|s| s.state.clone());
    ensure!(
        matches!(&state, Some(State::Terminated(t)) if t.exit_code == 3),
        "{status:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_status_loop_lists_once_per_poll_and_gets_a_bounded_number() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = AciEmulator::start(dir.path(), AciEmulatorOptions::default()).await?;
    let window = Duration::from_secs(3);

    // Refreshes far apart: once the groups are known, a poll is a list and nothing else.
    let (provider, _, addr) = start_provider(
        &emu,
        dir.path(),
        &["--instance-view-refresh-seconds", "600"],
    )
    .await?;
    let c = connect(&addr).await?;
    for i in 0..6 {
        c.clone()
            .create_pod(CreatePodRequest {
                pod: Some(pod(&format!("s-{i}"), &format!("s-uid-{i}"))),
            })
            .await?;
    }
    all_running(&c, 6).await?;
    let before = ops(&emu.stats().await?);
    tokio::time::sleep(window).await;
    let after = ops(&emu.stats().await?);
    let (lists, gets) = (
        delta(&after, &before, "list"),
        delta(&after, &before, "get"),
    );
    // Polls every 0.5 s.
    ensure!((3..=8).contains(&lists), "{lists} lists in {window:?}");
    ensure!(gets == 0, "{gets} GETs in steady state ({lists} lists)");
    drop(provider);

    // Every group due at every poll, at most two GETs per poll.
    let (_provider, _, _) = start_provider(
        &emu,
        dir.path(),
        &[
            "--instance-view-refresh-seconds",
            "0.1",
            "--instance-view-refreshes-per-poll",
            "2",
        ],
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ops(&emu.stats().await?);
    tokio::time::sleep(window).await;
    let after = ops(&emu.stats().await?);
    let (lists, gets) = (
        delta(&after, &before, "list"),
        delta(&after, &before, "get"),
    );
    ensure!(lists >= 3, "{lists} lists in {window:?}");
    ensure!(
        gets > 0 && gets <= 2 * (lists + 1),
        "{gets} GETs for {lists} lists with a budget of 2 per poll"
    );
    Ok(())
}

#[tokio::test]
async fn a_delete_waits_for_the_create_under_way() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default().retry_after_secs(1);
    let (emu, _provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let c = connect(&addr).await?;
    // Every ARM request throttled: the create keeps retrying.
    emu.set_throttle_rate(1.0).await?;
    let create = tokio::spawn({
        let mut c = c.clone();
        async move {
            c.create_pod(CreatePodRequest {
                pod: Some(pod("slow", "slow-uid")),
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delete = tokio::spawn({
        let mut c = c.clone();
        async move {
            c.delete_pod(DeletePodRequest {
                pod_ref: pod("slow", "slow-uid").pod_ref,
                grace_period_seconds: None,
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats = emu.stats().await?;
    ensure!(
        stats.ops.get("delete").copied().unwrap_or(0) == 0,
        "the delete went out before the create finished: {stats:?}"
    );
    emu.set_throttle_rate(0.0).await?;
    create.await??;
    let found = delete.await??.into_inner().found;
    ensure!(found, "the delete did not find the group its create made");
    let stats = emu.stats().await?;
    ensure!(
        stats.created == 1 && stats.deleted == 1 && stats.live == 0,
        "a group is left behind: {stats:?}"
    );
    Ok(())
}

/// The provider with `auth` flags and no client secret in its environment.
async fn start_with_auth(
    emu: &AciEmulator,
    dir: &Path,
    auth: &[String],
) -> anyhow::Result<(ManagedProcess, String)> {
    let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
    let (p, _, addr) = start_provider_with_env(emu, dir, &auth, &[]).await?;
    Ok((p, addr))
}

async fn create_and_delete(addr: &str, name: &str) -> anyhow::Result<()> {
    let mut c = connect(addr).await?;
    c.create_pod(CreatePodRequest {
        pod: Some(pod(name, &format!("{name}-uid"))),
    })
    .await?;
    let found = provider_calls::delete(&c, pod(name, &format!("{name}-uid")).pod_ref, None).await?;
    ensure!(found, "{name}: delete did not find the group");
    Ok(())
}

#[tokio::test]
async fn workload_identity_managed_identity_and_token_renewal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Tokens live 4 s: the provider must renew them before ARM refuses them.
    let emu = AciEmulatorOptions::default()
        .token_lifetime_secs(4)
        .start(dir.path())
        .await?;

    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, aci_emulator::FEDERATED_TOKEN)?;
    let (wi, addr) = start_with_auth(
        &emu,
        dir.path(),
        &[
            "--auth-method=workload-identity".into(),
            format!("--federated-token-file={}", token_file.display()),
        ],
    )
    .await?;
    create_and_delete(&addr, "wi").await?;
    // Polls every 0.5 s across several token lifetimes, and a create at the end.
    tokio::time::sleep(Duration::from_secs(9)).await;
    create_and_delete(&addr, "wi-late").await?;
    let stats = emu.stats().await?;
    ensure!(
        stats.auth_failures == 0,
        "ARM refused a token (not renewed in time?): {stats:?}"
    );
    ensure!(
        wi.log_excerpt(200).contains("workload-identity"),
        "the provider did not say which credential it uses"
    );
    drop(wi);

    let (_mi, addr) =
        start_with_auth(&emu, dir.path(), &["--auth-method=managed-identity".into()]).await?;
    create_and_delete(&addr, "mi").await?;
    ensure!(emu.stats().await?.auth_failures == 0);

    // A federated token Azure AD does not accept: the calls fail with its reason, and nothing is
    // created.
    std::fs::write(&token_file, "not-the-federated-token")?;
    let (_bad, addr) = start_with_auth(
        &emu,
        dir.path(),
        &[
            "--auth-method=workload-identity".into(),
            format!("--federated-token-file={}", token_file.display()),
        ],
    )
    .await?;
    let created_before = emu.stats().await?.created;
    let err = connect(&addr)
        .await?
        .create_pod(CreatePodRequest {
            pod: Some(pod("refused", "refused-uid")),
        })
        .await
        .err()
        .context("a create with a refused federated token succeeded")?;
    ensure!(
        err.message().contains("AADSTS70021"),
        "the error does not give Azure AD's reason: {err:?}"
    );
    ensure!(
        !err.message().contains("not-the-federated-token"),
        "the error shows the token"
    );
    ensure!(emu.stats().await?.created == created_before);
    Ok(())
}
