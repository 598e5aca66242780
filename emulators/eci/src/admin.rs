//! The unsigned test API under `/_emulator/` (health, stats, throttle, faults, stored groups,
//! exits).

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;
use time::OffsetDateTime;

use crate::{
    lifecycle::{self, ExitError},
    server::Shared,
};

pub async fn stats(State(emu): State<Shared>) -> Response {
    Json(emu.lock().stats.clone()).into_response()
}

#[derive(serde::Deserialize)]
struct ThrottleBody {
    rate: f64,
}

pub async fn throttle(State(emu): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<ThrottleBody>(&body) {
        Ok(b) if (0.0..=1.0).contains(&b.rate) => {
            emu.lock().throttle_rate = b.rate;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "body must be {\"rate\": 0..=1}").into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    lost_answer_rate: f64,
}

/// Fault rates other than throttling (kept on its own endpoint).
pub async fn faults(State(emu): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultsBody>(&body) {
        Ok(b) if (0.0..=1.0).contains(&b.lost_answer_rate) => {
            emu.lock().lost_answer_rate = b.lost_answer_rate;
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            "body must be {\"lost_answer_rate\": 0..=1}",
        )
            .into_response(),
    }
}

fn summary(g: &crate::model::Group) -> serde_json::Value {
    json!({
        "ContainerGroupId": g.id,
        "ContainerGroupName": g.name,
        "Status": g.status,
        "Tags": g.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
    })
}

/// Every stored group (read-only): id, name, status and tags, in creation order.
pub async fn live_groups(State(emu): State<Shared>) -> Response {
    let st = emu.lock();
    Json(st.groups.iter().map(summary).collect::<Vec<_>>()).into_response()
}

/// Every group DeleteContainerGroup removed (read-only), in order, as it was when deleted.
pub async fn deletions(State(emu): State<Shared>) -> Response {
    let st = emu.lock();
    Json(st.deletions.iter().map(summary).collect::<Vec<_>>()).into_response()
}

/// The group as stored: every request parameter as received, plus what Describe shows.
pub async fn group(State(emu): State<Shared>, Path(id): Path<String>) -> Response {
    let st = emu.lock();
    let Some(g) = st
        .groups
        .iter()
        .find(|g| g.id == id)
        .or_else(|| st.groups.iter().find(|g| g.name == id))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    Json(json!({
        "ContainerGroupId": g.id,
        "ContainerGroupName": g.name,
        "Status": g.status,
        "ClientToken": g.client_token,
        "params": g.params.0,
        "described": g.describe_json(),
    }))
    .into_response()
}

/// Replaces the run-time knobs (`server::Knobs`; absent fields take their defaults).
pub async fn knobs(State(emu): State<Shared>, body: Bytes) -> Response {
    match serde_json::from_slice::<crate::server::Knobs>(&body) {
        Ok(k) => {
            emu.lock().knobs = k;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad knobs: {e}")).into_response(),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    status: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    message: String,
    /// The condition type carrying the reason; default `Unschedulable` for Scheduling and
    /// ScheduleFailed, `ContainerInstanceCreated` otherwise (both among the SDK's types).
    #[serde(default)]
    condition: Option<String>,
}

/// Fault knob: puts a group in one of ECI's documented states. With a reason, a Warning event
/// and a failed `PodStatus` condition carry it.
pub async fn set_state(State(emu): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
    let Ok(b) = serde_json::from_slice::<StateBody>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body must be {\"status\": S, \"reason\"?: R, \"message\"?: M}",
        )
            .into_response();
    };
    let mut st = emu.lock();
    let Some(g) = st.groups.iter_mut().find(|g| g.id == id || g.name == id) else {
        return (StatusCode::NOT_FOUND, "no such group").into_response();
    };
    let now = OffsetDateTime::now_utc();
    match lifecycle::set_state(
        g,
        &b.status,
        &b.reason,
        &b.message,
        b.condition.as_deref(),
        now,
    ) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ExitBody {
    exit_code: i32,
}

pub async fn exit(
    State(emu): State<Shared>,
    Path((id, container)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<ExitBody>(&body) else {
        return (StatusCode::BAD_REQUEST, "body must be {\"exit_code\": N}").into_response();
    };
    let mut st = emu.lock();
    let idx = st
        .groups
        .iter()
        .position(|g| g.id == id)
        .or_else(|| st.groups.iter().position(|g| g.name == id));
    let Some(idx) = idx else {
        return (StatusCode::NOT_FOUND, "no such group").into_response();
    };
    let now = OffsetDateTime::now_utc();
    match lifecycle::exit_container(&mut st.groups[idx], &container, body.exit_code, now) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(ExitError::NoSuchContainer) => {
            (StatusCode::NOT_FOUND, "no such container").into_response()
        }
        Err(ExitError::NotRunning) => {
            (StatusCode::CONFLICT, "container is not running").into_response()
        }
    }
}
