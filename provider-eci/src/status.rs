//! ECI group status → pod status. Pure.
//!
//! Group `Status`: Pending and Scheduling → Pending; Running, Restarting, Updating and
//! Terminating → Running (containers still run or restart in place); Succeeded → Succeeded unless a
//! container ended non-zero; Failed, ScheduleFailed and Expired → Failed, with the reason and
//! message of the group's `PodStatus.Conditions[]` (the SDK has no reason or message elsewhere).
//! App container states come from `PodStatus.ContainerStatuses` (Waiting / Running / Terminated
//! with exit code, signal, reason, restart count; the container id is only in
//! `State.Terminated` / `LastState.Terminated`). DescribeContainerGroupStatus reports no init
//! containers: their states come from DescribeContainerGroups' `InitContainers[].CurrentState`
//! and `PreviousState`.

use podprovider_proto::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStats, ContainerStatus, CpuUsage, MemoryUsage, PodPhase, PodRef, PodStats, PodStatus,
    container_state,
};

use crate::wire;

/// A pod's containers (name, image), in spec order, for statuses ECI has not filled in yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Init containers.
    pub init: Vec<(String, String)>,
    /// App containers.
    pub app: Vec<(String, String)>,
}

/// RFC 3339 → protobuf timestamp.
pub fn ts(s: &str) -> Option<prost_types::Timestamp> {
    if s.is_empty() {
        return None;
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    })
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        state: Some(container_state::State::Waiting(ContainerStateWaiting {
            reason: reason.to_owned(),
            message: message.to_owned(),
        })),
    }
}

fn state(s: &wire::State) -> Option<ContainerState> {
    let state = if let Some(t) = &s.terminated {
        container_state::State::Terminated(ContainerStateTerminated {
            exit_code: t.exit_code,
            signal: t.signal,
            reason: if t.reason.is_empty() {
                if t.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_owned()
            } else {
                t.reason.clone()
            },
            message: t.message.clone(),
            started_at: ts(&t.started_at),
            finished_at: ts(&t.finished_at),
        })
    } else if let Some(r) = &s.running {
        container_state::State::Running(ContainerStateRunning {
            started_at: ts(&r.started_at),
        })
    } else if let Some(w) = &s.waiting {
        container_state::State::Waiting(ContainerStateWaiting {
            reason: w.reason.clone(),
            message: w.message.clone(),
        })
    } else {
        return None;
    };
    Some(ContainerState { state: Some(state) })
}

fn containers(
    spec: &[(String, String)],
    got: &[wire::ContainerStatus],
    default_waiting: &str,
) -> Vec<ContainerStatus> {
    spec.iter()
        .map(|(name, image)| match got.iter().find(|c| &c.name == name) {
            Some(c) => {
                let current = state(&c.state).unwrap_or_else(|| waiting(default_waiting, ""));
                let running = matches!(current.state, Some(container_state::State::Running(_)));
                // The SDK carries the container id only in a Terminated state.
                let container_id = [&c.state, &c.last_state]
                    .into_iter()
                    .filter_map(|s| s.terminated.as_ref())
                    .map(|t| t.container_id.clone())
                    .find(|id| !id.is_empty())
                    .unwrap_or_default();
                ContainerStatus {
                    name: name.clone(),
                    image: image.clone(),
                    image_id: c.image_id.clone(),
                    container_id,
                    ready: c.ready && running,
                    started: c.started.unwrap_or(running),
                    restart_count: c.restart_count,
                    state: Some(current),
                    last_state: state(&c.last_state),
                }
            }
            None => ContainerStatus {
                name: name.clone(),
                image: image.clone(),
                state: Some(waiting(default_waiting, "")),
                ..Default::default()
            },
        })
        .collect()
}

/// A `CurrentState` / `PreviousState` of DescribeContainerGroups as a container state.
fn group_state(s: &wire::GroupContainerState) -> Option<ContainerState> {
    let state = match s.state.as_str() {
        "Running" => container_state::State::Running(ContainerStateRunning {
            started_at: ts(&s.start_time),
        }),
        "Terminated" => container_state::State::Terminated(ContainerStateTerminated {
            exit_code: s.exit_code,
            signal: s.signal,
            reason: if s.reason.is_empty() {
                if s.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_owned()
            } else {
                s.reason.clone()
            },
            message: s.message.clone(),
            started_at: ts(&s.start_time),
            finished_at: ts(&s.finish_time),
        }),
        "Waiting" => container_state::State::Waiting(ContainerStateWaiting {
            reason: s.reason.clone(),
            message: s.message.clone(),
        }),
        _ => return None,
    };
    Some(ContainerState { state: Some(state) })
}

/// Init container statuses from DescribeContainerGroups' `InitContainers[]`; an init container
/// ECI has not described yet waits.
fn init_containers(
    spec: &[(String, String)],
    got: &[wire::GroupContainer],
    default_waiting: &str,
) -> Vec<ContainerStatus> {
    spec.iter()
        .map(|(name, image)| {
            let c = got.iter().find(|c| &c.name == name);
            let current = c
                .and_then(|c| group_state(&c.current_state))
                .unwrap_or_else(|| waiting(default_waiting, ""));
            let running = matches!(current.state, Some(container_state::State::Running(_)));
            ContainerStatus {
                name: name.clone(),
                image: image.clone(),
                ready: c.is_some_and(|c| c.ready) && running,
                started: running,
                restart_count: c.map_or(0, |c| c.restart_count),
                state: Some(current),
                last_state: c.and_then(|c| group_state(&c.previous_state)),
                ..Default::default()
            }
        })
        .collect()
}

/// Condition types a kubelet sets, in the order it sets them: the first that fails is the cause
/// of the later ones.
const KUBELET_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// The reason and message of a group's trouble, from its conditions: the latest failing
/// ECI-specific one (`Unschedulable`, `ContainerInstanceCreated`, `ContainerHasSufficientDisk`:
/// they name the cause), else the first failing kubelet one in the kubelet's order, else any
/// condition that says something.
fn condition_reason(conditions: &[wire::Condition]) -> Option<(String, String)> {
    let says = |c: &&wire::Condition| !c.reason.is_empty() || !c.message.is_empty();
    let failing = |c: &&wire::Condition| says(c) && c.status != "True";
    let own = conditions
        .iter()
        .filter(failing)
        .filter(|c| !KUBELET_CONDITIONS.contains(&c.kind.as_str()))
        .max_by(|a, b| a.last_transition_time.cmp(&b.last_transition_time));
    let pick = own
        .or_else(|| {
            KUBELET_CONDITIONS
                .iter()
                .find_map(|k| conditions.iter().filter(failing).find(|c| c.kind == *k))
        })
        .or_else(|| conditions.iter().find(failing))
        .or_else(|| conditions.iter().rfind(says))?;
    Some((pick.reason.clone(), pick.message.clone()))
}

/// Whether any container has left Waiting.
fn any_started(cs: &[ContainerStatus]) -> bool {
    cs.iter().any(|c| {
        !matches!(
            c.state.as_ref().and_then(|s| s.state.as_ref()),
            Some(container_state::State::Waiting(_)) | None
        )
    })
}

fn exited_nonzero(cs: &[ContainerStatus]) -> bool {
    cs.iter().any(|c| {
        matches!(
            c.state.as_ref().and_then(|s| s.state.as_ref()),
            Some(container_state::State::Terminated(t)) if t.exit_code != 0
        )
    })
}

/// The pod status for one `DescribeContainerGroupStatus` entry, with the group's init
/// containers as DescribeContainerGroups last described them (`init`).
pub fn pod_status(
    pod_ref: &PodRef,
    shape: &Shape,
    g: &wire::GroupStatus,
    init: &[wire::GroupContainer],
) -> PodStatus {
    let ps = &g.pod_status;
    let scheduling = matches!(g.status.as_str(), "Pending" | "Scheduling" | "");
    let default_waiting = if scheduling {
        "ContainerCreating"
    } else {
        "Waiting"
    };
    let app = containers(&shape.app, &ps.container_statuses, default_waiting);
    let init = init_containers(
        &shape.init,
        init,
        if shape.init.is_empty() {
            default_waiting
        } else {
            "PodInitializing"
        },
    );
    let why = condition_reason(&ps.conditions);
    let failed = |status: &str, default: &str| match &why {
        Some((r, m)) => (
            PodPhase::Failed,
            if r.is_empty() {
                status.to_owned()
            } else {
                r.clone()
            },
            if m.is_empty() {
                default.to_owned()
            } else {
                m.clone()
            },
        ),
        None => (PodPhase::Failed, status.to_owned(), default.to_owned()),
    };
    let (phase, reason, message) = match g.status.as_str() {
        "Pending" | "Scheduling" => (PodPhase::Pending, String::new(), String::new()),
        "Running" | "Restarting" | "Updating" | "Terminating" => {
            // A group whose app containers all still wait (image pull, init containers) is
            // Pending in Kubernetes terms.
            if any_started(&app) || ps.phase == "Running" {
                (PodPhase::Running, String::new(), String::new())
            } else {
                (PodPhase::Pending, String::new(), String::new())
            }
        }
        "Succeeded" if exited_nonzero(&app) => (
            PodPhase::Failed,
            "Error".to_owned(),
            "a container exited with a non-zero code".to_owned(),
        ),
        "Succeeded" => (PodPhase::Succeeded, String::new(), String::new()),
        "Failed" => failed("Failed", "ECI reports the container group Failed"),
        "ScheduleFailed" => failed(
            "ScheduleFailed",
            "ECI could not schedule the container group (no stock in the zone, or a bad vSwitch or security group)",
        ),
        "Expired" => failed(
            "Expired",
            "the ECI instance expired (spot instance reclaimed or its deadline passed)",
        ),
        other => (
            PodPhase::Unknown,
            "UnknownECIStatus".to_owned(),
            format!("ECI reports status {other:?}"),
        ),
    };
    let mut pod_ips: Vec<String> = ps
        .pod_ips
        .iter()
        .filter_map(|p| valid_ip(pod_ref, &p.ip))
        .collect();
    if pod_ips.is_empty()
        && let Some(ip) = valid_ip(pod_ref, &ps.pod_ip)
    {
        pod_ips.push(ip);
    }
    PodStatus {
        pod_ref: Some(pod_ref.clone()),
        phase: phase as i32,
        reason,
        message,
        pod_ip: pod_ips.first().cloned().unwrap_or_default(),
        pod_ips,
        start_time: ts(&ps.start_time),
        init_container_statuses: init,
        container_statuses: app,
        cloud_id: g.container_group_id.clone(),
    }
}

/// `ip` when it is an address: a malformed one in `podIPs` makes the API server refuse the whole
/// status update, so it is dropped (with a warning; an empty one just means none yet).
fn valid_ip(pod_ref: &PodRef, ip: &str) -> Option<String> {
    if ip.is_empty() {
        return None;
    }
    match ip.parse::<std::net::IpAddr>() {
        Ok(_) => Some(ip.to_owned()),
        Err(_) => {
            tracing::warn!(
                namespace = %pod_ref.namespace,
                pod = %pod_ref.name,
                ip = %ip.escape_debug(),
                "ECI reported a malformed pod IP; left out of the pod status"
            );
            None
        }
    }
}

/// The status of a group ECI just accepted: Pending, every container creating.
pub fn accepted(pod_ref: &PodRef, shape: &Shape, id: &str) -> PodStatus {
    pod_status(
        pod_ref,
        shape,
        &wire::GroupStatus {
            container_group_id: id.to_owned(),
            status: "Pending".into(),
            ..Default::default()
        },
        &[],
    )
}

/// A group's latest `DescribeMultiContainerGroupMetric` record as pod stats; `None` without a
/// record. Figures ECI leaves out stay unset.
pub fn pod_stats(pod_ref: &PodRef, data: &wire::MonitorData) -> Option<PodStats> {
    let r = data
        .records
        .iter()
        .max_by(|a, b| a.timestamp.cmp(&b.timestamp))?;
    let time = ts(&r.timestamp);
    let cpu = |c: &Option<wire::MetricCpu>| {
        c.as_ref().map(|c| CpuUsage {
            usage_nano_cores: c.usage_nano_cores,
            usage_core_nano_seconds: c.usage_core_nano_seconds,
        })
    };
    let memory = |m: &Option<wire::MetricMemory>| {
        m.as_ref().map(|m| MemoryUsage {
            working_set_bytes: m.working_set,
            usage_bytes: m.usage_bytes,
            rss_bytes: m.rss,
        })
    };
    Some(PodStats {
        pod_ref: Some(pod_ref.clone()),
        time,
        cpu: cpu(&r.cpu),
        memory: memory(&r.memory),
        containers: r
            .containers
            .iter()
            .map(|c| ContainerStats {
                name: c.name.clone(),
                time,
                cpu: cpu(&c.cpu),
                memory: memory(&c.memory),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        }
    }

    fn shape() -> Shape {
        Shape {
            init: vec![("init".into(), "busybox".into())],
            app: vec![
                ("web".into(), "nginx".into()),
                ("side".into(), "busybox".into()),
            ],
        }
    }

    fn group(status: &str, json: serde_json::Value) -> wire::GroupStatus {
        let mut g: wire::GroupStatus = serde_json::from_value(json).expect("parses");
        g.status = status.into();
        g.container_group_id = "eci-1".into();
        g
    }

    fn term(code: i32) -> serde_json::Value {
        serde_json::json!({"Terminated": {"ExitCode": code, "StartedAt": "2024-01-01T00:00:00Z", "FinishedAt": "2024-01-01T00:01:00Z"}})
    }

    fn state_of(s: &ContainerStatus) -> &container_state::State {
        s.state
            .as_ref()
            .and_then(|s| s.state.as_ref())
            .expect("state set")
    }

    #[test]
    fn scheduling_is_pending_with_creating_containers() {
        for st in ["Pending", "Scheduling"] {
            let s = pod_status(&r(), &shape(), &group(st, serde_json::json!({})), &[]);
            assert_eq!(s.phase, PodPhase::Pending as i32);
            assert_eq!(s.container_statuses.len(), 2);
            assert!(
                matches!(state_of(&s.container_statuses[0]), container_state::State::Waiting(w) if w.reason == "ContainerCreating")
            );
            assert_eq!(s.cloud_id, "eci-1");
        }
    }

    #[test]
    fn malformed_and_empty_ips_are_left_out() {
        let ips = |pod_ips: serde_json::Value, pod_ip: &str| {
            let g = group(
                "Running",
                serde_json::json!({"PodStatus": {"PodIps": pod_ips, "PodIp": pod_ip}}),
            );
            let s = pod_status(&r(), &shape(), &g, &[]);
            (s.pod_ip, s.pod_ips)
        };
        let bad = serde_json::json!([{"Ip": ""}, {"Ip": "10.0.0.300"}, {"Ip": "not an ip"},
            {"Ip": " 10.0.0.4"}, {"Ip": "10.0.0.4"}, {"Ip": "fd00::4"}, {"Ip": "fd00::4%eth0"}]);
        assert_eq!(
            ips(bad, "garbage"),
            (
                "10.0.0.4".to_owned(),
                vec!["10.0.0.4".to_owned(), "fd00::4".to_owned()]
            )
        );
        // Only malformed entries: the pod has no IP rather than a bad one.
        let none = serde_json::json!([{"Ip": "10.0.0"}, {"Ip": "::g"}]);
        assert_eq!(ips(none.clone(), "1.2.3.4.5"), (String::new(), vec![]));
        // A malformed `PodIps` list falls back to a valid `PodIp`.
        assert_eq!(
            ips(none, "192.168.0.9"),
            ("192.168.0.9".to_owned(), vec!["192.168.0.9".to_owned()])
        );
    }

    /// DescribeContainerGroups' `InitContainers[]` entry with `CurrentState`.
    fn init(state: serde_json::Value) -> wire::GroupContainer {
        serde_json::from_value(
            serde_json::json!({"Name": "init", "Image": "busybox", "CurrentState": state}),
        )
        .expect("parses")
    }

    #[test]
    fn running_group_maps_every_container_state() {
        let mut last = term(137);
        last["Terminated"]["ContainerID"] = serde_json::json!("containerd://abc");
        let g = group(
            "Running",
            serde_json::json!({"PodStatus": {
            "Phase": "Running", "PodIp": "192.168.0.7", "StartTime": "2024-01-01T00:00:00Z",
            "ContainerStatuses": [
                {"Name": "web", "Ready": true, "RestartCount": 2, "State": {"Running": {"StartedAt": "2024-01-01T00:00:05Z"}},
                 "LastState": last},
                {"Name": "side", "State": {"Waiting": {"Reason": "CrashLoopBackOff", "Message": "Back-off"}}}
            ]}}),
        );
        let inits = [init(
            serde_json::json!({"State": "Terminated", "ExitCode": 0, "Reason": "Completed",
            "StartTime": "2024-01-01T00:00:01Z", "FinishTime": "2024-01-01T00:00:02Z"}),
        )];
        let s = pod_status(&r(), &shape(), &g, &inits);
        assert_eq!(s.phase, PodPhase::Running as i32);
        assert_eq!(s.pod_ip, "192.168.0.7");
        // The id of the container's last run (the SDK has it in State/LastState.Terminated).
        assert_eq!(s.container_statuses[0].container_id, "containerd://abc");
        assert_eq!(
            s.start_time.as_ref().map(|t| t.seconds),
            Some(1_704_067_200)
        );
        let web = &s.container_statuses[0];
        assert!(web.ready && web.started);
        assert_eq!(web.restart_count, 2);
        assert!(
            matches!(state_of(web), container_state::State::Running(r) if r.started_at.as_ref().map(|t| t.seconds) == Some(1_704_067_205))
        );
        assert!(
            matches!(web.last_state.as_ref().and_then(|s| s.state.as_ref()), Some(container_state::State::Terminated(t)) if t.exit_code == 137 && t.reason == "Error")
        );
        assert!(
            matches!(state_of(&s.container_statuses[1]), container_state::State::Waiting(w) if w.reason == "CrashLoopBackOff")
        );
        assert!(
            matches!(state_of(&s.init_container_statuses[0]), container_state::State::Terminated(t) if t.exit_code == 0 && t.reason == "Completed")
        );
    }

    #[test]
    fn init_containers_show_their_real_states() {
        // DescribeContainerGroupStatus has no init containers; DescribeContainerGroups'
        // InitContainers[].CurrentState has: nothing is invented.
        let pending = group(
            "Pending",
            serde_json::json!({"PodStatus": {"Phase": "Pending"}}),
        );
        let running =
            init(serde_json::json!({"State": "Running", "StartTime": "2024-01-01T00:00:01Z"}));
        let s = pod_status(&r(), &shape(), &pending, std::slice::from_ref(&running));
        assert_eq!(s.phase, PodPhase::Pending as i32);
        assert!(matches!(
            state_of(&s.init_container_statuses[0]),
            container_state::State::Running(r) if r.started_at.as_ref().map(|t| t.seconds) == Some(1_704_067_201)
        ));
        // A failed init container keeps its exit code, reason and message, and its previous run.
        let mut failed = init(
            serde_json::json!({"State": "Terminated", "ExitCode": 2, "Reason": "Error",
            "Message": "setup failed", "StartTime": "2024-01-01T00:00:01Z", "FinishTime": "2024-01-01T00:00:03Z"}),
        );
        failed.restart_count = 1;
        failed.previous_state = running.current_state.clone();
        let s = pod_status(&r(), &shape(), &pending, &[failed]);
        let c = &s.init_container_statuses[0];
        assert!(matches!(
            state_of(c),
            container_state::State::Terminated(t) if t.exit_code == 2 && t.reason == "Error" && t.message == "setup failed"
        ));
        assert_eq!(c.restart_count, 1);
        assert!(matches!(
            c.last_state.as_ref().and_then(|s| s.state.as_ref()),
            Some(container_state::State::Running(_))
        ));
        // Not described yet: waiting, not "Completed", even with the app container running.
        let app_running = group(
            "Running",
            serde_json::json!({"PodStatus": {"Phase": "Running", "ContainerStatuses": [
            {"Name": "web", "State": {"Running": {"StartedAt": "2024-01-01T00:00:05Z"}}}]}}),
        );
        let s = pod_status(&r(), &shape(), &app_running, &[]);
        assert!(matches!(
            state_of(&s.init_container_statuses[0]),
            container_state::State::Waiting(w) if w.reason == "PodInitializing"
        ));
    }

    #[test]
    fn a_failed_groups_reason_and_message_come_from_its_conditions() {
        let g = group(
            "Failed",
            serde_json::json!({"PodStatus": {"Phase": "Failed", "Conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"},
                {"type": "Ready", "status": "False", "Reason": "ContainersNotReady",
                 "Message": "containers with unready status: [web]", "lastTransitionTime": "2024-01-01T00:00:05Z"},
                {"type": "ContainerInstanceCreated", "status": "False", "Reason": "InsufficientDisk",
                 "Message": "the ephemeral storage is full", "lastTransitionTime": "2024-01-01T00:01:00Z"}
            ]}}),
        );
        let s = pod_status(&r(), &shape(), &g, &[]);
        assert_eq!(s.phase, PodPhase::Failed as i32);
        assert_eq!(s.reason, "InsufficientDisk");
        assert_eq!(s.message, "the ephemeral storage is full");
        // Only the kubelet's conditions: the first failing one is the cause.
        let g = group(
            "Failed",
            serde_json::json!({"PodStatus": {"Conditions": [
                {"type": "Initialized", "status": "False", "Reason": "ContainersNotInitialized",
                 "Message": "containers with incomplete status: [init]"},
                {"type": "Ready", "status": "False", "Reason": "ContainersNotReady",
                 "Message": "containers with unready status: [web]"}]}}),
        );
        let s = pod_status(&r(), &shape(), &g, &[]);
        assert_eq!(s.reason, "ContainersNotInitialized");
        // ScheduleFailed with an Unschedulable condition: ECI's words, not ours.
        let g = group(
            "ScheduleFailed",
            serde_json::json!({"PodStatus": {"Conditions": [
                {"Type": "Unschedulable", "Status": "False", "Reason": "NoStock",
                 "Message": "no stock of ecs.c6.large in cn-hangzhou-h"}]}}),
        );
        let s = pod_status(&r(), &shape(), &g, &[]);
        assert_eq!(
            (s.reason.as_str(), s.message.as_str()),
            ("NoStock", "no stock of ecs.c6.large in cn-hangzhou-h")
        );
    }

    #[test]
    fn terminal_statuses() {
        let ok = group(
            "Succeeded",
            serde_json::json!({"PodStatus": {"ContainerStatuses": [
            {"Name": "web", "State": term(0)}, {"Name": "side", "State": term(0)}]}}),
        );
        assert_eq!(
            pod_status(&r(), &shape(), &ok, &[]).phase,
            PodPhase::Succeeded as i32
        );
        let bad = group(
            "Succeeded",
            serde_json::json!({"PodStatus": {"ContainerStatuses": [
            {"Name": "web", "State": term(0)}, {"Name": "side", "State": term(3)}]}}),
        );
        assert_eq!(
            pod_status(&r(), &shape(), &bad, &[]).phase,
            PodPhase::Failed as i32
        );
        let failed = group(
            "Failed",
            serde_json::json!({"PodStatus": {"ContainerStatuses": [{"Name": "web", "State": term(1)}]}}),
        );
        let s = pod_status(&r(), &shape(), &failed, &[]);
        assert_eq!(s.phase, PodPhase::Failed as i32);
        assert!(
            matches!(state_of(&s.container_statuses[0]), container_state::State::Terminated(t) if t.exit_code == 1)
        );
        for (st, reason) in [("ScheduleFailed", "ScheduleFailed"), ("Expired", "Expired")] {
            let s = pod_status(&r(), &shape(), &group(st, serde_json::json!({})), &[]);
            assert_eq!(s.phase, PodPhase::Failed as i32, "{st}");
            assert_eq!(s.reason, reason);
            assert!(!s.message.is_empty());
        }
    }

    #[test]
    fn restarting_and_terminating_groups_keep_running() {
        for st in ["Restarting", "Updating", "Terminating"] {
            let g = group(
                st,
                serde_json::json!({"PodStatus": {"Phase": "Running", "ContainerStatuses": [
                {"Name": "web", "State": {"Running": {"StartedAt": "2024-01-01T00:00:05Z"}}}]}}),
            );
            assert_eq!(
                pod_status(&r(), &shape(), &g, &[]).phase,
                PodPhase::Running as i32,
                "{st}"
            );
        }
        // Image still pulling: Pending in Kubernetes terms.
        let pulling = group(
            "Running",
            serde_json::json!({"PodStatus": {"ContainerStatuses": [
            {"Name": "web", "State": {"Waiting": {"Reason": "ContainerCreating"}}}]}}),
        );
        assert_eq!(
            pod_status(&r(), &shape(), &pulling, &[]).phase,
            PodPhase::Pending as i32
        );
    }

    #[test]
    fn the_documented_started_at_spelling_is_read() {
        let g = group(
            "Running",
            serde_json::json!({"PodStatus": {"ContainerStatuses": [
            {"Name": "web", "State": {"Running": {"StartedAtstartedAt": "2024-01-01T00:00:05Z"}}}]}}),
        );
        let s = pod_status(&r(), &shape(), &g, &[]);
        assert!(
            matches!(state_of(&s.container_statuses[0]), container_state::State::Running(r) if r.started_at.is_some())
        );
    }

    #[test]
    fn the_latest_metric_record_becomes_pod_stats() {
        let data: wire::MonitorData = serde_json::from_value(serde_json::json!({
            "ContainerGroupId": "eci-1",
            "Records": [
                {"Timestamp": "2024-01-01T00:00:00Z", "CPU": {"UsageNanoCores": 1}},
                {"Timestamp": "2024-01-01T00:01:00Z",
                 "CPU": {"Limit": 2000, "Load": 0, "UsageNanoCores": 200000000, "UsageCoreNanoSeconds": 9000000000u64},
                 "Memory": {"WorkingSet": 1073741824, "UsageBytes": 1200000000, "Rss": 800000000, "Cache": 1, "AvailableBytes": 2},
                 "Containers": [{"Name": "web", "CPU": {"UsageNanoCores": 150000000},
                                 "Memory": {"WorkingSet": 1000}}]}
            ]
        }))
        .expect("parses");
        let s = pod_stats(&r(), &data).expect("a record");
        assert_eq!(s.time.as_ref().map(|t| t.seconds), Some(1_704_067_260));
        let cpu = s.cpu.expect("cpu");
        assert_eq!(cpu.usage_nano_cores, Some(200_000_000));
        assert_eq!(cpu.usage_core_nano_seconds, Some(9_000_000_000));
        let mem = s.memory.expect("memory");
        assert_eq!(mem.working_set_bytes, Some(1 << 30));
        assert_eq!(mem.rss_bytes, Some(800_000_000));
        assert_eq!(s.containers[0].name, "web");
        assert_eq!(
            s.containers[0].memory.as_ref().and_then(|m| m.usage_bytes),
            None,
            "not reported, not invented"
        );
        assert!(pod_stats(&r(), &wire::MonitorData::default()).is_none());
    }
}
