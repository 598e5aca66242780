//! Pod status from the SDK's real fields, against the ECI emulator through the real provider:
//! - init containers show their real states (DescribeContainerGroups'
//!   `InitContainers[].CurrentState`): running while the app container waits, then completed,
//!   or failed with their exit code;
//! - a Failed group's reason and message (its `PodStatus.Conditions`) reach the pod status;
//! - each of ECI's other states, set by the emulator's fault knob, maps to the pod status ECI's
//!   lifecycle guide implies, and its Warning event reaches WatchPods;
//! - DeletePod with grace 0 is `Force=true`: no Terminating phase.

mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use futures::StreamExt;
use podprovider_proto::v1::{
    Container, ContainerStatus, CreatePodRequest, ExecAction, Lifecycle, LifecycleHandler, Pod,
    PodPhase, PodStatus, RestartPolicy, container_state, lifecycle_handler,
    pod_provider_client::PodProviderClient, watch_pods_event::Event,
};
use support::*;
use vk_testkit::{
    eci_emulator::{EciEmulator, EciEmulatorOptions},
    provider_calls::{self, Client},
};

async fn until(
    c: &Client,
    name: &str,
    what: &str,
    ok: impl Fn(&PodStatus) -> bool,
) -> anyhow::Result<PodStatus> {
    let pod_ref = pod(name, &format!("uid-{name}")).pod_ref;
    provider_calls::status_until(c, &pod_ref, what, ok).await
}

fn state(c: &ContainerStatus) -> Option<&container_state::State> {
    c.state.as_ref()?.state.as_ref()
}

fn with_init(name: &str) -> Pod {
    let mut p = pod(name, &format!("uid-{name}"));
    p.restart_policy = RestartPolicy::Never as i32;
    p.init_containers = vec![Container {
        name: "setup".into(),
        image: "busybox".into(),
        ..Default::default()
    }];
    p
}

async fn create(c: &Client, p: Pod) -> anyhow::Result<PodStatus> {
    c.clone()
        .create_pod(CreatePodRequest { pod: Some(p) })
        .await?
        .into_inner()
        .status
        .context("no status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_states_and_failure_reasons_reach_the_pod_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    set_knobs(&emu, serde_json::json!({"hold_init_containers": true})).await?;
    let (provider, _, addr) = start_provider(&emu, dir.path()).await?;
    let result = async {
        let c = PodProviderClient::connect(format!("http://{addr}")).await?;
        let ok = create(&c, with_init("init-ok")).await?.cloud_id;
        let bad = create(&c, with_init("init-bad")).await?.cloud_id;
        let fails = create(&c, pod("fails", "uid-fails")).await?.cloud_id;

        // The init container runs (its real state, not an invented one); the app waits.
        for name in ["init-ok", "init-bad"] {
            let s = until(&c, name, "init container Running", |s| {
                s.init_container_statuses
                    .first()
                    .and_then(state)
                    .is_some_and(|st| matches!(st, container_state::State::Running(_)))
            })
            .await?;
            ensure!(s.phase == PodPhase::Pending as i32, "{s:?}");
            ensure!(
                matches!(
                    s.container_statuses.first().and_then(state),
                    Some(container_state::State::Waiting(_))
                ),
                "{s:?}"
            );
        }

        emu.exit_container(&ok, "setup", 0).await?;
        let s = until(&c, "init-ok", "init-ok Running", |s| {
            s.phase == PodPhase::Running as i32
        })
        .await?;
        ensure!(
            matches!(
                s.init_container_statuses.first().and_then(state),
                Some(container_state::State::Terminated(t)) if t.exit_code == 0 && t.reason == "Completed"
            ),
            "{s:?}"
        );

        emu.exit_container(&bad, "setup", 2).await?;
        let s = until(&c, "init-bad", "init-bad Failed", |s| {
            s.phase == PodPhase::Failed as i32
        })
        .await?;
        ensure!(
            matches!(
                s.init_container_statuses.first().and_then(state),
                Some(container_state::State::Terminated(t)) if t.exit_code == 2 && t.reason == "Error"
            ),
            "{s:?}"
        );
        ensure!(
            s.reason == "ContainersNotInitialized" && s.message.contains("setup"),
            "{s:?}"
        );

        // A Failed group: ECI's reason and message, from its conditions.
        until(&c, "fails", "fails Running", |s| {
            s.phase == PodPhase::Running as i32
        })
        .await?;
        set_group_state(
            &emu,
            &fails,
            "Failed",
            "OOMKilled",
            "the instance ran out of memory",
        )
        .await?;
        let s = until(&c, "fails", "fails Failed", |s| {
            s.phase == PodPhase::Failed as i32
        })
        .await?;
        ensure!(
            s.reason == "OOMKilled" && s.message == "the instance ran out of memory",
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
async fn each_fault_state_maps_to_the_documented_pod_status() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = EciEmulatorOptions::default();
    let (emu, provider, _, addr) = start_with_emulator(dir.path(), opts).await?;
    let result = async {
        let c = PodProviderClient::connect(format!("http://{addr}")).await?;
        let mut watch = provider_calls::watch(&c, NODE).await?;
        // (state, reason the fault gives, phase, pod reason expected)
        let cases = [
            ("Scheduling", "", PodPhase::Pending, ""),
            ("ScheduleFailed", "NoStock", PodPhase::Failed, "NoStock"),
            ("Restarting", "", PodPhase::Running, ""),
            ("Updating", "", PodPhase::Running, ""),
            ("Terminating", "", PodPhase::Running, ""),
            ("Expired", "", PodPhase::Failed, "Expired"),
        ];
        let mut groups = Vec::new();
        for (st, ..) in cases {
            let name = st.to_ascii_lowercase();
            groups.push(
                create(&c, pod(&name, &format!("uid-{name}")))
                    .await?
                    .cloud_id,
            );
        }
        for (st, ..) in cases {
            let name = st.to_ascii_lowercase();
            until(&c, &name, "Running", |s| {
                s.phase == PodPhase::Running as i32
            })
            .await?;
        }
        for ((st, reason, ..), g) in cases.iter().zip(&groups) {
            let message = if reason.is_empty() {
                String::new()
            } else {
                format!("no stock for {st}")
            };
            set_group_state(&emu, g, st, reason, &message).await?;
        }
        // The states that change the phase first; by then the rest have been polled too.
        for (st, reason, phase, pod_reason) in cases {
            let name = st.to_ascii_lowercase();
            if phase == PodPhase::Running {
                continue;
            }
            let s = until(&c, &name, &format!("{st} → {phase:?}"), |s| {
                s.phase == phase as i32 && s.reason == pod_reason
            })
            .await?;
            if !reason.is_empty() {
                ensure!(s.message == format!("no stock for {st}"), "{s:?}");
            }
            if st == "Scheduling" {
                ensure!(
                    matches!(
                        s.container_statuses.first().and_then(state),
                        Some(container_state::State::Waiting(w)) if w.reason == "ContainerCreating"
                    ),
                    "{s:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (st, _, phase, _) in cases {
            let name = st.to_ascii_lowercase();
            let s = provider_calls::status(&c, pod(&name, &format!("uid-{name}")).pod_ref).await?;
            ensure!(s.phase == phase as i32, "{st}: {s:?}");
        }
        // ScheduleFailed's Warning event reaches WatchPods (the full list asks WithEvent).
        let seen = tokio::time::timeout(WAIT, async {
            while let Some(ev) = watch.next().await {
                if let Some(Event::PodEvent(e)) = ev?.event
                    && e.warning
                    && e.reason == "NoStock"
                {
                    return anyhow::Ok(e);
                }
            }
            anyhow::bail!("watch ended")
        })
        .await
        .context("no NoStock warning event")??;
        ensure!(seen.message == "no stock for ScheduleFailed", "{seen:?}");
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
async fn grace_zero_deletes_with_force() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let emu = EciEmulator::start(dir.path(), EciEmulatorOptions::default()).await?;
    set_knobs(&emu, serde_json::json!({"terminating_ms": 20_000})).await?;
    let (provider, _, addr) = start_provider(&emu, dir.path()).await?;
    let result = async {
        let c = PodProviderClient::connect(format!("http://{addr}")).await?;
        let hooked = |name: &str| {
            let mut p = pod(name, &format!("uid-{name}"));
            p.containers[0].lifecycle = Some(Lifecycle {
                post_start: None,
                pre_stop: Some(LifecycleHandler {
                    action: Some(lifecycle_handler::Action::Exec(ExecAction {
                        command: vec!["sleep".into(), "5".into()],
                    })),
                }),
            });
            p
        };
        let graceful = create(&c, hooked("graceful")).await?.cloud_id;
        let now = create(&c, hooked("now")).await?.cloud_id;
        for name in ["graceful", "now"] {
            until(&c, name, "Running", |s| s.phase == PodPhase::Running as i32).await?;
        }
        for (name, grace) in [("graceful", None), ("now", Some(0))] {
            let found =
                provider_calls::delete(&c, pod(name, &format!("uid-{name}")).pod_ref, grace)
                    .await?;
            ensure!(found, "{name}");
        }
        let live = emu.live_groups().await?;
        // Without Force, ECI runs the preStop hook in a Terminating phase; with it, it does not.
        ensure!(
            live.iter()
                .any(|g| g.container_group_id == graceful && g.status == "Terminating"),
            "{live:?}"
        );
        ensure!(
            !live.iter().any(|g| g.container_group_id == now),
            "{live:?}"
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
