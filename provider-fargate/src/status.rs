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

/// The task's private IPv4 address, from its network interface attachment.
pub fn pod_ip(task: &Task) -> Option<String> {
    task.attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("privateIPv4Address"))
        .and_then(|d| d.value())
        .map(str::to_owned)
        .or_else(|| {
            task.containers()
                .iter()
                .flat_map(Container::network_interfaces)
                .find_map(|n| n.private_ipv4_address().map(str::to_owned))
        })
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
