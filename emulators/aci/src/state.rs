//! Shared emulator state: configuration, the stored groups, issued tokens, exec sessions, counters.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{exec::ExecSession, model::Group};

/// Fixed settings from the command line.
pub struct Config {
    pub subscription_id: String,
    pub resource_group: String,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub federated_token: String,
    pub location: String,
    pub provisioning_delay: Duration,
    pub heartbeat: Duration,
    pub token_lifetime: Duration,
    pub retry_after_secs: u64,
    /// `http://127.0.0.1:PORT`: the AAD authority and the base of exec WebSocket URIs.
    pub base_url: String,
}

/// IMDS answers set through `/_emulator/imds-faults`: the next `remaining` token requests get
/// `status` with no body.
#[derive(Clone, Copy, Default, serde::Serialize)]
pub struct ImdsFaults {
    pub status: u16,
    pub remaining: u64,
    /// Fault answers given so far.
    pub served: u64,
}

/// List paging set through `/_emulator/paging`: at most `page_size` groups per List answer
/// (0: all), the rest behind a `nextLink` on `next_link_base` (default: the emulator itself).
#[derive(Clone, Default, serde::Deserialize)]
pub struct Paging {
    #[serde(default)]
    pub page_size: usize,
    #[serde(default)]
    pub next_link_base: Option<String>,
}

/// DELETE answered asynchronously, set through `/_emulator/async-delete`: 202 with an
/// `Azure-AsyncOperation` URL; the group is `Deleting` for `delay_ms`, then gone; the first
/// `fail` such operations end `Failed` instead and the group stays.
#[derive(Clone, Copy, Default, serde::Deserialize)]
pub struct AsyncDelete {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub delay_ms: u64,
    #[serde(default)]
    pub fail: u32,
}

/// An asynchronous DELETE, polled at its `Azure-AsyncOperation` URL.
pub struct Operation {
    pub group: String,
    pub started: time::OffsetDateTime,
    pub done_at: Instant,
    pub fail: bool,
}

/// Counters reported by `/_emulator/stats`.
#[derive(Default)]
pub struct Stats {
    pub created: AtomicU64,
    pub deleted: AtomicU64,
    pub throttled: AtomicU64,
    pub requests: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Authenticated ARM requests per operation, indexed by `Op as usize`.
    pub ops: [AtomicU64; Op::ALL.len()],
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bump_op(&self, op: Op) {
        Self::bump(&self.ops[op as usize]);
    }

    /// `{"put": n, ...}` for every operation, zeros included.
    pub fn ops_json(&self) -> serde_json::Map<String, serde_json::Value> {
        Op::ALL
            .iter()
            .map(|op| {
                let n = self.ops[*op as usize].load(Ordering::Relaxed);
                (op.name().to_owned(), serde_json::Value::from(n))
            })
            .collect()
    }
}

/// The ARM operations counted per operation in `/_emulator/stats` (`ops`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    List,
    Delete,
    Logs,
    Exec,
    Attach,
    Operation,
    Metrics,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Put,
        Op::Get,
        Op::List,
        Op::Delete,
        Op::Logs,
        Op::Exec,
        Op::Attach,
        Op::Operation,
        Op::Metrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
            Op::Delete => "delete",
            Op::Logs => "logs",
            Op::Exec => "exec",
            Op::Attach => "attach",
            Op::Operation => "operation",
            Op::Metrics => "metrics",
        }
    }
}

pub struct AppState {
    pub config: Config,
    pub stats: Stats,
    pub throttle_rate: Mutex<f64>,
    /// Container groups by name (the emulator knows one resource group).
    pub groups: Mutex<BTreeMap<String, Group>>,
    /// Test-injected entries returned verbatim by List and GET (e.g. a malformed group someone
    /// else made); DELETE removes them.
    pub raw_groups: Mutex<BTreeMap<String, serde_json::Value>>,
    /// Every group a DELETE removed, in order: `{"name", "tags"}` (who deleted what).
    pub deleted_log: Mutex<Vec<serde_json::Value>>,
    pub imds_faults: Mutex<ImdsFaults>,
    pub paging: Mutex<Paging>,
    pub async_delete: Mutex<AsyncDelete>,
    /// Metric figures per group and container, set through `/_emulator/groups/{name}/metrics`.
    pub metrics: Mutex<HashMap<String, BTreeMap<String, crate::metrics::Figures>>>,
    /// Asynchronous operations by id.
    pub operations: Mutex<HashMap<String, Operation>>,
    /// Issued access tokens and when they expire.
    pub tokens: Mutex<HashMap<String, Instant>>,
    /// Exec sessions by the id in their WebSocket URI.
    pub exec_sessions: Mutex<HashMap<String, ExecSession>>,
}

impl AppState {
    pub fn new(config: Config, throttle_rate: f64) -> Self {
        Self {
            config,
            stats: Stats::default(),
            throttle_rate: Mutex::new(throttle_rate),
            groups: Mutex::default(),
            raw_groups: Mutex::default(),
            deleted_log: Mutex::default(),
            imds_faults: Mutex::default(),
            paging: Mutex::default(),
            async_delete: Mutex::default(),
            metrics: Mutex::default(),
            operations: Mutex::default(),
            tokens: Mutex::default(),
            exec_sessions: Mutex::default(),
        }
    }
}

/// Locks a mutex; a panic elsewhere while holding it leaves data that is still usable here.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A random lowercase hex string of `bytes` random bytes (tokens, passwords, ids).
pub fn random_hex(bytes: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes * 2);
    for _ in 0..bytes {
        let b: u8 = rand::random();
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// RFC 3339 UTC time, as ARM writes timestamps.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
