//! How a group lives (ECI's lifecycle guide): `Pending` for `--start-delay-ms`, then its init
//! containers run in order while the app containers wait (the group stays `Pending`: no
//! container runs yet), then its containers run (`Running`). Init containers exit 0 at once,
//! unless the `hold_init_containers` knob keeps each running until the admin API makes it exit.
//! A container "exits" only when the admin API says so; the group's RestartPolicy (Always /
//! OnFailure / Never, Kubernetes semantics) then decides whether it restarts (RestartCount + 1,
//! PreviousState kept). An init container that fails under `Never` fails the group. When every
//! container has terminated the group is `Succeeded` (all exit codes 0) or `Failed`.
//!
//! Every change goes through [`tracked`], which moves `status_changed` (what `SinceSecond`
//! selects on) whenever what DescribeContainerGroupStatus shows for the group changes.

use time::{Duration, OffsetDateTime};

use crate::model::{Container, Event, Fault, Group, RunState, format_time};

/// Applies `change` to `g`; if the group's DescribeContainerGroupStatus entry differs afterwards
/// (group status, container states, restart counts, readiness, ...), the group counts as changed
/// `now`. Comparing the rendered entry, rather than listing fields, keeps this true when the
/// entry gains fields.
pub fn tracked<R>(g: &mut Group, now: OffsetDateTime, change: impl FnOnce(&mut Group) -> R) -> R {
    // Init containers are not in the status entry; their changes count too.
    let seen = |g: &Group| (g.status_json(), g.init_states_json());
    let before = seen(g);
    let result = change(g);
    if seen(g) != before {
        g.status_changed = now;
    }
    result
}

/// Moves a Pending group on once its start delay has passed: the first init container runs
/// (with `hold_init`), or every init container completes and the app containers run.
pub fn advance(g: &mut Group, now: OffsetDateTime, start_delay: Duration, hold_init: bool) {
    if g.status != "Pending" || now - g.created < start_delay {
        return;
    }
    // Already initializing: driven by exits from here.
    if g.init_containers
        .iter()
        .any(|c| !matches!(c.state, RunState::Waiting))
    {
        return;
    }
    tracked(g, now, |g| {
        if hold_init && !g.init_containers.is_empty() {
            start_init(g, 0, now);
            return;
        }
        for c in &mut g.init_containers {
            c.state = RunState::Terminated {
                start: now,
                finish: now,
                exit_code: 0,
                reason: "Completed".into(),
            };
        }
        start_apps(g, now);
    });
}

fn start_init(g: &mut Group, i: usize, now: OffsetDateTime) {
    if let Some(c) = g.init_containers.get_mut(i) {
        c.state = RunState::Running { start: now };
        let name = c.spec.name.clone();
        g.events.push(Event {
            kind: "Normal",
            reason: "Started",
            message: format!("Started init container {name}"),
            at: now,
        });
    }
}

fn start_apps(g: &mut Group, now: OffsetDateTime) {
    for c in &mut g.containers {
        c.state = RunState::Running { start: now };
        g.events.push(Event {
            kind: "Normal",
            reason: "Started",
            message: format!("Started container {}", c.spec.name),
            at: now,
        });
    }
    g.status = "Running";
}

/// The statuses the fault API may set (every documented one).
pub const STATES: &[&str] = &[
    "Scheduling",
    "Pending",
    "Running",
    "ScheduleFailed",
    "Restarting",
    "Updating",
    "Terminating",
    "Expired",
    "Failed",
    "Succeeded",
];

/// Fault knob: the group's status becomes `status`. A non-empty `reason` adds a Warning event
/// and a failed condition; `Scheduling` and `ScheduleFailed` put the containers back to
/// Waiting (nothing runs before scheduling); `Expired` and `Failed` record their time.
pub fn set_state(
    g: &mut Group,
    status: &str,
    reason: &str,
    message: &str,
    condition: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), String> {
    let Some(status) = STATES.iter().copied().find(|s| *s == status) else {
        return Err(format!("status must be one of {STATES:?}"));
    };
    tracked(g, now, |g| {
        g.status = status;
        match status {
            "Scheduling" | "ScheduleFailed" => {
                for c in g.containers.iter_mut().chain(g.init_containers.iter_mut()) {
                    c.state = RunState::Waiting;
                }
            }
            "Expired" => g.expired = Some(now),
            "Failed" => g.failed = Some(now),
            "Succeeded" => g.succeeded = Some(now),
            _ => {}
        }
        g.fault = (!reason.is_empty()).then(|| Fault {
            kind: condition
                .unwrap_or(if matches!(status, "Scheduling" | "ScheduleFailed") {
                    "Unschedulable"
                } else {
                    "ContainerInstanceCreated"
                })
                .to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            at: now,
        });
        if !reason.is_empty() {
            g.events.push(Event {
                kind: "Warning",
                reason: leak_reason(reason),
                message: message.to_owned(),
                at: now,
            });
        }
    });
    Ok(())
}

/// Event reasons are `&'static str`; the fault API's few distinct reasons are interned.
fn leak_reason(reason: &str) -> &'static str {
    use std::{collections::HashSet, sync::Mutex};
    static SEEN: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let set = seen.get_or_insert_with(HashSet::new);
    if let Some(r) = set.get(reason) {
        return r;
    }
    let r: &'static str = Box::leak(reason.to_owned().into_boxed_str());
    set.insert(r);
    r
}

/// Why an exit could not be applied.
#[derive(Debug, PartialEq, Eq)]
pub enum ExitError {
    NoSuchContainer,
    NotRunning,
}

/// The container `name` exits now with `exit_code`.
pub fn exit_container(
    g: &mut Group,
    name: &str,
    exit_code: i32,
    now: OffsetDateTime,
) -> Result<(), ExitError> {
    tracked(g, now, |g| apply_exit(g, name, exit_code, now))
}

fn apply_exit(
    g: &mut Group,
    name: &str,
    exit_code: i32,
    now: OffsetDateTime,
) -> Result<(), ExitError> {
    if let Some(i) = g.init_containers.iter().position(|c| c.spec.name == name) {
        return init_exit(g, i, exit_code, now);
    }
    let policy = g.restart_policy.clone();
    let c = g.container_mut(name).ok_or(ExitError::NoSuchContainer)?;
    let RunState::Running { start } = c.state else {
        return Err(ExitError::NotRunning);
    };
    let terminated = RunState::Terminated {
        start,
        finish: now,
        exit_code,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
    };
    let restart = match policy.as_str() {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    };
    if restart {
        c.previous = Some(terminated);
        c.restart_count += 1;
        c.state = RunState::Running { start: now };
    } else {
        c.state = terminated;
    }
    let all_done = g
        .containers
        .iter()
        .all(|c| matches!(c.state, RunState::Terminated { .. }));
    if all_done {
        let ok = g
            .containers
            .iter()
            .all(|c| matches!(c.state, RunState::Terminated { exit_code: 0, .. }));
        if ok {
            g.succeeded = Some(now);
            g.status = "Succeeded";
        } else {
            g.failed = Some(now);
            g.status = "Failed";
        }
    }
    Ok(())
}

/// Init container `i` exits: 0 starts the next one (or the app containers); anything else
/// restarts it, except under `Never`, where the group fails (Kubernetes' rule for init
/// containers: `Always` restarts them like `OnFailure`).
fn init_exit(
    g: &mut Group,
    i: usize,
    exit_code: i32,
    now: OffsetDateTime,
) -> Result<(), ExitError> {
    let never = g.restart_policy == "Never";
    let c = &mut g.init_containers[i];
    let RunState::Running { start } = c.state else {
        return Err(ExitError::NotRunning);
    };
    let terminated = RunState::Terminated {
        start,
        finish: now,
        exit_code,
        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
    };
    if exit_code == 0 {
        c.state = terminated;
        if i + 1 < g.init_containers.len() {
            start_init(g, i + 1, now);
        } else {
            start_apps(g, now);
        }
    } else if never {
        c.state = terminated;
        g.failed = Some(now);
        g.status = "Failed";
    } else {
        c.previous = Some(terminated);
        c.restart_count += 1;
        c.state = RunState::Running { start: now };
    }
    Ok(())
}

/// DescribeContainerLog's documented `Tail` default and maximum (lines).
pub const TAIL_DEFAULT: usize = 500;
pub const TAIL_MAX: usize = 2000;
/// The documented most a log answer returns, and the upper bound of `LimitBytes` (1 MB).
pub const CONTENT_MAX_BYTES: usize = 1_048_576;

/// Options of DescribeContainerLog.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Lines from the end (already defaulted and capped).
    pub tail: usize,
    /// Only lines written at or after this time (`StartTime`).
    pub start_time: Option<OffsetDateTime>,
    pub since_seconds: Option<i64>,
    pub limit_bytes: Option<usize>,
    pub timestamps: bool,
    /// The previous run of a restarted container (`LastTime`) instead of the current one.
    pub previous: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            tail: TAIL_DEFAULT,
            start_time: None,
            since_seconds: None,
            limit_bytes: None,
            timestamps: false,
            previous: false,
        }
    }
}

/// The lines one run of `c` wrote between `start` and `end`: a start line, the command line if
/// it has one, then `heartbeat <n>` every `heartbeat`. Environment values are never printed.
fn run_lines(
    c: &Container,
    start: OffsetDateTime,
    end: OffsetDateTime,
    heartbeat: Duration,
) -> Vec<(OffsetDateTime, String)> {
    let mut lines: Vec<(OffsetDateTime, String)> = vec![(
        start,
        format!(
            "Emulated container {} started from image {}",
            c.spec.name, c.spec.image
        ),
    )];
    let argv: Vec<&str> = c
        .spec
        .command
        .iter()
        .chain(c.spec.args.iter())
        .map(String::as_str)
        .collect();
    if !argv.is_empty() {
        lines.push((start, format!("command: {}", argv.join(" "))));
    }
    let mut n: i32 = 1;
    while start + heartbeat * n <= end {
        lines.push((start + heartbeat * n, format!("heartbeat {n}")));
        n += 1;
    }
    lines
}

/// The simulated log of the container `name` (its current run, or with `previous` the run
/// before its last restart; empty if it never restarted), filtered as DescribeContainerLog's
/// options say. `None` if the group has no such container.
pub fn log_content(
    g: &Group,
    name: &str,
    now: OffsetDateTime,
    heartbeat: Duration,
    opts: &LogOptions,
) -> Option<String> {
    let c = g.find_container(name)?;
    let run = if opts.previous {
        c.previous.as_ref()
    } else {
        Some(&c.state)
    };
    let (start, end) = match run {
        None | Some(RunState::Waiting) => return Some(String::new()),
        Some(RunState::Running { start }) => (*start, now),
        Some(RunState::Terminated { start, finish, .. }) => (*start, *finish),
    };
    let mut lines = run_lines(c, start, end, heartbeat);
    if let Some(from) = opts.start_time {
        lines.retain(|(t, _)| *t >= from);
    }
    if let Some(secs) = opts.since_seconds {
        let cutoff = now - Duration::seconds(secs);
        lines.retain(|(t, _)| *t >= cutoff);
    }
    let skip = lines.len().saturating_sub(opts.tail);
    lines.drain(..skip);
    let mut content: String = lines
        .iter()
        .map(|(t, l)| {
            if opts.timestamps {
                format!("{} {l}\n", format_time(*t))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let limit = opts
        .limit_bytes
        .unwrap_or(CONTENT_MAX_BYTES)
        .min(CONTENT_MAX_BYTES);
    let mut cut = limit.min(content.len());
    while !content.is_char_boundary(cut) {
        cut -= 1;
    }
    content.truncate(cut);
    Some(content)
}
