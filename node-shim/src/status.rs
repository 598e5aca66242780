//! Status translation: the provider's `PodStatus` becomes a Kubernetes `PodStatus` with the
//! conditions the kubelet computes (PodScheduled, Initialized, ContainersReady, Ready), QoS class,
//! host IP and container states. Status never goes backwards: Running never returns to Pending and
//! terminal phases are final.

use k8s_openapi::{
    api::core::v1::{
        self as k8s, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, ContainerStatus, PodCondition, PodIP,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use podprovider_proto::v1::{self as pb, container_state::State};

/// Whether a Kubernetes phase is final.
pub fn is_terminal(phase: Option<&str>) -> bool {
    matches!(phase, Some("Succeeded" | "Failed"))
}

fn phase_name(phase: pb::PodPhase) -> &'static str {
    match phase {
        pb::PodPhase::Pending => "Pending",
        pb::PodPhase::Running => "Running",
        pb::PodPhase::Succeeded => "Succeeded",
        pb::PodPhase::Failed => "Failed",
        pb::PodPhase::Unknown | pb::PodPhase::Unspecified => "Unknown",
    }
}

/// Whether writing `new` over `current` would move the pod backwards.
pub fn would_regress(current: Option<&k8s::PodStatus>, new: &k8s::PodStatus) -> bool {
    let cur = current.and_then(|s| s.phase.as_deref());
    let new = new.phase.as_deref();
    if is_terminal(cur) {
        return cur != new;
    }
    matches!((cur, new), (Some("Running"), Some("Pending" | "Unknown")))
}

fn time(ts: Option<&prost_types::Timestamp>) -> Option<Time> {
    let ts = ts?;
    Timestamp::new(ts.seconds, ts.nanos).ok().map(Time)
}

fn container_state(s: Option<&pb::ContainerState>) -> Option<ContainerState> {
    let state = s?.state.as_ref()?;
    Some(match state {
        State::Waiting(w) => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(w.reason.clone()).filter(|r| !r.is_empty()),
                message: Some(w.message.clone()).filter(|m| !m.is_empty()),
            }),
            ..Default::default()
        },
        State::Running(r) => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: time(r.started_at.as_ref()),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: t.exit_code,
                signal: Some(t.signal).filter(|s| *s != 0),
                reason: Some(t.reason.clone()).filter(|r| !r.is_empty()),
                message: Some(t.message.clone()).filter(|m| !m.is_empty()),
                started_at: time(t.started_at.as_ref()),
                finished_at: time(t.finished_at.as_ref()),
                container_id: None,
            }),
            ..Default::default()
        },
    })
}

/// Statuses for the spec's containers, in spec order; containers the provider has not reported are
/// waiting in `ContainerCreating`. `state` and `lastState` are always present (empty when unknown),
/// as the API server stores them: otherwise every comparison with the stored status differs and
/// each reconcile of a Running pod sends a status patch that changes nothing.
fn container_statuses(
    spec: &[k8s::Container],
    reported: &[pb::ContainerStatus],
) -> Vec<ContainerStatus> {
    spec.iter()
        .map(|c| match reported.iter().find(|r| r.name == c.name) {
            Some(r) => ContainerStatus {
                name: c.name.clone(),
                image: if r.image.is_empty() {
                    c.image.clone().unwrap_or_default()
                } else {
                    r.image.clone()
                },
                image_id: r.image_id.clone(),
                container_id: Some(r.container_id.clone()).filter(|i| !i.is_empty()),
                ready: r.ready,
                started: Some(r.started),
                restart_count: r.restart_count,
                state: Some(container_state(r.state.as_ref()).unwrap_or_default()),
                last_state: Some(container_state(r.last_state.as_ref()).unwrap_or_default()),
                ..Default::default()
            },
            None => ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                state: Some(ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        message: None,
                    }),
                    ..Default::default()
                }),
                last_state: Some(ContainerState::default()),
                ..Default::default()
            },
        })
        .collect()
}

/// The QoS class Kubernetes derives from requests and limits.
pub fn qos_class(spec: &k8s::PodSpec) -> &'static str {
    let containers: Vec<&k8s::Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let res = c.resources.as_ref();
        let requests = res.and_then(|r| r.requests.as_ref());
        let limits = res.and_then(|r| r.limits.as_ref());
        for name in ["cpu", "memory"] {
            let req = requests.and_then(|r| r.get(name));
            let lim = limits.and_then(|l| l.get(name));
            any |= req.is_some() || lim.is_some();
            // A request defaults to the limit when only the limit is set.
            match (req, lim) {
                (Some(r), Some(l)) if r == l => {}
                (None, Some(_)) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn condition(
    current: Option<&k8s::PodStatus>,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let previous = current
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let since = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.map(str::to_owned),
        last_transition_time: since,
        ..Default::default()
    }
}

/// Why the readiness gates keep the pod from Ready, in the kubelet's words; `None` when every gate's
/// condition is True.
fn readiness_gate_problem(spec: &k8s::PodSpec, current: Option<&k8s::PodStatus>) -> Option<String> {
    let conditions = current
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    for gate in spec.readiness_gates.iter().flatten() {
        let t = &gate.condition_type;
        match conditions.iter().find(|c| &c.type_ == t) {
            None => {
                return Some(format!(
                    "corresponding condition of pod readiness gate \"{t}\" does not exist."
                ));
            }
            Some(c) if c.status != "True" => {
                return Some(format!(
                    "the status of pod readiness gate \"{t}\" is not \"True\", but {}",
                    c.status
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// The condition types the kubelet owns; the shim writes only these and leaves every other
/// condition (readiness gates, `DisruptionTarget`, ...) to its writer.
pub const OWNED_CONDITIONS: [&str; 4] = ["Initialized", "Ready", "ContainersReady", "PodScheduled"];

/// `current` with `new` written over it as a strategic merge patch of `new` does: fields `new`
/// sets replace the current ones, conditions merge by type. Comparing this with `current` tells
/// whether a write would change anything.
pub fn merged(current: Option<&k8s::PodStatus>, new: &k8s::PodStatus) -> k8s::PodStatus {
    let mut out = current.cloned().unwrap_or_default();
    let mut conditions = out.conditions.take().unwrap_or_default();
    for c in new.conditions.iter().flatten() {
        match conditions.iter_mut().find(|x| x.type_ == c.type_) {
            Some(x) => *x = c.clone(),
            None => conditions.push(c.clone()),
        }
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if new.$f.is_some() { out.$f = new.$f.clone(); } )* };
    }
    take!(
        phase,
        reason,
        message,
        host_ip,
        host_ips,
        pod_ip,
        pod_ips,
        start_time,
        qos_class,
        init_container_statuses,
        container_statuses,
        ephemeral_container_statuses
    );
    out.conditions = Some(conditions).filter(|c| !c.is_empty());
    out
}

/// The Kubernetes status for `pod` given the provider's view `s`.
pub fn to_kubernetes(pod: &k8s::Pod, s: &pb::PodStatus, host_ip: &str) -> k8s::PodStatus {
    let now = Timestamp::now();
    let spec = pod.spec.clone().unwrap_or_default();
    let current = pod.status.as_ref();
    let phase = phase_name(s.phase());
    let init = container_statuses(
        spec.init_containers.as_deref().unwrap_or_default(),
        &s.init_container_statuses,
    );
    let app = container_statuses(&spec.containers, &s.container_statuses);

    let initialized = init.iter().all(|c| {
        c.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    }) || matches!(phase, "Running" | "Succeeded");
    let terminal = is_terminal(Some(phase));
    let containers_ready = !terminal && !app.is_empty() && app.iter().all(|c| c.ready);
    let not_ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    // As the kubelet: Ready also needs every readiness gate's condition True; other controllers
    // set those.
    let gate_problem = containers_ready
        .then(|| readiness_gate_problem(&spec, current))
        .flatten();
    let ready = containers_ready && gate_problem.is_none();
    let ready_reason = if !containers_ready {
        Some(not_ready_reason)
    } else {
        gate_problem.as_ref().map(|_| "ReadinessGatesNotReady")
    };
    let conditions = vec![
        condition(
            current,
            "Initialized",
            initialized,
            (!initialized).then_some("ContainersNotInitialized"),
            now,
        ),
        PodCondition {
            message: gate_problem,
            ..condition(current, "Ready", ready, ready_reason, now)
        },
        condition(
            current,
            "ContainersReady",
            containers_ready,
            (!containers_ready).then_some(not_ready_reason),
            now,
        ),
        condition(current, "PodScheduled", true, None, now),
    ];

    let pod_ips: Vec<PodIP> = if s.pod_ips.is_empty() {
        Some(s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
            .map(|ip| PodIP { ip })
            .into_iter()
            .collect()
    } else {
        s.pod_ips
            .iter()
            .map(|ip| PodIP { ip: ip.clone() })
            .collect()
    };
    k8s::PodStatus {
        phase: Some(phase.to_owned()),
        reason: Some(s.reason.clone()).filter(|r| !r.is_empty()),
        message: Some(s.message.clone()).filter(|m| !m.is_empty()),
        host_ip: Some(host_ip.to_owned()),
        pod_ip: pod_ips.first().map(|p| p.ip.clone()),
        pod_ips: Some(pod_ips).filter(|p| !p.is_empty()),
        start_time: time(s.start_time.as_ref())
            .or_else(|| current.and_then(|c| c.start_time.clone()))
            .or(Some(Time(now))),
        qos_class: Some(qos_class(&spec).to_owned()),
        conditions: Some(conditions),
        init_container_statuses: Some(init).filter(|i| !i.is_empty()),
        container_statuses: Some(app),
        ephemeral_container_statuses: Some(ephemeral_statuses(&spec)).filter(|e| !e.is_empty()),
        ..Default::default()
    }
}

/// Why an ephemeral container (`kubectl debug`) does not run on a virtual node.
pub const EPHEMERAL_UNSUPPORTED: &str = "ephemeral containers cannot be added to a pod on a \
virtual node: the cloud runs the pod's containers as one group that cannot gain a container";

/// Every ephemeral container as terminated without having run, so `kubectl debug` stops waiting
/// and says why, instead of waiting for a container that will never start.
fn ephemeral_statuses(spec: &k8s::PodSpec) -> Vec<ContainerStatus> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: false,
            restart_count: 0,
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 128,
                    reason: Some("NotSupported".into()),
                    message: Some(EPHEMERAL_UNSUPPORTED.into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// Ephemeral containers of `pod` whose status does not say yet that they will not run.
pub fn unreported_ephemeral(pod: &k8s::Pod) -> Vec<String> {
    let reported = pod
        .status
        .as_ref()
        .and_then(|s| s.ephemeral_container_statuses.as_deref())
        .unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .filter(|c| !reported.iter().any(|r| r.name == c.name))
        .map(|c| c.name.clone())
        .collect()
}

/// A status that fails the pod with `reason` and `message` (e.g. `ProviderFailed`).
pub fn failed(pod: &k8s::Pod, reason: &str, message: &str, host_ip: &str) -> k8s::PodStatus {
    let s = pb::PodStatus {
        phase: pb::PodPhase::Failed as i32,
        reason: reason.to_owned(),
        message: message.to_owned(),
        ..Default::default()
    };
    let mut status = to_kubernetes(pod, &s, host_ip);
    // Containers that never started are terminated, so nothing looks like it is still coming.
    for c in status.container_statuses.iter_mut().flatten() {
        if c.state.as_ref().is_some_and(|st| st.waiting.is_some()) {
            c.state = Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 128,
                    reason: Some(reason.to_owned()),
                    ..Default::default()
                }),
                ..Default::default()
            });
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(resources: serde_json::Value) -> k8s::Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "resources": resources}]}
        }))
        .expect("pod")
    }

    fn running(ready: bool) -> pb::PodStatus {
        pb::PodStatus {
            phase: pb::PodPhase::Running as i32,
            pod_ip: "10.0.0.7".into(),
            container_statuses: vec![pb::ContainerStatus {
                name: "c".into(),
                ready,
                state: Some(pb::ContainerState {
                    state: Some(State::Running(pb::ContainerStateRunning {
                        started_at: None,
                    })),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a k8s::PodStatus, t: &str) -> &'a str {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .map_or("", |c| c.status.as_str())
    }

    #[test]
    fn running_and_ready() {
        let s = to_kubernetes(&pod(serde_json::json!({})), &running(true), "127.0.0.1");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.7"));
        assert_eq!(s.host_ip.as_deref(), Some("127.0.0.1"));
        for t in ["Ready", "ContainersReady", "Initialized", "PodScheduled"] {
            assert_eq!(cond(&s, t), "True", "{t}");
        }
        let not_ready = to_kubernetes(&pod(serde_json::json!({})), &running(false), "127.0.0.1");
        assert_eq!(cond(&not_ready, "Ready"), "False");
    }

    #[test]
    fn ready_waits_for_every_readiness_gate() {
        let mut p = pod(serde_json::json!({}));
        if let Some(spec) = p.spec.as_mut() {
            spec.readiness_gates = Some(vec![k8s::PodReadinessGate {
                condition_type: "example.com/lb".into(),
            }]);
        }
        let s = to_kubernetes(&p, &running(true), "h");
        assert_eq!(cond(&s, "ContainersReady"), "True");
        assert_eq!(cond(&s, "Ready"), "False");
        let ready = s.conditions.iter().flatten().find(|c| c.type_ == "Ready");
        assert_eq!(
            ready.and_then(|c| c.reason.as_deref()),
            Some("ReadinessGatesNotReady")
        );
        let gate = |status: &str| PodCondition {
            type_: "example.com/lb".into(),
            status: status.into(),
            ..Default::default()
        };
        p.status = Some(k8s::PodStatus {
            conditions: Some(vec![gate("False")]),
            ..Default::default()
        });
        assert_eq!(
            cond(&to_kubernetes(&p, &running(true), "h"), "Ready"),
            "False"
        );
        p.status = Some(k8s::PodStatus {
            conditions: Some(vec![gate("True")]),
            ..Default::default()
        });
        assert_eq!(
            cond(&to_kubernetes(&p, &running(true), "h"), "Ready"),
            "True"
        );
    }

    #[test]
    fn a_write_keeps_conditions_it_does_not_own() {
        let p = pod(serde_json::json!({}));
        let mut current = to_kubernetes(&p, &running(true), "h");
        current
            .conditions
            .get_or_insert_default()
            .push(PodCondition {
                type_: "DisruptionTarget".into(),
                status: "True".into(),
                ..Default::default()
            });
        let new = to_kubernetes(&p, &running(false), "h");
        let written = merged(Some(&current), &new);
        assert_eq!(cond(&written, "DisruptionTarget"), "True");
        assert_eq!(cond(&written, "Ready"), "False");
        assert!(
            new.conditions
                .iter()
                .flatten()
                .all(|c| OWNED_CONDITIONS.contains(&c.type_.as_str())),
            "the shim writes only the conditions it owns"
        );
        // Unchanged: merging the same status changes nothing, so no write is made.
        let same = merged(Some(&current), &to_kubernetes(&p, &running(true), "h"));
        assert_eq!(cond(&same, "Ready"), "True");
        assert_eq!(same.conditions.as_ref().map(Vec::len), Some(5));
    }

    #[test]
    fn a_status_as_the_api_server_stored_it_needs_no_write() {
        let p = pod(serde_json::json!({}));
        let sent = to_kubernetes(&p, &running(true), "h");
        // The API server stores a container's empty state and lastState as `{}` (Go structs).
        let mut stored = serde_json::to_value(&sent).expect("status serializes");
        for c in stored["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            for field in ["state", "lastState"] {
                if c.get(field).is_none() {
                    c[field] = serde_json::json!({});
                }
            }
        }
        let stored: k8s::PodStatus = serde_json::from_value(stored).expect("status parses");
        let again = merged(Some(&stored), &to_kubernetes(&p, &running(true), "h"));
        assert_eq!(
            serde_json::to_value(&again).expect("status serializes"),
            serde_json::to_value(&stored).expect("status serializes"),
            "the same provider status again compares equal to the stored one"
        );
    }

    #[test]
    fn ephemeral_containers_are_reported_as_not_run() {
        let mut p = pod(serde_json::json!({}));
        if let Some(spec) = p.spec.as_mut() {
            spec.ephemeral_containers = Some(vec![k8s::EphemeralContainer {
                name: "debugger".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }]);
        }
        assert_eq!(unreported_ephemeral(&p), vec!["debugger".to_owned()]);
        let s = to_kubernetes(&p, &running(true), "h");
        let e = &s.ephemeral_container_statuses.clone().expect("statuses")[0];
        let t = e.state.as_ref().and_then(|st| st.terminated.as_ref());
        assert_eq!(t.and_then(|t| t.reason.as_deref()), Some("NotSupported"));
        p.status = Some(s);
        assert!(unreported_ephemeral(&p).is_empty(), "reported once");
    }

    #[test]
    fn never_backwards() {
        let p = pod(serde_json::json!({}));
        let run = to_kubernetes(&p, &running(true), "h");
        let pending = to_kubernetes(
            &p,
            &pb::PodStatus {
                phase: pb::PodPhase::Pending as i32,
                ..Default::default()
            },
            "h",
        );
        assert!(would_regress(Some(&run), &pending));
        assert!(!would_regress(Some(&pending), &run));
        let failed = failed(&p, "ProviderFailed", "nope", "h");
        assert!(would_regress(Some(&failed), &run));
        assert!(!would_regress(Some(&run), &failed));
    }

    #[test]
    fn qos_classes() {
        let spec = |r| pod(r).spec.expect("spec");
        assert_eq!(qos_class(&spec(serde_json::json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&spec(
                serde_json::json!({"limits": {"cpu": "1", "memory": "1Gi"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&spec(serde_json::json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
    }
}
