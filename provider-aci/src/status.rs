//! Container group → pod status (pure): `provisioningState` first, then `instanceView.state`,
//! then each container's `currentState` (Waiting/Running/Terminated with exit codes) and
//! `restartCount`.

use podprovider_proto::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStats, ContainerStatus, CpuUsage, MemoryUsage, PodEvent, PodPhase, PodRef, PodStats,
    PodStatus, container_state::State,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::wire::{self, ContainerGroup, ContainerInstanceView};

/// Parses an ARM timestamp.
pub fn timestamp(s: Option<&str>) -> Option<prost_types::Timestamp> {
    let t = OffsetDateTime::parse(s?, &Rfc3339).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    })
}

fn state(s: Option<&wire::ContainerState>, waiting_reason: &str) -> ContainerState {
    let Some(s) = s else {
        return ContainerState {
            state: Some(State::Waiting(ContainerStateWaiting {
                reason: waiting_reason.into(),
                message: String::new(),
            })),
        };
    };
    let detail = s.detail_status.clone().unwrap_or_default();
    let inner = match s.state.as_deref().unwrap_or_default() {
        "Running" => State::Running(ContainerStateRunning {
            started_at: timestamp(s.start_time.as_deref()),
        }),
        "Terminated" => {
            let code = s.exit_code.unwrap_or(0);
            State::Terminated(ContainerStateTerminated {
                exit_code: code,
                signal: 0,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: detail,
                started_at: timestamp(s.start_time.as_deref()),
                finished_at: timestamp(s.finish_time.as_deref()),
            })
        }
        _ => State::Waiting(ContainerStateWaiting {
            reason: if detail.is_empty() {
                waiting_reason.to_owned()
            } else {
                // ACI's detail (e.g. "CrashLoopBackOff: Back-off restarting") starts with a word.
                detail
                    .split([':', ' '])
                    .next()
                    .unwrap_or(waiting_reason)
                    .to_owned()
            },
            message: detail,
        }),
    };
    ContainerState { state: Some(inner) }
}

fn container_status(
    name: &str,
    image: &str,
    view: Option<&ContainerInstanceView>,
    waiting_reason: &str,
) -> ContainerStatus {
    let current = state(view.and_then(|v| v.current_state.as_ref()), waiting_reason);
    let running = matches!(current.state, Some(State::Running(_)));
    ContainerStatus {
        name: name.into(),
        image: image.into(),
        image_id: String::new(),
        container_id: String::new(),
        ready: running,
        started: running,
        restart_count: view.and_then(|v| v.restart_count).unwrap_or(0),
        state: Some(current),
        last_state: view
            .and_then(|v| v.previous_state.as_ref())
            .filter(|p| p.state.is_some())
            .map(|p| state(Some(p), "")),
    }
}

fn is_terminated(c: &ContainerStatus) -> Option<i32> {
    match c.state.as_ref().and_then(|s| s.state.as_ref()) {
        Some(State::Terminated(t)) => Some(t.exit_code),
        _ => None,
    }
}

/// `provisioningState`s after which ACI will not bring the group up: `Failed` and `Canceled`
/// (ARM's terminal states), and `Unhealthy` and `NotAccessible` of the enum the SDKs declare for
/// 2024-05-01-preview onwards (2023-05-01 types the field as a free string).
pub const TERMINAL_FAILURES: [&str; 4] = ["Failed", "Canceled", "Unhealthy", "NotAccessible"];

/// Whether an event's name says something went wrong (`Failed`, `FailedMount`, `BackOff`...),
/// whatever its type: ACI's own failed-group example reports `FailedMount` as `Normal`.
fn failure_name(name: &str) -> bool {
    name.starts_with("Fail")
        || ["Error", "BackOff", "Unhealthy", "Evict", "Kill", "OOM"]
            .iter()
            .any(|w| name.contains(w))
}

/// Core-nanoseconds in one minute at one millicore: 0.001 core x 60 s x 1e9.
const NANO_CORE_SECONDS_PER_MILLICORE_MINUTE: f64 = 6e7;

/// A pod's figures from Azure Monitor (Metrics - List with one series per container): each
/// container's latest minute with an `Average` — `CpuUsage` millicores as `usage_nano_cores`
/// (x 1e6), `MemoryUsage` bytes as `working_set_bytes` — and the pod's sums. CPU time
/// (`usage_core_nano_seconds`, the counter metrics-server differentiates) is the sum of every
/// minute's average over the series (asked from the container's start). `None` when no
/// container has a figure yet (metrics arrive a minute or more after a start).
pub fn pod_stats(pod_ref: &PodRef, m: &wire::MetricsResponse) -> Option<PodStats> {
    // container -> (cpu, memory), each (time, value) of the latest point with a value.
    type Latest = Option<(String, f64)>;
    let mut per: std::collections::BTreeMap<String, (Latest, Latest)> = Default::default();
    // container -> CPU time: each minute's average millicores x 60 s (core-nanoseconds).
    let mut cpu_time: std::collections::BTreeMap<String, f64> = Default::default();
    for metric in &m.value {
        let cpu = metric.name.value.eq_ignore_ascii_case("CpuUsage");
        if !cpu && !metric.name.value.eq_ignore_ascii_case("MemoryUsage") {
            continue;
        }
        for ts in &metric.timeseries {
            let container = ts
                .metadatavalues
                .iter()
                .find(|v| v.name.value.eq_ignore_ascii_case("containername"))
                .map(|v| v.value.clone())
                .unwrap_or_default();
            let latest = ts
                .data
                .iter()
                .filter_map(|p| p.average.map(|a| (p.time_stamp.clone(), a)))
                .max_by(|a, b| a.0.cmp(&b.0));
            if cpu {
                let total: f64 = ts
                    .data
                    .iter()
                    .filter_map(|p| p.average)
                    .filter(|a| a.is_finite() && *a >= 0.0)
                    .map(|a| a * NANO_CORE_SECONDS_PER_MILLICORE_MINUTE)
                    .sum();
                cpu_time.insert(container.clone(), total);
            }
            let slot = per.entry(container).or_default();
            if cpu {
                slot.0 = latest;
            } else {
                slot.1 = latest;
            }
        }
    }
    // Whole-group series (no containerName) only count when no container has its own.
    if per.keys().any(|k| !k.is_empty()) {
        per.remove("");
        cpu_time.remove("");
    }
    let nonneg = |v: f64| (v.is_finite() && v >= 0.0).then_some(v);
    let nano_cores = |m: f64| nonneg(m).map(|m| (m * 1e6).round() as u64);
    let bytes = |b: f64| nonneg(b).map(|b| b.round() as u64);
    let mut pod_time: Option<String> = None;
    let (mut cpu_sum, mut mem_sum): (Option<u64>, Option<u64>) = (None, None);
    let mut cpu_time_sum: Option<u64> = None;
    let mut containers = Vec::new();
    for (name, (cpu, mem)) in &per {
        let cpu_v = cpu.as_ref().and_then(|(_, v)| nano_cores(*v));
        let mem_v = mem.as_ref().and_then(|(_, v)| bytes(*v));
        if cpu_v.is_none() && mem_v.is_none() {
            continue;
        }
        let used = cpu_v
            .and_then(|_| cpu_time.get(name))
            .map(|t| t.round() as u64);
        cpu_time_sum = match (cpu_time_sum, used) {
            (a, None) => a,
            (None, b) => b,
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
        };
        let time = [cpu, mem]
            .into_iter()
            .flatten()
            .map(|(t, _)| t.clone())
            .max();
        if time > pod_time {
            pod_time.clone_from(&time);
        }
        cpu_sum = match (cpu_sum, cpu_v) {
            (a, None) => a,
            (None, b) => b,
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
        };
        mem_sum = match (mem_sum, mem_v) {
            (a, None) => a,
            (None, b) => b,
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
        };
        if !name.is_empty() {
            containers.push(ContainerStats {
                name: name.clone(),
                time: timestamp(time.as_deref()),
                cpu: Some(CpuUsage {
                    usage_nano_cores: cpu_v,
                    usage_core_nano_seconds: used,
                }),
                memory: Some(MemoryUsage {
                    working_set_bytes: mem_v,
                    ..Default::default()
                }),
            });
        }
    }
    if cpu_sum.is_none() && mem_sum.is_none() {
        return None;
    }
    Some(PodStats {
        pod_ref: Some(pod_ref.clone()),
        time: timestamp(pod_time.as_deref()),
        cpu: Some(CpuUsage {
            usage_nano_cores: cpu_sum,
            usage_core_nano_seconds: cpu_time_sum,
        }),
        memory: Some(MemoryUsage {
            working_set_bytes: mem_sum,
            ..Default::default()
        }),
        containers,
    })
}

/// One of ACI's events of a group (`instanceView.events`) or of a container, as a pod event.
#[derive(Clone, Debug, PartialEq)]
pub struct AciEvent {
    /// Identifies the event across polls: container (empty for the group), name, message, first
    /// time (ACI aggregates repeats into `count`).
    pub key: String,
    /// ACI's `count`: how often it happened (at least 1).
    pub count: i32,
    /// The pod event to forward.
    pub event: PodEvent,
}

/// Every event in a group's detailed view (group-level, then each container's and init
/// container's), as pod events: reason = ACI's event `name` (Pulling, Pulled, Started, BackOff,
/// FailedMount, ...), message prefixed with the container, Warning for ACI's type `Warning` or a
/// failure name (ACI's own failed-group example reports `FailedMount` as `Normal`), time =
/// `lastTimestamp`.
pub fn events(pod_ref: &PodRef, g: &ContainerGroup) -> Vec<AciEvent> {
    let p = &g.properties;
    let group = p
        .instance_view
        .iter()
        .flat_map(|v| v.events.iter().map(|e| ("", e)));
    let containers = p.containers.iter().flat_map(|c| {
        c.properties
            .instance_view
            .iter()
            .flat_map(move |v| v.events.iter().map(move |e| (c.name.as_str(), e)))
    });
    let inits = p.init_containers.iter().flat_map(|c| {
        c.properties
            .instance_view
            .iter()
            .flat_map(move |v| v.events.iter().map(move |e| (c.name.as_str(), e)))
    });
    group
        .chain(containers)
        .chain(inits)
        .filter_map(|(container, e)| {
            let name = e.name.as_deref().filter(|n| !n.is_empty())?;
            let message = e.message.as_deref().unwrap_or_default();
            let warning = e
                .kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("Warning"))
                || failure_name(name);
            let text = if container.is_empty() {
                message.to_owned()
            } else {
                format!("container {container}: {message}")
            };
            Some(AciEvent {
                key: format!(
                    "{container}\u{0}{name}\u{0}{message}\u{0}{}",
                    e.first_timestamp.as_deref().unwrap_or_default()
                ),
                count: e.count.unwrap_or(1).max(1),
                event: PodEvent {
                    pod_ref: Some(pod_ref.clone()),
                    warning,
                    reason: name.to_owned(),
                    message: text,
                    time: timestamp(e.last_timestamp.as_deref())
                        .or_else(|| timestamp(e.first_timestamp.as_deref())),
                },
            })
        })
        .collect()
}

/// What ACI says went wrong, as `<event name>: <message>`: the most telling event of the group
/// and its containers (a Warning or a failure name first, group-level before container-level,
/// then the latest), else a container's `detailStatus`.
fn failure_detail(g: &ContainerGroup) -> Option<String> {
    let group = g
        .properties
        .instance_view
        .iter()
        .flat_map(|v| &v.events)
        .map(|e| (true, e));
    let views = || {
        g.properties
            .init_containers
            .iter()
            .filter_map(|c| c.properties.instance_view.as_ref())
            .chain(
                g.properties
                    .containers
                    .iter()
                    .filter_map(|c| c.properties.instance_view.as_ref()),
            )
    };
    let best = group
        .chain(views().flat_map(|v| &v.events).map(|e| (false, e)))
        .enumerate()
        .filter(|(_, (_, e))| e.message.as_deref().is_some_and(|m| !m.trim().is_empty()))
        .map(|(i, (group_level, e))| {
            let name = e.name.as_deref().unwrap_or_default();
            let bad = e.kind.as_deref() == Some("Warning") || failure_name(name);
            let at = timestamp(e.last_timestamp.as_deref().or(e.first_timestamp.as_deref()))
                .map(|t| (t.seconds, t.nanos));
            ((bad, group_level, at, i), e)
        })
        .filter(|((bad, group_level, _, _), _)| *bad || *group_level)
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, e)| e);
    if let Some(e) = best {
        let message = e.message.as_deref().unwrap_or_default().trim();
        return Some(match e.name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => format!("{name}: {message}"),
            None => message.to_owned(),
        });
    }
    views()
        .filter_map(|v| v.current_state.as_ref())
        .filter_map(|s| s.detail_status.as_deref())
        .map(str::trim)
        .find(|d| !d.is_empty())
        .map(str::to_owned)
}

/// The status of a pod from its group.
pub fn pod_status(pod_ref: &PodRef, g: &ContainerGroup) -> PodStatus {
    let provisioning = g.properties.provisioning_state.as_deref().unwrap_or("");
    let group_state = g
        .properties
        .instance_view
        .as_ref()
        .and_then(|v| v.state.as_deref())
        .unwrap_or("");
    let terminal = TERMINAL_FAILURES.contains(&provisioning);
    let waiting_reason = if terminal {
        "ProviderFailed"
    } else {
        "ContainerCreating"
    };
    let init_statuses: Vec<ContainerStatus> = g
        .properties
        .init_containers
        .iter()
        .map(|c| {
            container_status(
                &c.name,
                &c.properties.image,
                c.properties.instance_view.as_ref(),
                "PodInitializing",
            )
        })
        .collect();
    let init_done = init_statuses.iter().all(|c| is_terminated(c) == Some(0));
    let statuses: Vec<ContainerStatus> = g
        .properties
        .containers
        .iter()
        .map(|c| {
            container_status(
                &c.name,
                &c.properties.image,
                c.properties.instance_view.as_ref(),
                if init_done {
                    waiting_reason
                } else {
                    "PodInitializing"
                },
            )
        })
        .collect();
    let any_running = statuses.iter().any(|c| {
        matches!(
            c.state.as_ref().and_then(|s| s.state.as_ref()),
            Some(State::Running(_))
        )
    });
    let exits: Vec<Option<i32>> = statuses.iter().map(is_terminated).collect();
    let all_exited = !exits.is_empty() && exits.iter().all(Option::is_some);
    let all_zero = all_exited && exits.iter().all(|e| *e == Some(0));
    let restart_policy = g.properties.restart_policy.as_deref().unwrap_or("Always");

    let none = || (String::new(), String::new());
    let by_exit = |zero: bool| {
        if zero {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        }
    };
    let (phase, (reason, message)) = if terminal && !any_running {
        let state = format!("ACI reports the container group {provisioning}");
        let message = match failure_detail(g) {
            Some(detail) => format!("{state}: {detail}"),
            None => state,
        };
        (PodPhase::Failed, ("ProviderFailed".to_owned(), message))
    } else if group_state == "Succeeded" {
        (PodPhase::Succeeded, none())
    } else if group_state == "Failed" && !any_running {
        // Exit codes tell the story; an event says more only when the containers never ran.
        let detail = (!all_exited).then(|| failure_detail(g)).flatten();
        (
            PodPhase::Failed,
            detail.map_or_else(none, |d| ("ProviderFailed".to_owned(), d)),
        )
    } else if group_state == "Stopped" && !any_running {
        let reason = if all_zero {
            none()
        } else {
            ("Stopped".into(), "the container group was stopped".into())
        };
        (by_exit(all_zero), reason)
    } else if all_exited && restart_policy == "Never" {
        (by_exit(all_zero), none())
    } else if all_zero && restart_policy == "OnFailure" {
        (PodPhase::Succeeded, none())
    } else if any_running || (group_state == "Running" && all_exited) {
        (PodPhase::Running, none())
    } else {
        (PodPhase::Pending, none())
    };
    let start_time = statuses
        .iter()
        .chain(&init_statuses)
        .filter_map(|c| match c.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Running(r)) => r.started_at,
            Some(State::Terminated(t)) => t.started_at,
            _ => None,
        })
        .min_by_key(|t| (t.seconds, t.nanos));
    let ip = g
        .properties
        .ip_address
        .as_ref()
        .and_then(|a| a.ip.clone())
        // Only an address that parses: a bad one in `podIPs` makes the API server refuse the
        // whole status update.
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .unwrap_or_default();
    PodStatus {
        pod_ref: Some(pod_ref.clone()),
        phase: phase as i32,
        reason,
        message,
        pod_ips: if ip.is_empty() {
            vec![]
        } else {
            vec![ip.clone()]
        },
        pod_ip: ip,
        start_time,
        init_container_statuses: init_statuses,
        container_statuses: statuses,
        cloud_id: g.id.clone().unwrap_or_default(),
    }
}

/// The status right after an accepted PUT: Pending, every container waiting.
pub fn accepted(pod_ref: &PodRef, g: &ContainerGroup, id: &str) -> PodStatus {
    let mut g = g.clone();
    g.properties.provisioning_state = Some("Pending".into());
    g.properties.instance_view = None;
    for c in &mut g.properties.containers {
        c.properties.instance_view = None;
    }
    for c in &mut g.properties.init_containers {
        c.properties.instance_view = None;
    }
    g.id = Some(id.to_owned());
    pod_status(pod_ref, &g)
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[test]
    fn cpu_usage_and_memory_usage_per_container_become_pod_stats() {
        // Metrics - List: value[].name.value, timeseries[].metadatavalues (containername),
        // data[].average; the latest point with a value counts.
        let m: wire::MetricsResponse = serde_json::from_value(serde_json::json!({"value": [
            {"name": {"value": "CpuUsage"}, "timeseries": [
                {"metadatavalues": [{"name": {"value": "containername"}, "value": "web"}],
                 "data": [{"timeStamp": "2024-01-01T00:00:00Z", "average": 100.0},
                          {"timeStamp": "2024-01-01T00:01:00Z", "average": 250.0},
                          {"timeStamp": "2024-01-01T00:02:00Z"}]},
                {"metadatavalues": [{"name": {"value": "containername"}, "value": "side"}],
                 "data": [{"timeStamp": "2024-01-01T00:01:00Z", "average": 50.0}]}
            ]},
            {"name": {"value": "MemoryUsage"}, "timeseries": [
                {"metadatavalues": [{"name": {"value": "containername"}, "value": "web"}],
                 "data": [{"timeStamp": "2024-01-01T00:01:00Z", "average": 73400320.0}]}
            ]}
        ]}))
        .expect("metrics");
        let r = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        let s = pod_stats(&r, &m).expect("figures");
        assert_eq!(s.cpu.and_then(|c| c.usage_nano_cores), Some(300_000_000));
        assert_eq!(s.memory.and_then(|m| m.working_set_bytes), Some(73_400_320));
        let web = s.containers.iter().find(|c| c.name == "web").expect("web");
        assert_eq!(web.cpu.and_then(|c| c.usage_nano_cores), Some(250_000_000));
        // (100 + 250) millicores x 60 s.
        assert_eq!(
            web.cpu.and_then(|c| c.usage_core_nano_seconds),
            Some(21_000_000_000)
        );
        assert_eq!(web.time, timestamp(Some("2024-01-01T00:01:00Z")));
        let side = s
            .containers
            .iter()
            .find(|c| c.name == "side")
            .expect("side");
        assert_eq!(
            side.memory.and_then(|m| m.working_set_bytes),
            None,
            "unknown, not 0"
        );
        // No point with a value yet: no stats at all.
        let empty: wire::MetricsResponse = serde_json::from_value(serde_json::json!({"value": [
            {"name": {"value": "CpuUsage"}, "timeseries": [{"data": [{"timeStamp": "2024-01-01T00:00:00Z"}]}]}
        ]}))
        .expect("metrics");
        assert!(pod_stats(&r, &empty).is_none());
    }

    #[test]
    fn instance_view_events_of_the_group_and_containers_become_pod_events() {
        // properties.instanceView.events and containers[].properties.instanceView.events.
        let g: ContainerGroup = serde_json::from_value(serde_json::json!({
            "properties": {
                "instanceView": {"events": [
                    {"name": "FailedMount", "type": "Normal", "count": 1, "message": "mount error",
                     "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:00Z"}
                ]},
                "containers": [{"name": "web", "properties": {"image": "nginx", "instanceView": {"events": [
                    {"name": "Pulled", "type": "Normal", "count": 1, "message": "pulled",
                     "firstTimestamp": "2024-01-01T00:00:01Z", "lastTimestamp": "2024-01-01T00:00:01Z"},
                    {"name": "Started", "type": "Normal", "count": 2, "message": "Started container",
                     "firstTimestamp": "2024-01-01T00:00:02Z", "lastTimestamp": "2024-01-01T00:00:09Z"},
                    {"name": "Failed", "type": "Warning", "message": "pull failed"}
                ]}}}]
            }
        }))
        .expect("group");
        let r = PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        };
        let ev = events(&r, &g);
        let summary: Vec<(&str, bool, &str, i32)> = ev
            .iter()
            .map(|e| {
                (
                    e.event.reason.as_str(),
                    e.event.warning,
                    e.event.message.as_str(),
                    e.count,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("FailedMount", true, "mount error", 1),
                ("Pulled", false, "container web: pulled", 1),
                ("Started", false, "container web: Started container", 2),
                ("Failed", true, "container web: pull failed", 1),
            ]
        );
        assert_eq!(
            ev[2].event.time,
            timestamp(Some("2024-01-01T00:00:09Z")),
            "lastTimestamp"
        );
        assert_ne!(ev[1].key, ev[2].key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(json: serde_json::Value) -> ContainerGroup {
        serde_json::from_value(json).expect("group json")
    }

    fn r() -> PodRef {
        PodRef {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u".into(),
        }
    }

    fn inner(c: &ContainerStatus) -> &State {
        c.state
            .as_ref()
            .and_then(|s| s.state.as_ref())
            .expect("state set")
    }

    #[test]
    fn creating_group_is_pending_with_waiting_containers() {
        let g = group(serde_json::json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g",
            "properties": {"provisioningState": "Creating", "containers": [{"name": "web", "properties": {"image": "nginx"}}]}
        }));
        let s = pod_status(&r(), &g);
        assert_eq!(s.phase, PodPhase::Pending as i32);
        assert!(s.cloud_id.ends_with("/containerGroups/g"));
        assert!(
            matches!(inner(&s.container_statuses[0]), State::Waiting(w) if w.reason == "ContainerCreating")
        );
    }

    #[test]
    fn running_group_reports_ip_start_and_restarts() {
        let g = group(serde_json::json!({
            "properties": {
                "provisioningState": "Succeeded",
                "ipAddress": {"ip": "52.1.2.3", "ports": [{"port": 80}], "type": "Public"},
                "instanceView": {"state": "Running", "events": []},
                "containers": [{"name": "web", "properties": {"image": "nginx", "instanceView": {
                    "restartCount": 2,
                    "currentState": {"state": "Running", "startTime": "2024-01-02T03:04:05.5Z", "detailStatus": ""},
                    "previousState": {"state": "Terminated", "exitCode": 137, "startTime": "2024-01-02T03:00:00Z", "finishTime": "2024-01-02T03:04:00Z", "detailStatus": "Killed"}
                }}}]
            }
        }));
        let s = pod_status(&r(), &g);
        assert_eq!(s.phase, PodPhase::Running as i32);
        assert_eq!(s.pod_ip, "52.1.2.3");
        assert_eq!(s.start_time.map(|t| t.seconds), Some(1_704_164_645));
        let c = &s.container_statuses[0];
        assert!(c.ready && c.started);
        assert_eq!(c.restart_count, 2);
        assert!(matches!(
            c.last_state.as_ref().and_then(|l| l.state.as_ref()),
            Some(State::Terminated(t)) if t.exit_code == 137 && t.reason == "Error"
        ));
    }

    #[test]
    fn terminated_containers_decide_the_phase_by_exit_code_and_policy() {
        let g = |policy: &str, group_state: &str, code: i32| {
            group(serde_json::json!({
                "properties": {
                    "provisioningState": "Succeeded",
                    "restartPolicy": policy,
                    "instanceView": {"state": group_state},
                    "containers": [{"name": "job", "properties": {"image": "busybox", "instanceView": {
                        "restartCount": 0,
                        "currentState": {"state": "Terminated", "exitCode": code, "finishTime": "2024-01-02T03:04:05Z", "detailStatus": "Completed"}
                    }}}]
                }
            }))
        };
        assert_eq!(
            pod_status(&r(), &g("Never", "Succeeded", 0)).phase,
            PodPhase::Succeeded as i32
        );
        assert_eq!(
            pod_status(&r(), &g("Never", "Failed", 3)).phase,
            PodPhase::Failed as i32
        );
        // ACI may still say Running for a moment: the policy decides.
        assert_eq!(
            pod_status(&r(), &g("Never", "Running", 3)).phase,
            PodPhase::Failed as i32
        );
        assert_eq!(
            pod_status(&r(), &g("OnFailure", "Running", 0)).phase,
            PodPhase::Succeeded as i32
        );
        let s = pod_status(&r(), &g("Never", "Failed", 3));
        assert!(
            matches!(inner(&s.container_statuses[0]), State::Terminated(t) if t.exit_code == 3 && t.reason == "Error")
        );
    }

    #[test]
    fn failed_provisioning_is_a_provider_failure_with_acis_message() {
        let g = group(serde_json::json!({
            "properties": {
                "provisioningState": "Failed",
                "instanceView": {"state": "Pending", "events": [{"type": "Warning", "name": "Failed", "message": "Failed to pull image \"nope\""}]},
                "containers": [{"name": "web", "properties": {"image": "nope"}}]
            }
        }));
        let s = pod_status(&r(), &g);
        assert_eq!(s.phase, PodPhase::Failed as i32);
        assert_eq!(s.reason, "ProviderFailed");
        assert!(s.message.contains("Failed to pull image"));
    }

    /// The REST reference's own failed group (ContainerGroupsGet_Failed, 2023-05-01): its
    /// `FailedMount` event is of type `Normal`.
    const GET_FAILED: &str =
        include_str!("../../emulators/aci/tests/fixtures/ContainerGroupsGet_Failed.json");

    #[test]
    fn the_references_failed_group_is_a_failed_pod_with_its_normal_typed_event() {
        let example: serde_json::Value = serde_json::from_str(GET_FAILED).expect("fixture json");
        let g = group(example["responses"]["200"]["body"].clone());
        let s = pod_status(&r(), &g);
        assert_eq!(s.phase, PodPhase::Failed as i32);
        assert_eq!(s.reason, "ProviderFailed");
        assert_eq!(
            s.message,
            "ACI reports the container group Failed: FailedMount: Output: mount error(2): Permission denied"
        );
        assert!(
            matches!(inner(&s.container_statuses[0]), State::Waiting(w) if w.reason == "ProviderFailed")
        );
    }

    #[test]
    fn every_terminal_provisioning_state_fails_the_pod() {
        for state in TERMINAL_FAILURES {
            let g = group(serde_json::json!({
                "properties": {
                    "provisioningState": state,
                    "containers": [{"name": "web", "properties": {"image": "nginx", "instanceView": {
                        "currentState": {"state": "Waiting", "detailStatus": ""},
                        "events": [{"type": "Normal", "name": "Pulled", "message": "Successfully pulled image"}]
                    }}}]
                }
            }));
            let s = pod_status(&r(), &g);
            assert_eq!(s.phase, PodPhase::Failed as i32, "{state}");
            assert_eq!(s.reason, "ProviderFailed");
            // A benign event explains nothing: the state alone is the message.
            assert_eq!(
                s.message,
                format!("ACI reports the container group {state}")
            );
        }
        // Transitional states are not failures.
        for state in ["Pending", "Creating", "Updating", "Repairing", "Accepted"] {
            let g = group(serde_json::json!({
                "properties": {"provisioningState": state, "containers": [{"name": "web", "properties": {"image": "nginx"}}]}
            }));
            assert_eq!(
                pod_status(&r(), &g).phase,
                PodPhase::Pending as i32,
                "{state}"
            );
        }
    }

    #[test]
    fn a_warning_beats_a_later_benign_event_and_detail_status_is_the_last_resort() {
        let g = group(serde_json::json!({
            "properties": {
                "provisioningState": "Failed",
                "containers": [{"name": "web", "properties": {"image": "nope", "instanceView": {
                    "currentState": {"state": "Waiting", "detailStatus": "ImagePullBackOff"},
                    "events": [
                        {"type": "Warning", "name": "Failed", "message": "Failed to pull image \"nope\"", "lastTimestamp": "2024-01-01T00:00:00Z"},
                        {"type": "Normal", "name": "Pulling", "message": "pulling image \"nope\"", "lastTimestamp": "2024-01-01T00:01:00Z"}
                    ]
                }}}]
            }
        }));
        let s = pod_status(&r(), &g);
        assert!(
            s.message.ends_with("Failed: Failed to pull image \"nope\""),
            "{}",
            s.message
        );
        let g = group(serde_json::json!({
            "properties": {
                "provisioningState": "Canceled",
                "containers": [{"name": "web", "properties": {"image": "x", "instanceView": {
                    "currentState": {"state": "Waiting", "detailStatus": "CrashLoopBackOff: back-off 10s"}
                }}}]
            }
        }));
        let s = pod_status(&r(), &g);
        assert_eq!(
            s.message,
            "ACI reports the container group Canceled: CrashLoopBackOff: back-off 10s"
        );
    }

    #[test]
    fn init_containers_hold_app_containers_in_pod_initializing() {
        let g = group(serde_json::json!({
            "properties": {
                "provisioningState": "Succeeded",
                "instanceView": {"state": "Pending"},
                "initContainers": [{"name": "init", "properties": {"image": "busybox", "instanceView": {
                    "currentState": {"state": "Running", "startTime": "2024-01-02T03:04:05Z"}}}}],
                "containers": [{"name": "web", "properties": {"image": "nginx"}}]
            }
        }));
        let s = pod_status(&r(), &g);
        assert_eq!(s.phase, PodPhase::Pending as i32);
        assert!(
            matches!(inner(&s.container_statuses[0]), State::Waiting(w) if w.reason == "PodInitializing")
        );
        assert!(matches!(
            inner(&s.init_container_statuses[0]),
            State::Running(_)
        ));
    }
}
