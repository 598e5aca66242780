//! How a group lives: `Pending` for `--start-delay-ms`, then its init containers run (and exit 0)
//! in order, then its containers run. A container "exits" only when the admin API says so; the
//! group's RestartPolicy (Always / OnFailure / Never, Kubernetes semantics) then decides whether
//! it restarts (RestartCount + 1, PreviousState kept). When every container has terminated the
//! group is `Succeeded` (all exit codes 0) or `Failed`.
//!
//! Every change goes through [`tracked`], which moves `status_changed` (what `SinceSecond`
//! selects on) whenever what DescribeContainerGroupStatus shows for the group changes.

use time::{Duration, OffsetDateTime};

use crate::model::{Container, Event, Group, RunState, format_time};

/// Applies `change` to `g`; if the group's DescribeContainerGroupStatus entry differs afterwards
/// (group status, container states, restart counts, readiness, ...), the group counts as changed
/// `now`. Comparing the rendered entry, rather than listing fields, keeps this true when the
/// entry gains fields.
fn tracked<R>(g: &mut Group, now: OffsetDateTime, change: impl FnOnce(&mut Group) -> R) -> R {
    let before = g.status_json();
    let result = change(g);
    if g.status_json() != before {
        g.status_changed = now;
    }
    result
}

/// Moves a Pending group to Running once its start delay has passed.
pub fn advance(g: &mut Group, now: OffsetDateTime, start_delay: Duration) {
    if g.status != "Pending" || now - g.created < start_delay {
        return;
    }
    tracked(g, now, |g| {
        for c in &mut g.init_containers {
            c.state = RunState::Terminated {
                start: now,
                finish: now,
                exit_code: 0,
                reason: "Completed".into(),
            };
        }
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
    });
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
