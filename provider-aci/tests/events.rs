//! ACI's events as Kubernetes events (`pod_event` on WatchPods), against the emulator:
//! - a new pod's Pulling, Pulled and Started arrive once each (Normal), however many polls;
//! - a container held waiting with a Warning `BackOff` (the emulator's waiting knob) yields one
//!   Warning BackOff, and its restart a second Started;
//! - a group-level `FailedMount` of type Normal (the reference's failed-group example) is
//!   forwarded as a Warning;
//! - a restarted provider forwards none of them again.

mod support;

use parking_lot::Mutex;
use std::{sync::Arc, time::Duration};

use anyhow::{Context, ensure};
use podprovider_proto::{
    PodProviderClient,
    v1::{CreatePodRequest, PodEvent, watch_pods_event::Event as WatchEvent},
};
use serde_json::json;
use support::*;
use tokio_stream::StreamExt;
use vk_testkit::{
    aci_emulator::{AciEmulator, AciEmulatorOptions},
    provider_calls::{self, Client},
    wait::eventually,
};

type Seen = Arc<Mutex<Vec<PodEvent>>>;

/// Collects every pod_event of a WatchPods stream in the background.
async fn watch(c: &Client) -> anyhow::Result<Seen> {
    let mut stream = provider_calls::watch(c, NODE).await?;
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            if let Some(WatchEvent::PodEvent(p)) = e.event {
                sink.lock().push(p);
            }
        }
    });
    Ok(seen)
}

/// (reason, warning) of `uid`'s events that ACI reported (the provider's own are left out).
fn aci_events(seen: &Seen, uid: &str) -> Vec<(String, bool)> {
    seen.lock()
        .iter()
        .filter(|e| e.pod_ref.as_ref().is_some_and(|r| r.uid == uid))
        .filter(|e| e.reason != "ProviderIgnoredSetting" && e.reason != "NoPodIP")
        .map(|e| (e.reason.clone(), e.warning))
        .collect()
}

fn count(events: &[(String, bool)], reason: &str) -> usize {
    events.iter().filter(|(r, _)| r == reason).count()
}

#[tokio::test]
async fn aci_events_reach_the_pod_once_each() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = AciEmulatorOptions::default();
    let (emu, mut provider, _, addr) = start_with_emulator(dir.path(), opts, &[]).await?;
    let result = scenario(&emu, dir.path(), &addr).await;
    provider.stop(Duration::from_secs(10)).await?;
    result.with_context(|| format!("provider log:\n{}", provider.log_tail(40)))
}

async fn scenario(emu: &AciEmulator, dir: &std::path::Path, addr: &str) -> anyhow::Result<()> {
    let c: Client = PodProviderClient::connect(format!("http://{addr}")).await?;
    let seen = watch(&c).await?;
    for (name, uid) in [("ev", "ev-uid"), ("mnt", "mnt-uid")] {
        c.clone()
            .create_pod(CreatePodRequest {
                pod: Some(pod(name, uid)),
            })
            .await?;
    }
    eventually(WAIT, "Pulling, Pulled and Started", || async {
        let ev = aci_events(&seen, "ev-uid");
        Ok(["Pulling", "Pulled", "Started"]
            .iter()
            .all(|r| count(&ev, r) > 0)
            .then_some(()))
    })
    .await?;
    // Several polls and instance-view refreshes (every 2 s here) later: still once each.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ev = aci_events(&seen, "ev-uid");
    for reason in ["Pulling", "Pulled", "Started"] {
        ensure!(count(&ev, reason) == 1, "{reason} not once: {ev:?}");
    }
    ensure!(ev.iter().all(|(_, warning)| !warning), "{ev:?}");

    // A back-off with a Warning event, then a restart.
    let groups = emu.live_groups().await?;
    let group_of = |uid: &str| {
        groups
            .iter()
            .find(|g| g.tags.get("vk-pod-uid").is_some_and(|u| u == uid))
            .map(|g| g.name.clone())
            .context("no group for the pod")
    };
    let ev_group = group_of("ev-uid")?;
    let status = admin_request(
        emu,
        "POST",
        &format!("/_emulator/groups/{ev_group}/containers/web/waiting"),
        &json!({"detail_status": "CrashLoopBackOff", "hold_ms": 1000, "events": [
            {"name": "BackOff", "type": "Warning", "message": "Back-off restarting failed container"}
        ]}),
    )
    .await?;
    ensure!(status == 204, "waiting knob: {status}");
    eventually(WAIT, "BackOff, then a second Started", || async {
        let ev = aci_events(&seen, "ev-uid");
        Ok((count(&ev, "BackOff") == 1 && count(&ev, "Started") == 2).then_some(ev))
    })
    .await
    .and_then(|ev| {
        ensure!(
            ev.contains(&("BackOff".to_owned(), true)),
            "BackOff is a Warning: {ev:?}"
        );
        Ok(())
    })?;

    // The reference's failed group: FailedMount, type Normal, at group level.
    emu.fault_group(
        &group_of("mnt-uid")?,
        "Failed",
        json!([{"name": "FailedMount", "type": "Normal", "message": "Output: mount error(2): Permission denied"}]),
    )
    .await?;
    eventually(WAIT, "FailedMount forwarded", || async {
        let ev = aci_events(&seen, "mnt-uid");
        Ok(ev.contains(&("FailedMount".to_owned(), true)).then_some(()))
    })
    .await?;

    // A restarted provider repeats nothing.
    let before = seen.lock().len();
    let (mut again, _, addr2) = start_provider(emu, dir, &[]).await?;
    let c2: Client = PodProviderClient::connect(format!("http://{addr2}")).await?;
    let seen2 = watch(&c2).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    again.stop(Duration::from_secs(10)).await?;
    let repeated = aci_events(&seen2, "ev-uid");
    let repeated_mnt = aci_events(&seen2, "mnt-uid");
    ensure!(
        repeated.is_empty() && repeated_mnt.is_empty(),
        "a restarted provider forwarded again: {repeated:?} {repeated_mnt:?}"
    );
    ensure!(seen.lock().len() >= before);
    Ok(())
}
