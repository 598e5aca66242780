//! The test-only admin API under `/_emulator/` (no auth): health, counters, throttle rate, the
//! stored PUT body of a group, and making a container exit.

use std::sync::{Arc, atomic::Ordering};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    lifecycle::{self, ExitError},
    model::GroupEvent,
    state::{AppState, AsyncDelete, Paging, lock},
};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_emulator/health", get(|| async { StatusCode::OK }))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/throttle", put(set_throttle))
        .route("/_emulator/groups", get(live_groups))
        .route("/_emulator/deleted", get(deleted_groups))
        .route("/_emulator/groups/{name}", get(stored_group))
        .route(
            "/_emulator/groups/{name}/containers/{container}/exit",
            post(exit),
        )
        .route("/_emulator/groups/{name}/fault", post(fault))
        .route("/_emulator/groups/{name}/metrics", put(set_metrics))
        .route(
            "/_emulator/groups/{name}/containers/{container}/waiting",
            post(waiting),
        )
        .route(
            "/_emulator/imds-faults",
            put(set_imds_faults).get(imds_faults),
        )
        .route("/_emulator/paging", put(set_paging))
        .route("/_emulator/async-delete", put(set_async_delete))
        .route("/_emulator/raw-groups/{name}", put(put_raw))
}

/// DELETE answers 202 + `Azure-AsyncOperation` (`enabled`), the group `Deleting` for
/// `delay_ms`; the next `fail` operations end `Failed` and leave the group.
async fn set_async_delete(State(st): State<Arc<AppState>>, Json(a): Json<AsyncDelete>) -> Response {
    *lock(&st.async_delete) = a;
    StatusCode::NO_CONTENT.into_response()
}

/// List pages of at most `page_size` groups (0: one page), `nextLink`s on `next_link_base`.
async fn set_paging(State(st): State<Arc<AppState>>, Json(p): Json<Paging>) -> Response {
    *lock(&st.paging) = p;
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct SetImdsFaults {
    status: u16,
    count: u64,
}

/// The next `count` IMDS token requests answer `status` (e.g. 404, 410) with no body.
async fn set_imds_faults(
    State(st): State<Arc<AppState>>,
    Json(f): Json<SetImdsFaults>,
) -> Response {
    if !(400..=599).contains(&f.status) {
        return (StatusCode::BAD_REQUEST, "status must be 400 to 599").into_response();
    }
    let mut faults = lock(&st.imds_faults);
    faults.status = f.status;
    faults.remaining = f.count;
    StatusCode::NO_CONTENT.into_response()
}

async fn imds_faults(State(st): State<Arc<AppState>>) -> Response {
    Json(*lock(&st.imds_faults)).into_response()
}

#[derive(Deserialize)]
struct Fault {
    provisioning_state: String,
    #[serde(default)]
    events: Vec<GroupEvent>,
}

/// Puts a group in a terminal provisioning state with group-level events (a failed mount, a
/// canceled deployment), which the emulator does not otherwise simulate.
async fn fault(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Json(f): Json<Fault>,
) -> Response {
    if f.provisioning_state.is_empty() || f.provisioning_state == "Succeeded" {
        return (
            StatusCode::BAD_REQUEST,
            "provisioning_state must be a failure such as Failed or Canceled",
        )
            .into_response();
    }
    let mut groups = lock(&st.groups);
    let Some(g) = groups.get_mut(&name) else {
        return (StatusCode::NOT_FOUND, "no such container group").into_response();
    };
    tracing::info!(group = %name, state = %f.provisioning_state, events = f.events.len(), "container group faulted (admin)");
    g.fault(f.provisioning_state, f.events);
    StatusCode::NO_CONTENT.into_response()
}

/// Stores any JSON as a listed group named `name`, verbatim (e.g. one this API would never
/// produce), beside the simulated ones.
async fn put_raw(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Json(raw): Json<serde_json::Value>,
) -> Response {
    if lock(&st.groups).contains_key(&name) {
        return (StatusCode::CONFLICT, "a simulated group has that name").into_response();
    }
    lock(&st.raw_groups).insert(name.clone(), raw);
    tracing::info!(group = %name, "raw group stored (admin)");
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(st): State<Arc<AppState>>) -> Response {
    let s = &st.stats;
    let live = lock(&st.groups).len() + lock(&st.raw_groups).len();
    Json(json!({
        "created": s.created.load(Ordering::Relaxed),
        "deleted": s.deleted.load(Ordering::Relaxed),
        "live": live,
        "throttled": s.throttled.load(Ordering::Relaxed),
        "requests": s.requests.load(Ordering::Relaxed),
        "auth_failures": s.auth_failures.load(Ordering::Relaxed),
        "ops": s.ops_json(),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Throttle {
    rate: f64,
}

async fn set_throttle(State(st): State<Arc<AppState>>, Json(t): Json<Throttle>) -> Response {
    if !(0.0..=1.0).contains(&t.rate) {
        return (StatusCode::BAD_REQUEST, "rate must be within 0..=1").into_response();
    }
    *lock(&st.throttle_rate) = t.rate;
    tracing::info!(rate = t.rate, "throttle rate changed");
    StatusCode::NO_CONTENT.into_response()
}

/// Every group now in the resource group (simulated and raw): `[{"name", "tags"}]` by name.
async fn live_groups(State(st): State<Arc<AppState>>) -> Response {
    let mut out: Vec<serde_json::Value> = lock(&st.groups)
        .iter()
        .map(|(name, g)| json!({"name": name, "tags": g.spec["tags"]}))
        .collect();
    out.extend(
        lock(&st.raw_groups)
            .iter()
            .map(|(name, raw)| json!({"name": name, "tags": raw["tags"]})),
    );
    Json(out).into_response()
}

/// Every group a DELETE removed, in order: `[{"name", "tags"}]`.
async fn deleted_groups(State(st): State<Arc<AppState>>) -> Response {
    Json(lock(&st.deleted_log).clone()).into_response()
}

async fn stored_group(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match lock(&st.groups).get(&name) {
        Some(g) => Json(g.spec.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The `CpuUsage` (millicores) and `MemoryUsage` (bytes) the group's containers report while
/// they run: `{"<container>": {"cpu_millicores": 250, "memory_bytes": 73400320}}`.
async fn set_metrics(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    Json(f): Json<std::collections::BTreeMap<String, crate::metrics::Figures>>,
) -> Response {
    lock(&st.metrics).insert(name, f);
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
struct Waiting {
    detail_status: String,
    #[serde(default)]
    events: Vec<GroupEvent>,
    #[serde(default = "default_hold_ms")]
    hold_ms: u64,
}

fn default_hold_ms() -> u64 {
    60_000
}

/// Holds a container `Waiting` with a `detailStatus` and container events of any type (a
/// back-off with a Warning `BackOff`, a failed pull), which the emulator does not otherwise
/// simulate; it starts again after `hold_ms`.
async fn waiting(
    State(st): State<Arc<AppState>>,
    Path((name, container)): Path<(String, String)>,
    Json(w): Json<Waiting>,
) -> Response {
    let mut groups = lock(&st.groups);
    let Some(g) = groups.get_mut(&name) else {
        return (StatusCode::NOT_FOUND, "no such container group").into_response();
    };
    let hold = std::time::Duration::from_millis(w.hold_ms);
    match lifecycle::hold_waiting(g, &container, w.detail_status, &w.events, hold) {
        Ok(()) => {
            tracing::info!(group = %name, container = %container, "container held waiting (admin)");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(_) => (StatusCode::NOT_FOUND, "no such container").into_response(),
    }
}

#[derive(Deserialize)]
struct Exit {
    exit_code: i32,
}

async fn exit(
    State(st): State<Arc<AppState>>,
    Path((name, container)): Path<(String, String)>,
    Json(e): Json<Exit>,
) -> Response {
    let mut groups = lock(&st.groups);
    let Some(g) = groups.get_mut(&name) else {
        return (StatusCode::NOT_FOUND, "no such container group").into_response();
    };
    match lifecycle::exit_container(g, &container, e.exit_code, st.config.heartbeat) {
        Ok(()) => {
            tracing::info!(group = %name, container = %container, exit_code = e.exit_code, "container exited (admin)");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(ExitError::NoSuchContainer) => {
            (StatusCode::NOT_FOUND, "no such container").into_response()
        }
        Err(ExitError::NotRunning) => {
            (StatusCode::CONFLICT, "container is not running").into_response()
        }
    }
}
