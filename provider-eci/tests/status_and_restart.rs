//! Status mapping and recovery against the ECI emulator:
//! - a container that exits 3 under `Never` makes the pod Failed with the container Terminated
//!   (exit code 3); under `OnFailure` it restarts (restart count 1, last state Terminated 3) and the
//!   pod stays Running; all containers exiting 0 under `Never` is Succeeded;
//! - a restarted provider adopts the groups it finds by tag (nothing re-created), reports them in
//!   its first WatchPods snapshot, and deletes them.

mod support;

use std::time::Duration;

use anyhow::ensure;
use futures::StreamExt;
use podprovider_proto::v1::{
    ContainerStatus, CreatePodRequest, PodPhase, PodStatus, RestartPolicy, container_state,
    pod_provider_client::PodProviderClient, watch_pods_event::Event,
};
use support::*;
use vk_testkit::{
    eci_emulator::EciEmulatorOptions,
    provider_calls::{self, Client},
};

fn terminated_code(c: &ContainerStatus) -> Option<i32> {
    match c.state.as_ref()?.state.as_ref()? {
        container_state::State::Terminated(t) => Some(t.exit_code),
        _ => None,
    }
}

async fn until(
    c: &Client,
    name: &str,
    uid: &str,
    what: &str,
    ok: impl Fn(&PodStatus) -> bool,
) -> anyhow::Result<PodStatus> {
    provider_calls::status_until(c, &pod(name, uid).pod_ref, what, ok).await
}

fn group_id(s: &PodStatus) -> String {
    s.cloud_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_restarts_and_phases() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = EciEmulatorOptions::default();
    let (emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let result = async {
        let c = PodProviderClient::connect(format!("http://{addr}")).await?;
        for (name, uid, policy) in [
            ("never", "uid-never", RestartPolicy::Never),
            ("onfail", "uid-onfail", RestartPolicy::OnFailure),
            ("done", "uid-done", RestartPolicy::Never),
        ] {
            let mut p = pod(name, uid);
            p.restart_policy = policy as i32;
            c.clone()
                .create_pod(CreatePodRequest { pod: Some(p) })
                .await?;
        }
        let running = |s: &PodStatus| s.phase == PodPhase::Running as i32;
        let never = until(&c, "never", "uid-never", "never Running", running).await?;
        let onfail = until(&c, "onfail", "uid-onfail", "onfail Running", running).await?;
        let done = until(&c, "done", "uid-done", "done Running", running).await?;

        emu.exit_container(&group_id(&never), "web", 3).await?;
        let s = until(&c, "never", "uid-never", "never Failed", |s| {
            s.phase == PodPhase::Failed as i32
        })
        .await?;
        ensure!(
            terminated_code(&s.container_statuses[0]) == Some(3),
            "{s:?}"
        );

        emu.exit_container(&group_id(&onfail), "web", 3).await?;
        let s = until(&c, "onfail", "uid-onfail", "onfail restarted", |s| {
            s.container_statuses
                .first()
                .is_some_and(|c| c.restart_count == 1)
        })
        .await?;
        ensure!(s.phase == PodPhase::Running as i32, "{s:?}");
        let last = s.container_statuses[0]
            .last_state
            .as_ref()
            .and_then(|l| l.state.as_ref());
        ensure!(
            matches!(last, Some(container_state::State::Terminated(t)) if t.exit_code == 3),
            "last state {last:?}"
        );

        emu.exit_container(&group_id(&done), "web", 0).await?;
        let s = until(&c, "done", "uid-done", "done Succeeded", |s| {
            s.phase == PodPhase::Succeeded as i32
        })
        .await?;
        ensure!(
            terminated_code(&s.container_statuses[0]) == Some(0),
            "{s:?}"
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
async fn a_restarted_provider_adopts_its_groups() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = EciEmulatorOptions::default();
    let (emu, mut first, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let c = PodProviderClient::connect(format!("http://{addr}")).await?;
    for i in 0..5 {
        c.clone()
            .create_pod(CreatePodRequest {
                pod: Some(pod(&format!("r{i}"), &format!("uid-r{i}"))),
            })
            .await?;
    }
    let status = first.stop(Duration::from_secs(10)).await?;
    ensure!(status.success(), "provider exited with {status}");

    let (second, _, addr) = start_provider(&emu, dir.path()).await?;
    let result = async {
        let mut c = PodProviderClient::connect(format!("http://{addr}")).await?;
        // The first snapshot already has all five (state rebuilt before serving).
        let mut watch = provider_calls::watch(&c, NODE).await?;
        let mut seen = 0;
        while let Some(ev) = watch.next().await {
            match ev?.event {
                Some(Event::Status(_)) => seen += 1,
                Some(Event::Synced(_)) => break,
                _ => {}
            }
        }
        ensure!(seen == 5, "snapshot had {seen} pods");
        for i in 0..5 {
            until(
                &c,
                &format!("r{i}"),
                &format!("uid-r{i}"),
                "adopted pod Running",
                |s| s.phase == PodPhase::Running as i32,
            )
            .await?;
        }
        // A create retried after the restart is the same group.
        c.create_pod(CreatePodRequest {
            pod: Some(pod("r0", "uid-r0")),
        })
        .await?;
        ensure!(emu.stats().await?.created == 5, "{:?}", emu.stats().await?);
        for i in 0..5 {
            let found = provider_calls::delete(
                &c,
                pod(&format!("r{i}"), &format!("uid-r{i}")).pod_ref,
                None,
            )
            .await?;
            ensure!(found, "r{i} not found after the restart");
        }
        let stats = emu.stats().await?;
        ensure!(
            stats.created == 5 && stats.deleted == 5 && stats.live == 0,
            "{stats:?}"
        );
        Ok(())
    }
    .await;
    result.map_err(|e| e.context(format!("--- provider log ---\n{}", second.log_excerpt(40))))
}
