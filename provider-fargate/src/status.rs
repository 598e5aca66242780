//! From an ECS task to the contract's pod status.
//!
//! ECS task `lastStatus` goes PROVISIONING → PENDING → ACTIVATING → RUNNING → DEACTIVATING →
//! STOPPING → DEPROVISIONING → STOPPED. A STOPPED task's phase depends on its containers' exit
//! codes: Succeeded only when every app (essential) container exited 0, Failed otherwise, with
//! `stopCode` as reason and `stoppedReason` as message.

use aws_sdk_ecs::{
    primitives::DateTime,
    types::{Container, HealthStatus, Task, TaskStopCode},
};
use podprovider_proto::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, PodPhase, PodRef, PodStatus, container_state::State,
};

/// Containers of a task in spec order, from its task definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    /// Init containers (non-essential, chained), (name, image).
    pub init: Vec<(String, String)>,
    /// App containers (essential), (name, image).
    pub app: Vec<(String, String)>,
    /// Containers with an ECS health check (from their probes): ready only while HEALTHY.
    pub health_checked: Vec<String>,
}

/// Exit code reported for a container the task stopped before it could run (Kubernetes uses 128
/// for ContainerCannotRun).
const NEVER_RAN_EXIT: i32 = 128;

fn ts(t: Option<&DateTime>) -> Option<prost_types::Timestamp> {
    t.map(|d| prost_types::Timestamp {
        seconds: d.secs(),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    })
}

fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        state: Some(State::Waiting(ContainerStateWaiting {
            reason: reason.into(),
            message: message.into(),
        })),
    }
}

fn running(task: &Task) -> ContainerState {
    ContainerState {
        state: Some(State::Running(ContainerStateRunning {
            started_at: ts(task.started_at()),
        })),
    }
}

fn terminated(task: &Task, exit_code: i32, reason: &str, message: &str) -> ContainerState {
    ContainerState {
        state: Some(State::Terminated(ContainerStateTerminated {
            exit_code,
            signal: 0,
            reason: reason.into(),
            message: message.into(),
            started_at: ts(task.started_at()),
            finished_at: ts(task.stopped_at().or(task.execution_stopped_at())),
        })),
    }
}

fn exit_reason(exit_code: i32, container_reason: &str) -> &'static str {
    if container_reason.contains("OutOfMemory") {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

/// The state of one container. `init` says whether it runs before the app containers.
fn container_state(task: &Task, c: Option<&Container>, init: bool) -> ContainerState {
    let task_status = task.last_status().unwrap_or_default();
    let c_status = c.and_then(Container::last_status).unwrap_or("PENDING");
    let exit = c.and_then(Container::exit_code);
    let reason = c.and_then(Container::reason).unwrap_or_default();
    match c_status {
        "RUNNING" => running(task),
        "STOPPED" => {
            let code = exit.unwrap_or(NEVER_RAN_EXIT);
            terminated(task, code, exit_reason(code, reason), reason)
        }
        _ if task_status == "STOPPED" => match exit {
            Some(code) => terminated(task, code, exit_reason(code, reason), reason),
            None => terminated(
                task,
                NEVER_RAN_EXIT,
                "ContainerCannotRun",
                task.stopped_reason().unwrap_or(reason),
            ),
        },
        // ECS marks a task RUNNING only once its essential containers run, which they do only
        // after the init containers they depend on exited 0; container statuses can lag behind.
        _ if task_status == "RUNNING" && init => {
            terminated(task, exit.unwrap_or(0), "Completed", "")
        }
        _ if task_status == "RUNNING" => running(task),
        _ if init => waiting("PodInitializing", ""),
        _ => waiting("ContainerCreating", ""),
    }
}

fn statuses(
    task: &Task,
    list: &[(String, String)],
    init: bool,
    health_checked: &[String],
) -> Vec<ContainerStatus> {
    list.iter()
        .map(|(name, image)| {
            let c = task
                .containers()
                .iter()
                .find(|c| c.name() == Some(name.as_str()));
            let state = container_state(task, c, init);
            let is_running = matches!(state.state, Some(State::Running(_)));
            // The health check stands for the probes: UNKNOWN (not checked yet) is not ready.
            let healthy = !health_checked.contains(name)
                || c.and_then(Container::health_status) == Some(&HealthStatus::Healthy);
            ContainerStatus {
                name: name.clone(),
                image: image.clone(),
                image_id: c
                    .and_then(Container::image_digest)
                    .unwrap_or_default()
                    .to_owned(),
                container_id: c
                    .and_then(Container::runtime_id)
                    .map(|id| format!("fargate://{id}"))
                    .unwrap_or_default(),
                ready: is_running && healthy,
                started: is_running,
                restart_count: 0,
                state: Some(state),
                last_state: None,
            }
        })
        .collect()
}

/// The task's private IPv4 address, from its network interface attachment. Only an address
/// that parses counts: an empty or bad one in `podIPs` makes the API server refuse the whole
/// status update (found by fuzzing: ECS's empty string became `podIPs: [""]`).
pub fn pod_ip(task: &Task) -> Option<String> {
    fn ip(v: Option<&str>) -> Option<&str> {
        v.filter(|v| v.parse::<std::net::IpAddr>().is_ok())
    }
    task.attachments()
        .iter()
        .flat_map(|a| a.details())
        .filter(|d| d.name() == Some("privateIPv4Address"))
        .find_map(|d| ip(d.value()))
        .or_else(|| {
            task.containers()
                .iter()
                .flat_map(Container::network_interfaces)
                .find_map(|n| ip(n.private_ipv4_address()))
        })
        .map(str::to_owned)
}

/// The pod phase of a task, with reason and message.
pub fn phase(task: &Task, shape: &Shape) -> (PodPhase, String, String) {
    let reason = match task.stop_code() {
        // Fargate Spot took the capacity back: the contract's word for it.
        Some(TaskStopCode::SpotInterruption) => "SpotInterrupted".to_owned(),
        Some(c) => c.as_str().to_owned(),
        None => String::new(),
    };
    let message = task.stopped_reason().unwrap_or_default().to_owned();
    match task.last_status().unwrap_or_default() {
        "PROVISIONING" | "PENDING" | "ACTIVATING" => {
            (PodPhase::Pending, String::new(), String::new())
        }
        "RUNNING" | "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => {
            (PodPhase::Running, String::new(), String::new())
        }
        "STOPPED" => {
            let app_ok = !shape.app.is_empty()
                && shape.app.iter().all(|(name, _)| {
                    task.containers()
                        .iter()
                        .find(|c| c.name() == Some(name.as_str()))
                        .and_then(Container::exit_code)
                        == Some(0)
                });
            let failed_to_start = reason == "TaskFailedToStart";
            if app_ok && !failed_to_start {
                (PodPhase::Succeeded, reason, message)
            } else {
                (PodPhase::Failed, reason, message)
            }
        }
        _ => (PodPhase::Unknown, String::new(), String::new()),
    }
}

/// The health-checked app containers ECS reports UNHEALTHY.
pub fn unhealthy(task: &Task, shape: &Shape) -> Vec<String> {
    shape
        .health_checked
        .iter()
        .filter(|name| {
            task.containers().iter().any(|c| {
                c.name() == Some(name.as_str())
                    && c.health_status() == Some(&HealthStatus::Unhealthy)
            })
        })
        .cloned()
        .collect()
}

/// The pod status of `task`.
pub fn pod_status(pod_ref: &PodRef, task: &Task, shape: &Shape) -> PodStatus {
    let (phase, reason, message) = phase(task, shape);
    let ip = pod_ip(task);
    PodStatus {
        pod_ref: Some(pod_ref.clone()),
        phase: phase as i32,
        reason,
        message,
        pod_ip: ip.clone().unwrap_or_default(),
        pod_ips: ip.into_iter().collect(),
        start_time: ts(task.started_at().or(task.created_at())),
        init_container_statuses: statuses(task, &shape.init, true, &[]),
        container_statuses: statuses(task, &shape.app, false, &shape.health_checked),
        cloud_id: task.task_arn().unwrap_or_default().to_owned(),
    }
}

/// The status of a pod whose create was accepted but whose task ECS does not show yet.
pub fn accepted(pod_ref: &PodRef, shape: &Shape, task_arn: &str) -> PodStatus {
    let wait = |list: &[(String, String)], reason: &str| {
        list.iter()
            .map(|(name, image)| ContainerStatus {
                name: name.clone(),
                image: image.clone(),
                state: Some(waiting(reason, "")),
                ..Default::default()
            })
            .collect()
    };
    PodStatus {
        pod_ref: Some(pod_ref.clone()),
        phase: PodPhase::Pending as i32,
        init_container_statuses: wait(&shape.init, "PodInitializing"),
        container_statuses: wait(&shape.app, "ContainerCreating"),
        cloud_id: task_arn.to_owned(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::{Attachment, KeyValuePair, TaskStopCode};

    use super::*;

    fn shape() -> Shape {
        Shape {
            init: vec![("init".into(), "busybox".into())],
            app: vec![
                ("app".into(), "nginx".into()),
                ("side".into(), "envoy".into()),
            ],
            health_checked: Vec::new(),
        }
    }

    fn task(
        last: &str,
        containers: &[(&str, &str, Option<i32>)],
        stop: Option<TaskStopCode>,
    ) -> Task {
        let mut b = Task::builder()
            .task_arn("arn:aws:ecs:us-east-1:1:task/c/abc")
            .last_status(last)
            .started_at(DateTime::from_secs(1_700_000_000))
            .attachments(
                Attachment::builder()
                    .r#type("ElasticNetworkInterface")
                    .details(
                        KeyValuePair::builder()
                            .name("privateIPv4Address")
                            .value("10.0.0.7")
                            .build(),
                    )
                    .build(),
            );
        for (name, status, exit) in containers {
            let mut c = Container::builder().name(*name).last_status(*status);
            if let Some(code) = exit {
                c = c.exit_code(*code);
            }
            b = b.containers(c.build());
        }
        if let Some(code) = stop {
            b = b.stop_code(code).stopped_reason("why it stopped");
        }
        b.build()
    }

    fn kind(s: &ContainerStatus) -> String {
        match s.state.as_ref().and_then(|s| s.state.as_ref()) {
            Some(State::Waiting(w)) => format!("waiting:{}", w.reason),
            Some(State::Running(_)) => "running".into(),
            Some(State::Terminated(t)) => format!("terminated:{}:{}", t.exit_code, t.reason),
            None => "none".into(),
        }
    }

    fn summary(t: &Task) -> (PodPhase, String, Vec<String>) {
        let s = pod_status(
            &PodRef {
                namespace: "n".into(),
                name: "p".into(),
                uid: "u".into(),
            },
            t,
            &shape(),
        );
        let phase = PodPhase::try_from(s.phase).unwrap_or(PodPhase::Unspecified);
        let kinds = s
            .init_container_statuses
            .iter()
            .chain(&s.container_statuses)
            .map(kind)
            .collect();
        (phase, s.reason, kinds)
    }

    #[test]
    fn every_last_status_maps_to_a_phase() {
        use PodPhase::*;
        let pending = |_| {
            vec![
                "waiting:PodInitializing".to_owned(),
                "waiting:ContainerCreating".into(),
                "waiting:ContainerCreating".into(),
            ]
        };
        for (last, want) in [
            ("PROVISIONING", Pending),
            ("PENDING", Pending),
            ("ACTIVATING", Pending),
        ] {
            let t = task(
                last,
                &[
                    ("init", "PENDING", None),
                    ("app", "PENDING", None),
                    ("side", "PENDING", None),
                ],
                None,
            );
            assert_eq!(summary(&t), (want, String::new(), pending(())), "{last}");
        }
        let running = [
            ("init", "STOPPED", Some(0)),
            ("app", "RUNNING", None),
            ("side", "RUNNING", None),
        ];
        for last in ["RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"] {
            let (phase, _, kinds) = summary(&task(last, &running, None));
            assert_eq!(phase, Running, "{last}");
            assert_eq!(
                kinds,
                ["terminated:0:Completed", "running", "running"],
                "{last}"
            );
        }
        assert_eq!(summary(&task("SOMETHING_NEW", &running, None)).0, Unknown);
    }

    #[test]
    fn running_task_with_lagging_container_statuses() {
        // moto (and ECS for a moment) reports containers PENDING in a RUNNING task.
        let t = task(
            "RUNNING",
            &[("init", "PENDING", None), ("app", "PENDING", None)],
            None,
        );
        let (phase, _, kinds) = summary(&t);
        assert_eq!(phase, PodPhase::Running);
        assert_eq!(kinds, ["terminated:0:Completed", "running", "running"]);
    }

    #[test]
    fn stopped_tasks_are_judged_by_exit_codes() {
        use PodPhase::*;
        let ok = [
            ("init", "STOPPED", Some(0)),
            ("app", "STOPPED", Some(0)),
            ("side", "STOPPED", Some(0)),
        ];
        let t = task("STOPPED", &ok, Some(TaskStopCode::EssentialContainerExited));
        assert_eq!(
            summary(&t),
            (
                Succeeded,
                "EssentialContainerExited".into(),
                vec![
                    "terminated:0:Completed".into(),
                    "terminated:0:Completed".into(),
                    "terminated:0:Completed".into()
                ]
            )
        );
        let one_failed = [
            ("init", "STOPPED", Some(0)),
            ("app", "STOPPED", Some(0)),
            ("side", "STOPPED", Some(2)),
        ];
        let t = task(
            "STOPPED",
            &one_failed,
            Some(TaskStopCode::EssentialContainerExited),
        );
        let (phase, reason, kinds) = summary(&t);
        assert_eq!(
            (phase, reason.as_str()),
            (Failed, "EssentialContainerExited")
        );
        assert_eq!(kinds[2], "terminated:2:Error");

        let init_failed = [
            ("init", "STOPPED", Some(1)),
            ("app", "PENDING", None),
            ("side", "PENDING", None),
        ];
        let t = task(
            "STOPPED",
            &init_failed,
            Some(TaskStopCode::EssentialContainerExited),
        );
        let (phase, _, kinds) = summary(&t);
        assert_eq!(phase, Failed);
        assert_eq!(
            kinds,
            [
                "terminated:1:Error",
                "terminated:128:ContainerCannotRun",
                "terminated:128:ContainerCannotRun"
            ]
        );

        let never = [
            ("init", "PENDING", None),
            ("app", "PENDING", None),
            ("side", "PENDING", None),
        ];
        let t = task("STOPPED", &never, Some(TaskStopCode::TaskFailedToStart));
        let s = pod_status(&PodRef::default(), &t, &shape());
        assert_eq!(s.phase, Failed as i32);
        assert_eq!(
            (s.reason.as_str(), s.message.as_str()),
            ("TaskFailedToStart", "why it stopped")
        );

        // Stopped by the user: exit codes still decide (SIGTERM usually gives 143).
        let killed = [
            ("init", "STOPPED", Some(0)),
            ("app", "STOPPED", Some(143)),
            ("side", "STOPPED", Some(0)),
        ];
        let t = task("STOPPED", &killed, Some(TaskStopCode::UserInitiated));
        assert_eq!(summary(&t).0, Failed);
    }

    #[test]
    fn ip_and_ids_are_reported() {
        let t = task("RUNNING", &[("app", "RUNNING", None)], None);
        let s = pod_status(&PodRef::default(), &t, &shape());
        assert_eq!(s.pod_ip, "10.0.0.7");
        assert_eq!(s.pod_ips, ["10.0.0.7"]);
        assert_eq!(s.cloud_id, "arn:aws:ecs:us-east-1:1:task/c/abc");
        assert!(s.start_time.is_some());
    }

    #[test]
    fn readiness_follows_the_ecs_health_status_of_checked_containers() {
        let mut shape = shape();
        shape.health_checked = vec!["app".into()];
        let with = |health: Option<HealthStatus>, shape: &Shape| {
            let mut app = Container::builder().name("app").last_status("RUNNING");
            if let Some(h) = health {
                app = app.health_status(h);
            }
            let t = Task::builder()
                .last_status("RUNNING")
                .containers(app.build())
                .containers(
                    Container::builder()
                        .name("side")
                        .last_status("RUNNING")
                        .build(),
                )
                .build();
            pod_status(&PodRef::default(), &t, shape)
                .container_statuses
                .iter()
                .map(|c| (c.name.clone(), c.ready, c.started))
                .collect::<Vec<_>>()
        };
        let ready = |app: bool| {
            vec![
                ("app".to_owned(), app, true),
                ("side".to_owned(), true, true),
            ]
        };
        assert_eq!(with(Some(HealthStatus::Healthy), &shape), ready(true));
        assert_eq!(with(Some(HealthStatus::Unhealthy), &shape), ready(false));
        assert_eq!(
            with(Some(HealthStatus::from("UNKNOWN")), &shape),
            ready(false)
        );
        assert_eq!(with(None, &shape), ready(false));
        assert_eq!(
            unhealthy(
                &Task::builder()
                    .containers(
                        Container::builder()
                            .name("app")
                            .health_status(HealthStatus::Unhealthy)
                            .build()
                    )
                    .containers(
                        Container::builder()
                            .name("side")
                            .health_status(HealthStatus::Unhealthy)
                            .build()
                    )
                    .build(),
                &shape
            ),
            ["app"],
            "only checked containers count"
        );
        // Without a health check ECS reports UNKNOWN: running is ready.
        shape.health_checked.clear();
        assert_eq!(
            with(Some(HealthStatus::from("UNKNOWN")), &shape),
            ready(true)
        );
    }

    #[test]
    fn a_spot_interruption_is_reported_as_spot_interrupted() {
        let t = task(
            "STOPPED",
            &[("app", "STOPPED", Some(143))],
            Some(TaskStopCode::SpotInterruption),
        );
        let s = pod_status(&PodRef::default(), &t, &shape());
        assert_eq!(s.phase, PodPhase::Failed as i32);
        assert_eq!(s.reason, "SpotInterrupted");
    }
}

#[cfg(test)]
mod ip_tests {
    use aws_sdk_ecs::types::{Attachment, KeyValuePair, NetworkInterface};

    use super::*;

    /// Found by `fuzz_tasks_with_any_fields`: an empty address became `podIPs: [""]`.
    #[test]
    fn an_empty_or_bad_address_is_no_pod_ip() {
        let detail = |v: &str| {
            Attachment::builder()
                .details(
                    KeyValuePair::builder()
                        .name("privateIPv4Address")
                        .value(v)
                        .build(),
                )
                .build()
        };
        let nic = |v: &str| {
            Container::builder()
                .network_interfaces(NetworkInterface::builder().private_ipv4_address(v).build())
                .build()
        };
        let t = Task::builder().containers(nic("")).build();
        assert_eq!(pod_ip(&t), None);
        let t = Task::builder()
            .attachments(detail("not an ip"))
            .containers(nic("10.0.0.9"))
            .build();
        assert_eq!(pod_ip(&t).as_deref(), Some("10.0.0.9"));
        let t = Task::builder()
            .attachments(detail(""))
            .attachments(detail("10.0.0.7"))
            .build();
        assert_eq!(pod_ip(&t).as_deref(), Some("10.0.0.7"));
    }
}

/// Fuzzing what ECS answers. The AWS SDK reads the JSON; this provider reads the `Task`s it makes.
/// Both are fuzzed: tasks with any field values, and DescribeTasks answers with fields of the
/// wrong type or junk, sent by a local server to the real SDK client and `Cloud::describe`.
#[cfg(test)]
mod fuzz {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex},
    };

    use aws_sdk_ecs::types::{Attachment, KeyValuePair, NetworkInterface, Tag, Task, TaskStopCode};
    use proptest::{collection::vec, prelude::*, test_runner::TestCaseError};
    use serde_json::{Value, json};

    use super::*;
    use crate::stats;

    use provider_common::arbitrary::{self, Vocabulary, run};

    const NAMES: [&str; 4] = ["init", "app", "side", ""];

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(NAMES.to_vec()).prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn status_word() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "PROVISIONING", "PENDING", "ACTIVATING", "RUNNING", "DEACTIVATING", "STOPPING",
                "DEPROVISIONING", "STOPPED", "running", ""
            ])
            .prop_map(str::to_owned),
            1 => any::<String>(),
        ]
    }

    fn time() -> impl Strategy<Value = Option<DateTime>> {
        prop::option::of(prop_oneof![
            (any::<i64>(), 0u32..1_000_000_000)
                .prop_map(|(s, n)| DateTime::from_secs_and_nanos(s, n)),
            Just(DateTime::from_secs(0)),
            Just(DateTime::from_secs(-1)),
        ])
    }

    fn container() -> impl Strategy<Value = Container> {
        (
            (prop::option::of(name()), prop::option::of(status_word())),
            prop::option::of(any::<i32>()),
            prop::option::of(prop_oneof![
                Just("OutOfMemoryError: Container killed".to_owned()),
                any::<String>()
            ]),
            prop::option::of(
                prop::sample::select(vec!["HEALTHY", "UNHEALTHY", "UNKNOWN", "other"])
                    .prop_map(HealthStatus::from),
            ),
            (
                prop::option::of(any::<String>()),
                prop::option::of(any::<String>()),
            ),
            vec(prop::option::of("[0-9.]{0,15}"), 0..3),
        )
            .prop_map(|((n, s), exit, reason, health, (digest, id), ips)| {
                let mut c = Container::builder()
                    .set_name(n)
                    .set_last_status(s)
                    .set_exit_code(exit)
                    .set_reason(reason)
                    .set_health_status(health)
                    .set_image_digest(digest)
                    .set_runtime_id(id);
                for ip in ips {
                    c = c.network_interfaces(
                        NetworkInterface::builder()
                            .set_private_ipv4_address(ip)
                            .build(),
                    );
                }
                c.build()
            })
    }

    fn task() -> impl Strategy<Value = Task> {
        (
            (
                prop::option::of(status_word()),
                prop::option::of(status_word()),
            ),
            prop::option::of(
                prop::sample::select(vec![
                    "TaskFailedToStart",
                    "EssentialContainerExited",
                    "UserInitiated",
                    "SpotInterruption",
                    "ServiceSchedulerInitiated",
                    "junk",
                ])
                .prop_map(TaskStopCode::from),
            ),
            prop::option::of(any::<String>()),
            (time(), time(), time(), time()),
            vec(container(), 0..5),
            vec(
                vec(
                    (
                        prop::option::of(prop_oneof![
                            Just("privateIPv4Address".to_owned()),
                            any::<String>()
                        ]),
                        prop::option::of(any::<String>()),
                    ),
                    0..3,
                ),
                0..3,
            ),
            (
                prop::option::of(any::<String>()),
                vec(
                    (
                        prop::option::of(any::<String>()),
                        prop::option::of(any::<String>()),
                    ),
                    0..4,
                ),
            ),
        )
            .prop_map(
                |(
                    (last, desired),
                    stop,
                    why,
                    (created, started, stopped, exec_stopped),
                    cs,
                    atts,
                    (arn, tags),
                )| {
                    let mut b = Task::builder()
                        .set_last_status(last)
                        .set_desired_status(desired)
                        .set_stop_code(stop)
                        .set_stopped_reason(why)
                        .set_created_at(created)
                        .set_started_at(started)
                        .set_stopped_at(stopped)
                        .set_execution_stopped_at(exec_stopped)
                        .set_task_arn(arn)
                        .set_containers(Some(cs));
                    for details in atts {
                        let mut a = Attachment::builder().r#type("ElasticNetworkInterface");
                        for (n, v) in details {
                            a = a.details(KeyValuePair::builder().set_name(n).set_value(v).build());
                        }
                        b = b.attachments(a.build());
                    }
                    for (k, v) in tags {
                        b = b.tags(Tag::builder().set_key(k).set_value(v).build());
                    }
                    b.build()
                },
            )
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let list = || vec((name(), any::<String>()), 0..4);
        (list(), list(), vec(name(), 0..3)).prop_map(|(init, app, health_checked)| Shape {
            init,
            app,
            health_checked,
        })
    }

    fn pod_ref() -> PodRef {
        PodRef {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
        }
    }

    /// What a poll does with one described task, and the rules that must hold whatever it says.
    fn use_task(task: &Task, shape: &Shape) -> Result<(), TestCaseError> {
        let s = pod_status(&pod_ref(), task, shape);
        prop_assert_eq!(s.init_container_statuses.len(), shape.init.len());
        prop_assert_eq!(s.container_statuses.len(), shape.app.len());
        let finished = s.phase == PodPhase::Succeeded as i32 || s.phase == PodPhase::Failed as i32;
        prop_assert_eq!(finished, task.last_status() == Some("STOPPED"));
        if s.phase == PodPhase::Succeeded as i32 {
            prop_assert!(!shape.app.is_empty());
        }
        for c in s
            .container_statuses
            .iter()
            .chain(&s.init_container_statuses)
        {
            prop_assert!(!c.ready || c.started, "ready but not started: {:?}", c);
            if let Some(State::Terminated(t)) = c.state.as_ref().and_then(|s| s.state.as_ref()) {
                for t in [t.started_at, t.finished_at].into_iter().flatten() {
                    prop_assert!((0..1_000_000_000).contains(&t.nanos));
                }
            }
        }
        for n in unhealthy(task, shape) {
            prop_assert!(shape.health_checked.contains(&n));
        }
        prop_assert_eq!(s.pod_ip.is_empty(), s.pod_ips.is_empty());
        for ip in s
            .pod_ips
            .iter()
            .chain([&s.pod_ip].into_iter().filter(|i| !i.is_empty()))
        {
            prop_assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{:?}", ip);
        }
        let tags: HashMap<&str, &str> = task
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?, t.value()?)))
            .collect();
        let _ = provider_common::naming::pod_from_tags(tags.iter().map(|(k, v)| (*k, *v)));
        Ok(())
    }

    #[test]
    fn fuzz_tasks_with_any_fields() {
        run(
            || (task(), shape()),
            |(task, shape)| use_task(&task, &shape),
        );
    }

    /// Container Insights figures of any value (NaN, infinities, negative, huge) at any time:
    /// figures are never negative, never wrap, and each CPU counter only grows.
    #[test]
    fn fuzz_metric_points_with_any_values() {
        let value = || {
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(-1.0),
                Just(1e300),
                0.0f64..4096.0
            ]
        };
        let points = move || vec((value(), any::<i64>()), 0..6);
        run(
            move || (vec(points(), 0..8), vec(points(), 0..8)),
            |(first, second)| {
                let tasks = vec![
                    stats::TaskRef::new(
                        pod_ref(),
                        "arn:t/1",
                        "arn:task-definition/f:1",
                        vec!["a".into(), "b".into()],
                    ),
                    stats::TaskRef::new(pod_ref(), "t", "", vec!["c".into()]),
                ];
                let queries = stats::queries("c", &tasks);
                let mut counters = HashMap::new();
                let mut before: HashMap<(String, String), u64> = HashMap::new();
                for round in [first, second] {
                    let answer: HashMap<String, Vec<(f64, i64)>> = queries
                        .iter()
                        .zip(round)
                        .map(|(q, pts)| (q.id.clone(), pts))
                        .collect();
                    let out = stats::assemble(&tasks, &queries, &answer, &mut counters);
                    prop_assert_eq!(out.len(), tasks.len());
                    for (k, c) in &counters {
                        let was = before.get(k).copied().unwrap_or(0);
                        prop_assert!(c.core_nanos >= was, "counter went back");
                        before.insert(k.clone(), c.core_nanos);
                    }
                }
                Ok(())
            },
        );
    }

    /// ECS's words, so junk objects often hit real fields.
    const ECS: Vocabulary = Vocabulary {
        keys: &[
            "tasks",
            "failures",
            "taskArn",
            "lastStatus",
            "desiredStatus",
            "containers",
            "name",
            "exitCode",
            "reason",
            "networkInterfaces",
            "privateIpv4Address",
            "attachments",
            "details",
            "value",
            "key",
            "tags",
            "startedAt",
            "stoppedAt",
        ],
        strings: &[
            "RUNNING",
            "STOPPED",
            "PENDING",
            "ElasticNetworkInterface",
            "privateIPv4Address",
        ],
    };

    /// A value of the expected JSON type most of the time, else any other JSON.
    fn field(good: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
        prop_oneof![8 => good, 1 => arbitrary::json_value(ECS)].boxed()
    }

    fn s(strategy: impl Strategy<Value = String> + 'static) -> BoxedStrategy<Value> {
        field(strategy.prop_map(Value::String).boxed())
    }

    /// Epoch seconds as ECS sends them (JSON numbers, fractions allowed).
    fn epoch() -> BoxedStrategy<Value> {
        field(
            prop_oneof![
                (0i64..4_000_000_000).prop_map(Value::from),
                (0.0f64..4e9).prop_map(|f| json!(f)),
                any::<i64>().prop_map(Value::from),
                Just(json!(1e300)),
                Just(json!(-1e300)),
            ]
            .boxed(),
        )
    }

    fn answer_container() -> BoxedStrategy<Value> {
        (
            s(name()),
            s(status_word()),
            field(any::<i64>().prop_map(Value::from).boxed()),
            s(any::<String>()),
            s(
                prop::sample::select(vec!["HEALTHY", "UNHEALTHY", "UNKNOWN"])
                    .prop_map(str::to_owned),
            ),
            field(Just(json!([{"privateIpv4Address": "10.0.0.8"}])).boxed()),
        )
            .prop_map(|(n, st, exit, reason, health, nics)| {
                json!({"name": n, "lastStatus": st, "exitCode": exit, "reason": reason,
                       "healthStatus": health, "networkInterfaces": nics,
                       "containerArn": "arn:c", "image": "nginx"})
            })
            .boxed()
    }

    fn answer_task() -> BoxedStrategy<Value> {
        (
            (s(status_word()), s(status_word())),
            s(prop::sample::select(vec![
                "EssentialContainerExited",
                "TaskFailedToStart",
                "junk",
            ])
            .prop_map(str::to_owned)),
            (epoch(), epoch(), epoch()),
            field(vec(answer_container(), 0..4).prop_map(Value::Array).boxed()),
            field(
                Just(json!([{"type": "ElasticNetworkInterface", "details": [
                {"name": "privateIPv4Address", "value": "10.0.0.7"}]}]))
                .boxed(),
            ),
            field(Just(json!([{"key": "vk-pod-uid", "value": "u"}, {"key": "vk-node"}])).boxed()),
            s(any::<String>()),
        )
            .prop_map(
                |((last, desired), stop, (created, started, stopped), cs, atts, tags, why)| {
                    json!({"taskArn": "arn:aws:ecs:us-east-1:1:task/vk/abc", "lastStatus": last,
                       "desiredStatus": desired, "stopCode": stop, "stoppedReason": why,
                       "createdAt": created, "startedAt": started, "stoppedAt": stopped,
                       "containers": cs, "attachments": atts, "tags": tags,
                       "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/vk-x:1"})
                },
            )
            .boxed()
    }

    fn answer() -> BoxedStrategy<Value> {
        prop_oneof![
            8 => (
                field(vec(answer_task(), 0..4).prop_map(Value::Array).boxed()),
                field(Just(json!([{"arn": "arn:gone", "reason": "MISSING"}])).boxed()),
            )
                .prop_map(|(tasks, failures)| json!({"tasks": tasks, "failures": failures})),
            1 => any::<String>().prop_map(Value::String),
            1 => Just(json!([])),
        ]
        .boxed()
    }

    /// Serves `body` (the current case's answer) to every request, one request per connection.
    async fn serve(body: Arc<Mutex<Vec<u8>>>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 8192];
                    // The request head, then as many body bytes as it declares.
                    let (head_end, length) = loop {
                        let Ok(n) = sock.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&seen[..i]).to_ascii_lowercase();
                            let length = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (i + 4, length);
                        }
                    };
                    while seen.len() < head_end + length {
                        let Ok(n) = sock.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                    }
                    let body = body.lock().expect("body").clone();
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        addr
    }

    /// DescribeTasks answers with fields of the wrong type or junk values, read by the real SDK
    /// client through `Cloud::describe`: an answer is either read (and its tasks go through the
    /// status code) or an error the poll reports; never a panic. The SDK reads an answer whole,
    /// so one broken task makes the whole answer an error (the poll fails and is retried next
    /// interval; the last statuses stay).
    #[test]
    fn fuzz_describe_tasks_answers_through_the_sdk() {
        run(
            || (answer(), shape()),
            |(answer, shape)| {
                thread_local! {
                    static RT: (tokio::runtime::Runtime, Arc<Mutex<Vec<u8>>>, crate::client::Cloud) = {
                        let rt = tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(1)
                            .enable_all()
                            .build()
                            .expect("runtime");
                        let body = Arc::new(Mutex::new(Vec::new()));
                        let addr = rt.block_on(serve(body.clone()));
                        let sdk = aws_config::SdkConfig::builder()
                            .behavior_version(aws_config::BehaviorVersion::latest())
                            .region(aws_config::Region::new("us-east-1"))
                            .endpoint_url(format!("http://{addr}"))
                            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                                aws_sdk_ecs::config::Credentials::new("k", "s", None, None, "t"),
                            ))
                            .retry_config(aws_config::retry::RetryConfig::disabled())
                            .build();
                        let cloud = crate::client::Cloud {
                            ecs: aws_sdk_ecs::Client::new(&sdk),
                            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
                            secrets: aws_sdk_secretsmanager::Client::new(&sdk),
                            metrics: aws_sdk_cloudwatch::Client::new(&sdk),
                            cluster: "vk".into(),
                            policy: provider_common::retry::RetryPolicy {
                                min_delay: std::time::Duration::from_millis(1),
                                max_delay: std::time::Duration::from_millis(1),
                                max_retries: 0,
                            },
                        };
                        (rt, body, cloud)
                    };
                }
                RT.with(|(rt, body, cloud)| {
                    *body.lock().expect("body") = serde_json::to_vec(&answer).expect("encode");
                    let arns = vec!["arn:aws:ecs:us-east-1:1:task/vk/abc".to_owned()];
                    match rt.block_on(cloud.describe(&arns)) {
                        Ok((tasks, missing)) => {
                            prop_assert!(missing.iter().all(|m| m == "arn:gone"));
                            for t in &tasks {
                                use_task(t, &shape)?;
                            }
                        }
                        Err(e) => {
                            // An error a poll can report, naming the call.
                            prop_assert_eq!(e.op, "DescribeTasks");
                            let _ = e.to_status();
                        }
                    }
                    Ok(())
                })
            },
        );
    }

    /// The fuzz answers are not all refused: a well-formed one is read, and a task with one
    /// field of the wrong type makes the whole answer an error (the SDK reads answers whole).
    #[test]
    fn a_well_formed_answer_is_read_and_one_bad_field_refuses_it_whole() {
        let good = json!({"tasks": [{"taskArn": "arn:t", "lastStatus": "RUNNING", "containers": [
            {"name": "app", "lastStatus": "RUNNING"}]}]});
        let bad = json!({"tasks": [{"taskArn": "arn:t", "lastStatus": "RUNNING", "containers": [
            {"name": "app", "lastStatus": "RUNNING", "exitCode": "zero"}]},
            {"taskArn": "arn:u", "lastStatus": "RUNNING"}]});
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let body = Arc::new(Mutex::new(Vec::new()));
        let addr = rt.block_on(serve(body.clone()));
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{addr}"))
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                aws_sdk_ecs::config::Credentials::new("k", "s", None, None, "t"),
            ))
            .build();
        let ecs = aws_sdk_ecs::Client::new(&sdk);
        let describe = || {
            rt.block_on(ecs.describe_tasks().cluster("vk").tasks("arn:t").send())
                .map_err(|e| crate::error::from_sdk("DescribeTasks", e))
        };
        *body.lock().expect("body") = serde_json::to_vec(&good).expect("encode");
        let out = describe().expect("well-formed");
        assert_eq!(out.tasks().len(), 1);
        *body.lock().expect("body") = serde_json::to_vec(&bad).expect("encode");
        let err = describe().expect_err("a bad field");
        assert_eq!(err.code, "ResponseError", "{err}");
    }
}
