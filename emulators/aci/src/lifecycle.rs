//! The simulated run of a group: provisioning, init containers one after another (each exits 0),
//! then the containers; heartbeat log lines; exits and the restart policy.

use std::{sync::Arc, time::Duration, time::Instant};

use time::OffsetDateTime;

use crate::{
    model::{ContainerRun, Group, Provisioning, RestartPolicy, RunState},
    state::{AppState, lock},
};

/// How often the simulation advances.
const TICK: Duration = Duration::from_millis(20);

pub async fn run_ticker(state: Arc<AppState>) {
    let mut interval = tokio::time::interval(TICK);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let mut groups = lock(&state.groups);
        for group in groups.values_mut() {
            advance(group, now, state.config.heartbeat);
        }
        let done: Vec<String> = groups
            .iter()
            .filter(|(_, g)| g.deleting_until.is_some_and(|t| t <= now))
            .map(|(name, _)| name.clone())
            .collect();
        for name in done {
            if let Some(g) = groups.remove(&name) {
                crate::arm::record_deletion(&state, &name, &g.spec["tags"]);
            }
        }
    }
}

/// Moves `group` forward to `now`.
pub fn advance(group: &mut Group, now: Instant, heartbeat: Duration) {
    if group.stopped || matches!(group.provisioning, Provisioning::Faulted(_)) {
        return;
    }
    if let Provisioning::Creating { ready_at } = group.provisioning {
        if now < ready_at {
            return;
        }
        group.provisioning = Provisioning::Succeeded;
    }
    let wall = OffsetDateTime::now_utc();
    // Init containers: the first one not yet terminated runs for one tick, then exits 0.
    if let Some(i) = group
        .containers
        .iter()
        .position(|c| c.init && !matches!(c.state, RunState::Terminated { .. }))
    {
        let c = &mut group.containers[i];
        match c.state {
            RunState::Waiting => start_run(c, now, wall, heartbeat),
            RunState::Running { start } => {
                c.state = RunState::Terminated {
                    start,
                    finish: wall,
                    exit_code: 0,
                };
                c.next_heartbeat = None;
            }
            RunState::Terminated { .. } => {}
        }
        return;
    }
    for c in group.containers.iter_mut().filter(|c| !c.init) {
        if c.held_until.is_some_and(|t| t > now) {
            continue;
        }
        c.held_until = None;
        if matches!(c.state, RunState::Waiting) {
            c.waiting_detail = None;
            start_run(c, now, wall, heartbeat);
        }
        while let Some(next) = c.next_heartbeat {
            if next > now || !c.is_running() {
                break;
            }
            c.heartbeats += 1;
            let line = format!("heartbeat {}", c.heartbeats);
            c.logs.push(crate::model::LogLine {
                at: wall,
                text: line,
            });
            c.next_heartbeat = Some(next + heartbeat);
        }
    }
}

/// Starts a (new) run of `c`: fresh output, first line names the image.
fn start_run(c: &mut ContainerRun, now: Instant, wall: OffsetDateTime, heartbeat: Duration) {
    if c.restart_count == 0 && c.events.is_empty() {
        c.record_event("Pulling", format!("pulling image \"{}\"", c.image), wall);
        c.record_event(
            "Pulled",
            format!("Successfully pulled image \"{}\"", c.image),
            wall,
        );
    }
    c.record_event("Started", "Started container".to_owned(), wall);
    c.state = RunState::Running { start: wall };
    c.logs.clear();
    c.heartbeats = 0;
    c.logs.push(crate::model::LogLine {
        at: wall,
        text: format!(
            "Emulated container {} started from image {}",
            c.name, c.image
        ),
    });
    if !c.command.is_empty() {
        c.logs.push(crate::model::LogLine {
            at: wall,
            text: format!("command: {}", c.command.join(" ")),
        });
    }
    c.next_heartbeat = Some(now + heartbeat);
}

/// The container `name` is held `Waiting` with `detail` (e.g. `CrashLoopBackOff`) for `hold`,
/// with `events` (name, type, message) recorded; a run in progress ends (exit 1, the previous
/// state). Then it starts again, as after a back-off.
pub fn hold_waiting(
    group: &mut Group,
    name: &str,
    detail: String,
    events: &[crate::model::GroupEvent],
    hold: Duration,
) -> Result<(), ExitError> {
    let c = group
        .container_mut(name)
        .ok_or(ExitError::NoSuchContainer)?;
    let wall = OffsetDateTime::now_utc();
    if let RunState::Running { start } = c.state {
        c.previous = Some(RunState::Terminated {
            start,
            finish: wall,
            exit_code: 1,
        });
        c.restart_count += 1;
    }
    c.state = RunState::Waiting;
    c.next_heartbeat = None;
    c.waiting_detail = Some(detail);
    c.held_until = Some(Instant::now() + hold);
    for e in events {
        c.record_typed_event(&e.name, &e.kind, e.message.clone(), wall);
    }
    Ok(())
}

/// Why an exit cannot be applied.
#[derive(Debug)]
pub enum ExitError {
    NoSuchContainer,
    NotRunning,
}

/// The running container `name` exits with `exit_code` now; the restart policy then applies.
pub fn exit_container(
    group: &mut Group,
    name: &str,
    exit_code: i32,
    heartbeat: Duration,
) -> Result<(), ExitError> {
    let policy = group.restart_policy;
    let c = group
        .container_mut(name)
        .ok_or(ExitError::NoSuchContainer)?;
    let RunState::Running { start } = c.state else {
        return Err(ExitError::NotRunning);
    };
    let wall = OffsetDateTime::now_utc();
    let terminated = RunState::Terminated {
        start,
        finish: wall,
        exit_code,
    };
    c.next_heartbeat = None;
    let restart = !c.init
        && match policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        };
    if restart {
        c.previous = Some(terminated);
        c.restart_count += 1;
        start_run(c, Instant::now(), wall, heartbeat);
    } else {
        c.state = terminated;
    }
    Ok(())
}

/// The `stop` action: every running container is killed (exit 137 as from SIGKILL) and stays down.
pub fn stop_group(group: &mut Group) {
    let wall = OffsetDateTime::now_utc();
    for c in &mut group.containers {
        if let RunState::Running { start } = c.state {
            c.record_event("Killing", "Killing container".to_owned(), wall);
            c.state = RunState::Terminated {
                start,
                finish: wall,
                exit_code: 137,
            };
            c.next_heartbeat = None;
        }
    }
    group.stopped = true;
}
