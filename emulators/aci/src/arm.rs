//! The ARM side: `Microsoft.ContainerInstance/containerGroups` under the one known subscription
//! and resource group. Every request is counted, authenticated (bearer token from the AAD side),
//! maybe throttled, then routed by a case-insensitive parse of the path (ARM paths are).

use std::{sync::Arc, time::Instant};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    exec, lifecycle,
    model::Group,
    state::{AppState, Op, Stats, lock},
    validate,
};

/// API versions of the stable ContainerInstance REST reference the emulator accepts.
pub const API_VERSIONS: &[&str] = &[
    "2021-09-01",
    "2021-10-01",
    "2022-09-01",
    "2023-05-01",
    "2024-10-01-preview",
    "2025-09-01",
];

/// An ARM error response: `{"error":{"code","message"}}`.
pub fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

pub fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// What the path names.
enum Target<'a> {
    List,
    Group(&'a str),
    ContainerLogs(&'a str, &'a str),
    ContainerExec(&'a str, &'a str),
    ContainerAttach(&'a str, &'a str),
    Metrics(&'a str),
    GroupAction(&'a str, &'a str),
}

pub async fn handle(
    State(st): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Stats::bump(&st.stats.requests);
    if let Some(resp) = auth_rejection(&st, &headers) {
        Stats::bump(&st.stats.auth_failures);
        return resp;
    }
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if let Some(id) = parse_operation(&st, &segs) {
        st.stats.bump_op(Op::Operation);
        if let Some(resp) = api_version_rejection(uri.query(), &st.config.location) {
            return resp;
        }
        return operation_status(&st, id, path);
    }
    let target = parse_target(&st, &segs);
    // Counted before throttling so a test can see how often a client tried an operation.
    if let Some(op) = target.as_ref().and_then(|t| operation(&method, t)) {
        st.stats.bump_op(op);
    }
    let rate = *lock(&st.throttle_rate);
    if rate > 0.0 && rand::random::<f64>() < rate {
        Stats::bump(&st.stats.throttled);
        let secs = st.config.retry_after_secs;
        let mut resp = arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "SubscriptionRequestsThrottled",
            &format!(
                "Number of requests for subscription '{}' exceeded the limit. Please try again \
                 after '{secs}' seconds. Refer to https://aka.ms/arm-throttling",
                st.config.subscription_id
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let Some(target) = target else {
        return not_found_path(&st, &segs, path);
    };
    // Microsoft.Insights has its own api-versions.
    if let (&Method::GET, Target::Metrics(name)) = (&method, &target) {
        return crate::metrics::list(&st, name, path, uri.query().unwrap_or_default());
    }
    if let Some(resp) = api_version_rejection(uri.query(), &st.config.location) {
        return resp;
    }
    let query = uri.query().unwrap_or_default();
    match (method, target) {
        (Method::GET, Target::List) => list(&st, query),
        (Method::GET, Target::Group(name)) => get(&st, name),
        (Method::PUT, Target::Group(name)) => put(&st, name, &body),
        (Method::DELETE, Target::Group(name)) => delete(&st, name),
        (Method::GET, Target::ContainerLogs(g, c)) => logs(&st, g, c, query),
        (Method::POST, Target::ContainerExec(g, c)) => exec::create_session(&st, g, c, &body),
        (Method::POST, Target::ContainerAttach(g, c)) => exec::create_attach(&st, g, c),
        (Method::POST, Target::GroupAction(g, action)) => group_action(&st, g, action),
        (m, _) => arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("The requested resource does not support http method '{m}'."),
        ),
    }
}

/// The operation counted in `/_emulator/stats` `ops` for `method` on `target`, if any.
fn operation(method: &Method, target: &Target<'_>) -> Option<Op> {
    match (method, target) {
        (&Method::PUT, Target::Group(_)) => Some(Op::Put),
        (&Method::GET, Target::Group(_)) => Some(Op::Get),
        (&Method::GET, Target::List) => Some(Op::List),
        (&Method::DELETE, Target::Group(_)) => Some(Op::Delete),
        (&Method::GET, Target::ContainerLogs(..)) => Some(Op::Logs),
        (&Method::POST, Target::ContainerExec(..)) => Some(Op::Exec),
        (&Method::POST, Target::ContainerAttach(..)) => Some(Op::Attach),
        (&Method::GET, Target::Metrics(..)) => Some(Op::Metrics),
        _ => None,
    }
}

/// Parses `/subscriptions/{s}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/
/// containerGroups[/{name}[/containers/{c}/logs|exec]]` for the known subscription and group.
fn parse_target<'a>(st: &AppState, segs: &[&'a str]) -> Option<Target<'a>> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if segs.len() < 7
        || !eq(segs[0], "subscriptions")
        || !eq(segs[1], &st.config.subscription_id)
        || !eq(segs[2], "resourceGroups")
        || !eq(segs[3], &st.config.resource_group)
        || !eq(segs[4], "providers")
        || !eq(segs[5], "Microsoft.ContainerInstance")
        || !eq(segs[6], "containerGroups")
    {
        return None;
    }
    match segs[7..] {
        [] => Some(Target::List),
        [name] => Some(Target::Group(name)),
        [name, p, ns, m]
            if eq(p, "providers") && eq(ns, "Microsoft.Insights") && eq(m, "metrics") =>
        {
            Some(Target::Metrics(name))
        }
        [name, action] if ["start", "stop", "restart"].iter().any(|a| eq(a, action)) => {
            Some(Target::GroupAction(name, action))
        }
        [name, c, container, op] if eq(c, "containers") => {
            if eq(op, "logs") {
                Some(Target::ContainerLogs(name, container))
            } else if eq(op, "exec") {
                Some(Target::ContainerExec(name, container))
            } else if eq(op, "attach") {
                Some(Target::ContainerAttach(name, container))
            } else {
                None
            }
        }
        _ => None,
    }
}

/// `/subscriptions/{s}/providers/Microsoft.ContainerInstance/locations/{l}/operations/{id}`: an
/// `Azure-AsyncOperation` URL this emulator handed out.
fn parse_operation<'a>(st: &AppState, segs: &[&'a str]) -> Option<&'a str> {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match segs {
        [s, sub, p, ns, l, _, o, id]
            if eq(s, "subscriptions")
                && eq(sub, &st.config.subscription_id)
                && eq(p, "providers")
                && eq(ns, "Microsoft.ContainerInstance")
                && eq(l, "locations")
                && eq(o, "operations") =>
        {
            Some(id)
        }
        _ => None,
    }
}

/// ARM's asynchronous operation status: `{"id", "name", "status", "startTime"[, "endTime",
/// "error"]}`, `status` `InProgress` until done, then `Succeeded` or `Failed`.
fn operation_status(st: &AppState, id: &str, path: &str) -> Response {
    let ops = lock(&st.operations);
    let Some(op) = ops.get(id) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            &format!("The operation '{id}' could not be found."),
        );
    };
    let mut body = json!({
        "id": path,
        "name": id,
        "status": "InProgress",
        "startTime": crate::state::rfc3339(op.started),
    });
    if op.done_at <= Instant::now() {
        body["endTime"] = json!(crate::state::rfc3339(time::OffsetDateTime::now_utc()));
        if op.fail {
            body["status"] = json!("Failed");
            body["error"] = json!({
                "code": "InternalServerError",
                "message": format!("Deleting container group '{}' failed.", op.group),
            });
        } else {
            body["status"] = json!("Succeeded");
        }
    }
    json_response(StatusCode::OK, &body)
}

/// Counts a deletion and logs whose group it was.
pub fn record_deletion(st: &AppState, name: &str, tags: &Value) {
    Stats::bump(&st.stats.deleted);
    lock(&st.deleted_log).push(json!({"name": name, "tags": tags}));
}

/// ARM's answers for a path outside the known subscription/resource group/resource type.
fn not_found_path(st: &AppState, segs: &[&str], path: &str) -> Response {
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    if segs.len() >= 2 && eq(segs[0], "subscriptions") && !eq(segs[1], &st.config.subscription_id) {
        return arm_error(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            &format!("The subscription '{}' could not be found.", segs[1]),
        );
    }
    if segs.len() >= 4 && eq(segs[2], "resourceGroups") && !eq(segs[3], &st.config.resource_group) {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceGroupNotFound",
            &format!("Resource group '{}' could not be found.", segs[3]),
        );
    }
    arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        &format!("The resource type for path '{path}' could not be found."),
    )
}

/// The error for a missing or unknown `api-version`, if any.
fn api_version_rejection(query: Option<&str>, location: &str) -> Option<Response> {
    let version = query.and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "api-version")
            .map(|(_, v)| v)
    });
    match version {
        None | Some("") => Some(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if API_VERSIONS.contains(&v) => None,
        Some(v) => Some(arm_error(
            StatusCode::BAD_REQUEST,
            "NoRegisteredProviderFound",
            &format!(
                "No registered resource provider found for location '{location}' and API version \
                 '{v}' for type 'containerGroups'. The supported api-versions are '{}'.",
                API_VERSIONS.join(", ")
            ),
        )),
    }
}

/// Requires `Authorization: Bearer <token issued here and not expired>`; the 401 ARM sends
/// otherwise.
fn auth_rejection(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    let challenge = |error_description: &str| {
        format!(
            "Bearer authorization_uri=\"{}/{}\", error=\"invalid_token\", \
             error_description=\"{error_description}\"",
            st.config.base_url, st.config.tenant_id
        )
    };
    let reject = |code: &str, message: &str, description: &str| {
        let mut resp = arm_error(StatusCode::UNAUTHORIZED, code, message);
        if let Ok(v) = HeaderValue::from_str(&challenge(description)) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    };
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Some(reject(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
            "The authentication failed because of missing 'Authorization' header.",
        ));
    };
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    else {
        return Some(reject(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
            "The authentication failed because of invalid 'Authorization' header.",
        ));
    };
    let expiry = lock(&st.tokens).get(token.trim()).copied();
    match expiry {
        None => Some(reject(
            "InvalidAuthenticationToken",
            "The access token is invalid.",
            "The access token is invalid.",
        )),
        Some(at) if at <= Instant::now() => Some(reject(
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
            "The access token has expired.",
        )),
        Some(_) => None,
    }
}

fn group_not_found(st: &AppState, name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' under resource \
             group '{}' was not found. For more details please go to \
             https://aka.ms/ARMResourceNotFoundFix",
            st.config.resource_group
        ),
    )
}

/// The list, in pages when `/_emulator/paging` asks: `$skiptoken` (an offset here; opaque to
/// clients) says where a page starts, `nextLink` (absolute, as ARM's) where the next one is.
fn list(st: &AppState, query: &str) -> Response {
    let mut value: Vec<Value> = lock(&st.groups)
        .values()
        .map(|g| g.list_view(&st.config))
        .collect();
    value.extend(lock(&st.raw_groups).values().cloned());
    let paging = lock(&st.paging).clone();
    if paging.page_size == 0 {
        return json_response(StatusCode::OK, &json!({ "value": value }));
    }
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())
    };
    let skip: usize = param("$skiptoken")
        .or_else(|| param("%24skiptoken"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let end = skip.saturating_add(paging.page_size).min(value.len());
    let page: Vec<Value> = value
        .get(skip..end)
        .map(<[Value]>::to_vec)
        .unwrap_or_default();
    let mut body = json!({ "value": page });
    if end < value.len() {
        let base = paging
            .next_link_base
            .unwrap_or_else(|| st.config.base_url.clone());
        let version = param("api-version").unwrap_or_default();
        body["nextLink"] = json!(format!(
            "{}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.ContainerInstance/containerGroups?api-version={version}&$skiptoken={end}",
            base.trim_end_matches('/'),
            st.config.subscription_id,
            st.config.resource_group
        ));
    }
    json_response(StatusCode::OK, &body)
}

fn get(st: &AppState, name: &str) -> Response {
    if let Some(g) = lock(&st.groups).get(name) {
        return json_response(StatusCode::OK, &g.view(&st.config));
    }
    match lock(&st.raw_groups).get(name) {
        Some(raw) => json_response(StatusCode::OK, raw),
        None => group_not_found(st, name),
    }
}

fn put(st: &AppState, name: &str, body: &[u8]) -> Response {
    let spec: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                &format!(
                    // serde_json's syntax errors name a position, never the body's content.
                    "The request content was invalid and could not be deserialized: '{e}'."
                ),
            );
        }
    };
    if let Err(inv) = validate::check_group(name, &spec) {
        tracing::info!(group = name, code = inv.code, "PUT rejected");
        return arm_error(StatusCode::BAD_REQUEST, inv.code, &inv.message);
    }
    let mut groups = lock(&st.groups);
    if let Some(existing) = groups.get(name)
        && existing.spec == spec
    {
        return json_response(StatusCode::OK, &existing.view(&st.config));
    }
    let group = match Group::new(name, spec, &st.config) {
        Ok(mut g) => {
            // An update keeps the resource's identity.
            if let Some(existing) = groups.get(name) {
                g.principal_id.clone_from(&existing.principal_id);
            }
            g
        }
        Err(e) => {
            tracing::error!(group = name, "creating the work directory: {e}");
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Encountered internal server error.",
            );
        }
    };
    let view = group.view(&st.config);
    let status = if groups.insert(name.to_owned(), group).is_some() {
        tracing::info!(group = name, "container group updated");
        StatusCode::OK
    } else {
        Stats::bump(&st.stats.created);
        tracing::info!(group = name, "container group created");
        StatusCode::CREATED
    };
    json_response(status, &view)
}

fn delete(st: &AppState, name: &str) -> Response {
    let async_delete = *lock(&st.async_delete);
    if async_delete.enabled && lock(&st.groups).contains_key(name) {
        return delete_async(st, name, async_delete);
    }
    let removed = lock(&st.groups).remove(name);
    match removed {
        Some(g) => {
            record_deletion(st, name, &g.spec["tags"]);
            exec::forget_group(st, name);
            tracing::info!(group = name, "container group deleted");
            json_response(StatusCode::OK, &g.view(&st.config))
        }
        None => match lock(&st.raw_groups).remove(name) {
            Some(raw) => {
                record_deletion(st, name, &raw["tags"]);
                json_response(StatusCode::OK, &raw)
            }
            None => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

/// The reference's 202 for ContainerGroups_Delete (a long-running operation): the group shows
/// `Deleting` until the operation at `Azure-AsyncOperation` (and `Location`) is done.
fn delete_async(st: &AppState, name: &str, cfg: crate::state::AsyncDelete) -> Response {
    let fail = {
        let mut a = lock(&st.async_delete);
        let fail = a.fail > 0;
        a.fail = a.fail.saturating_sub(1);
        fail
    };
    let done_at = Instant::now() + std::time::Duration::from_millis(cfg.delay_ms);
    let mut groups = lock(&st.groups);
    let Some(g) = groups.get_mut(name) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    // A failing operation leaves the group as it was.
    if !fail {
        g.deleting_until = Some(g.deleting_until.map_or(done_at, |t| t.min(done_at)));
    }
    drop(groups);
    let id = crate::state::random_hex(16);
    lock(&st.operations).insert(
        id.clone(),
        crate::state::Operation {
            group: name.to_owned(),
            started: time::OffsetDateTime::now_utc(),
            done_at,
            fail,
        },
    );
    exec::forget_group(st, name);
    tracing::info!(group = name, fail, "container group deletion accepted");
    let url = format!(
        "{}/subscriptions/{}/providers/Microsoft.ContainerInstance/locations/{}/operations/{id}?api-version=2023-05-01",
        st.config.base_url,
        st.config.subscription_id,
        st.config.location.to_ascii_lowercase().replace(' ', "")
    );
    let mut resp = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert("azure-asyncoperation", v.clone());
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str("1") {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn logs(st: &AppState, group: &str, container: &str, query: &str) -> Response {
    let mut tail: Option<usize> = None;
    let mut timestamps = false;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match k {
            "tail" => match v.parse() {
                Ok(n) => tail = Some(n),
                Err(_) => {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameter",
                        &format!("The value '{v}' of parameter 'tail' is not a valid integer."),
                    );
                }
            },
            "timestamps" => timestamps = v.eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    let groups = lock(&st.groups);
    let Some(g) = groups.get(group) else {
        return group_not_found(st, group);
    };
    let Some(c) = g.container(container) else {
        return container_not_found(group, container);
    };
    let skip = tail.map_or(0, |n| c.logs.len().saturating_sub(n));
    let mut content = String::new();
    for line in &c.logs[skip..] {
        if timestamps {
            content.push_str(&crate::state::rfc3339(line.at));
            content.push(' ');
        }
        content.push_str(&line.text);
        content.push('\n');
    }
    json_response(StatusCode::OK, &json!({ "content": content }))
}

pub fn container_not_found(group: &str, container: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ContainerNotFound",
        &format!("The container '{container}' is not found in container group '{group}'."),
    )
}

/// `stop` (204; containers killed, state Stopped), `restart` (204; runs again from the
/// beginning), `start` (204 and no change while Pending or Running, else 202 and runs again from
/// the beginning): the statuses of the REST reference's ContainerGroups_Stop/_Restart/_Start.
fn group_action(st: &AppState, name: &str, action: &str) -> Response {
    let mut groups = lock(&st.groups);
    let Some(g) = groups.get_mut(name) else {
        return group_not_found(st, name);
    };
    if action.eq_ignore_ascii_case("stop") {
        lifecycle::stop_group(g);
        return StatusCode::NO_CONTENT.into_response();
    }
    let status = if !action.eq_ignore_ascii_case("start") {
        StatusCode::NO_CONTENT
    } else if matches!(g.instance_state(), "Pending" | "Running") {
        // The reference's 204: "the container group is already running or starting".
        return StatusCode::NO_CONTENT.into_response();
    } else {
        StatusCode::ACCEPTED
    };
    let spec = g.spec.clone();
    match Group::new(name, spec, &st.config) {
        Ok(mut fresh) => {
            fresh.principal_id = std::mem::take(&mut g.principal_id);
            *g = fresh;
            status.into_response()
        }
        Err(e) => {
            tracing::error!(group = name, "creating the work directory: {e}");
            arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "Encountered internal server error.",
            )
        }
    }
}
