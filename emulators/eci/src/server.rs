//! The listener: routing, per-request authentication (signature V3), throttling, lost answers,
//! and the shared emulator state.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration as StdDuration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{any, get, post, put},
};
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

use crate::{
    API_VERSION, Config, admin, api,
    errors::ApiError,
    exec::{self, ExecSession},
    lifecycle,
    model::Group,
    signature,
};

/// Counters served by `/_emulator/stats`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Stats {
    pub created: u64,
    pub deleted: u64,
    pub live: u64,
    pub throttled: u64,
    pub requests: u64,
    pub auth_failures: u64,
    /// Applied Create/DeleteContainerGroup calls answered `ServiceUnavailable` anyway.
    pub lost_answers: u64,
    /// Keys issued by AssumeRoleWithOIDC.
    pub sts_issued: u64,
    /// Distinct OIDC tokens AssumeRoleWithOIDC received.
    pub oidc_tokens_seen: u64,
    /// Keys issued by the metadata service.
    pub metadata_issued: u64,
    /// Calls rejected because their temporary key had expired (also in `auth_failures`).
    pub expired_keys: u64,
    /// Authenticated API calls by `x-acs-action`, whatever happened after authentication
    /// (throttled, invalid parameters and lost answers included).
    pub actions: BTreeMap<String, u64>,
}

/// Everything that changes while the emulator runs.
#[derive(Debug, Default)]
pub struct EmulatorState {
    /// Groups in creation order.
    pub groups: Vec<Group>,
    /// ClientToken → ContainerGroupId, kept after deletion (the token stays spent).
    pub client_tokens: HashMap<String, String>,
    /// Nonces seen in the last 15 minutes.
    pub nonces: HashMap<String, OffsetDateTime>,
    /// Single-use exec WebSocket sessions by token.
    pub exec_sessions: HashMap<String, ExecSession>,
    pub stats: Stats,
    /// Every group removed by DeleteContainerGroup, in order, with its tags (what was deleted,
    /// not just how many, so tests can tell whose groups went).
    pub deletions: Vec<Group>,
    pub throttle_rate: f64,
    pub lost_answer_rate: f64,
    pub next_seq: u64,
    pub knobs: Knobs,
    /// Groups dropped by the retention rules (not by DeleteContainerGroup).
    pub reaped: Vec<Group>,
    /// Temporary keys issued by STS or the metadata service, by AccessKey id.
    pub issued: HashMap<String, crate::sts::Issued>,
    /// OIDC tokens AssumeRoleWithOIDC has seen.
    pub oidc_tokens: Vec<String>,
    /// Metadata session tokens handed out.
    pub metadata_tokens: Vec<String>,
}

/// Behaviour set at run time through `PUT /_emulator/knobs`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Init containers run until the admin API makes them exit (else they complete at once).
    pub hold_init_containers: bool,
    /// Longest Terminating phase of a deleted group with a preStop hook (its grace period
    /// otherwise).
    pub terminating_ms: u64,
    /// Finished groups (Succeeded, Failed, Expired) are all kept this long (documented: 1 h)...
    pub retention_ms: u64,
    /// ...and after that only the most recent this many (documented: 100 per region).
    pub retained_finished: usize,
    /// ScheduleFailed groups are deleted after this long (documented: 24 h).
    pub schedule_failed_ms: u64,
    /// Longest lifetime of a temporary key the emulator issues.
    pub credential_ttl_ms: u64,
    /// The instance's RAM role name (metadata service).
    pub ram_role: String,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            hold_init_containers: false,
            terminating_ms: 2_000,
            retention_ms: 3_600_000,
            retained_finished: 100,
            schedule_failed_ms: 86_400_000,
            credential_ttl_ms: 43_200_000,
            ram_role: "EciEmulatorRole".into(),
        }
    }
}

impl EmulatorState {
    /// Removes what ECI would no longer show: groups whose Terminating phase has ended, finished
    /// groups beyond the retention rules, ScheduleFailed groups older than a day.
    fn sweep(&mut self, now: OffsetDateTime) {
        let k = self.knobs.clone();
        let finished_at = |g: &Group| match g.status {
            "Succeeded" => g.succeeded,
            "Failed" => g.failed,
            "Expired" => g.expired,
            _ => None,
        };
        // Finished groups past the retention window, newest first: the first `retained_finished`
        // of them stay.
        let mut old: Vec<(OffsetDateTime, String)> = self
            .groups
            .iter()
            .filter_map(|g| finished_at(g).map(|t| (t, g.id.clone())))
            .filter(|(t, _)| now - *t > Duration::milliseconds(k.retention_ms as i64))
            .collect();
        old.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
        let drop: Vec<String> = old
            .into_iter()
            .skip(k.retained_finished)
            .map(|(_, id)| id)
            .collect();
        let schedule_failed = Duration::milliseconds(k.schedule_failed_ms as i64);
        let (gone, kept): (Vec<Group>, Vec<Group>) =
            std::mem::take(&mut self.groups).into_iter().partition(|g| {
                g.deleting_until.is_some_and(|t| now >= t)
                    || drop.contains(&g.id)
                    || (g.status == "ScheduleFailed" && now - g.status_changed > schedule_failed)
            });
        self.groups = kept;
        // Deleted groups are in `deletions` already.
        self.reaped
            .extend(gone.into_iter().filter(|g| g.deleting_until.is_none()));
    }
}

/// The emulator: configuration, bound address and state.
#[derive(Debug)]
pub struct Emulator {
    pub config: Config,
    pub addr: SocketAddr,
    state: Mutex<EmulatorState>,
}

pub type Shared = Arc<Emulator>;

/// Requests may be signed at most this long before (or after) the server's clock.
const MAX_CLOCK_SKEW: Duration = Duration::minutes(15);

impl Emulator {
    pub fn new(config: Config, addr: SocketAddr) -> Self {
        let state = EmulatorState {
            throttle_rate: config.throttle_rate,
            lost_answer_rate: config.lost_answer_rate,
            ..EmulatorState::default()
        };
        Self {
            config,
            addr,
            state: Mutex::new(state),
        }
    }

    /// The state, with every group's lifecycle brought up to now.
    pub fn lock(&self) -> MutexGuard<'_, EmulatorState> {
        // A panic while holding the lock leaves consistent-enough test state; keep serving.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = OffsetDateTime::now_utc();
        let delay = Duration::milliseconds(self.config.start_delay_ms as i64);
        let hold = st.knobs.hold_init_containers;
        for g in &mut st.groups {
            lifecycle::advance(g, now, delay, hold);
        }
        st.sweep(now);
        st.stats.live = st.groups.len() as u64;
        st
    }

    pub fn host_id(&self) -> String {
        format!("eci.{}.aliyuncs.com", self.config.region)
    }
}

/// Serves until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, config: Config) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let emu: Shared = Arc::new(Emulator::new(config, addr));
    // Status changes should happen on time even when nobody polls (SinceSecond depends on it).
    let ticker = emu.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(StdDuration::from_millis(25));
        loop {
            tick.tick().await;
            drop(ticker.lock());
        }
    });
    let app = router(emu);
    tracing::info!("listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}

pub fn router(emu: Shared) -> Router {
    Router::new()
        .route("/", any(rpc))
        .route("/exec/", get(exec::ws_handler))
        .route("/latest/api/token", put(crate::sts::metadata_token))
        .route(
            "/latest/meta-data/ram/security-credentials/",
            get(crate::sts::metadata_roles),
        )
        .route(
            "/latest/meta-data/ram/security-credentials/{role}",
            get(crate::sts::metadata_credentials),
        )
        .route("/_emulator/health", get(|| async { "ok" }))
        .route("/_emulator/stats", get(admin::stats))
        .route("/_emulator/throttle", put(admin::throttle))
        .route("/_emulator/faults", put(admin::faults))
        .route("/_emulator/knobs", put(admin::knobs))
        .route("/_emulator/groups/{id}/state", post(admin::set_state))
        .route("/_emulator/groups", get(admin::live_groups))
        .route("/_emulator/deletions", get(admin::deletions))
        .route("/_emulator/groups/{id}", get(admin::group))
        .route(
            "/_emulator/groups/{id}/containers/{container}/exit",
            post(admin::exit),
        )
        .with_state(emu)
}

async fn rpc(
    State(emu): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string().to_uppercase();
    let action = headers
        .get("x-acs-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let result = if action.is_empty() && is_sts(&uri) {
        sts(&emu, &uri, &headers, &body)
    } else {
        handle(&emu, &method, &uri, &headers, &body, &action).await
    };
    match result {
        Ok(mut value) => {
            value["RequestId"] = serde_json::Value::String(request_id);
            tracing::info!(%action, status = 200, "request");
            (StatusCode::OK, Json(value)).into_response()
        }
        Err(e) => {
            tracing::info!(%action, status = e.status.as_u16(), code = %e.code, "request");
            (e.status, Json(e.body(&request_id, &emu.host_id()))).into_response()
        }
    }
}

/// An STS RPC call (`?Action=AssumeRoleWithOIDC&Version=2015-04-01`), which is anonymous.
fn is_sts(uri: &Uri) -> bool {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .any(|(k, v)| k == "Action" && v == "AssumeRoleWithOIDC")
}

fn sts(
    emu: &Shared,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<serde_json::Value, ApiError> {
    let mut params = crate::rpc::Params::default();
    params.extend_from_urlencoded(uri.query().unwrap_or("").as_bytes());
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend_from_urlencoded(body);
    }
    if params.get("Version") != Some("2015-04-01") {
        return Err(ApiError::invalid_version());
    }
    crate::sts::assume_role_with_oidc(emu, &params)
}

async fn handle(
    emu: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    action: &str,
) -> Result<serde_json::Value, ApiError> {
    emu.lock().stats.requests += 1;
    if let Err(e) = authenticate(emu, method, uri, headers, body) {
        if e.auth {
            emu.lock().stats.auth_failures += 1;
        }
        return Err(e);
    }
    let mut params = crate::rpc::Params::default();
    params.extend_from_urlencoded(uri.query().unwrap_or("").as_bytes());
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend_from_urlencoded(body);
    }
    {
        let mut st = emu.lock();
        // `authenticate` only passes actions of `api::ACTIONS`, so the map stays small.
        *st.stats.actions.entry(action.to_owned()).or_default() += 1;
        if st.throttle_rate > 0.0 && rand::random::<f64>() < st.throttle_rate {
            st.stats.throttled += 1;
            return Err(ApiError::throttled());
        }
    }
    let value = api::dispatch(emu, action, &params).await?;
    if LOST_ANSWER_ACTIONS.contains(&action) {
        let mut st = emu.lock();
        if st.lost_answer_rate > 0.0 && rand::random::<f64>() < st.lost_answer_rate {
            // The action stays applied: the client must find out by retrying (ClientToken)
            // or by looking, as after a real timeout or dropped connection.
            st.stats.lost_answers += 1;
            tracing::info!(%action, "applied, answer dropped (lost-answer fault)");
            return Err(ApiError::service_unavailable());
        }
    }
    Ok(value)
}

/// Actions whose successful answers the lost-answer fault may replace.
const LOST_ANSWER_ACTIONS: &[&str] = &["CreateContainerGroup", "DeleteContainerGroup"];

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
}

/// Verifies a V3-signed request; the checks and their error codes follow the documentation.
fn authenticate(
    emu: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    for name in [
        "host",
        "x-acs-action",
        "x-acs-version",
        "x-acs-date",
        "x-acs-signature-nonce",
        "x-acs-content-sha256",
    ] {
        if header(headers, name).is_none() {
            return Err(ApiError::missing_header(name));
        }
    }
    let action = header(headers, "x-acs-action").unwrap_or_default();
    if header(headers, "x-acs-version") != Some(API_VERSION) {
        return Err(ApiError::invalid_version());
    }
    if !api::ACTIONS.contains(&action) {
        return Err(ApiError::action_not_found());
    }
    let auth = header(headers, "authorization")
        .and_then(signature::parse_authorization)
        .ok_or_else(ApiError::incomplete_signature)?;

    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let date = header(headers, "x-acs-date").unwrap_or_default();
    let signed_at = PrimitiveDateTime::parse(date, &fmt)
        .map_err(|_| ApiError::timestamp_format())?
        .assume_utc();
    let now = OffsetDateTime::now_utc();
    if (now - signed_at).abs() > MAX_CLOCK_SKEW {
        return Err(ApiError::timestamp_expired());
    }

    let cfg = &emu.config;
    let issued = emu.lock().issued.get(&auth.access_key_id).cloned();
    let (secret, is_sts, want_token) = if auth.access_key_id == cfg.access_key_id {
        (cfg.access_key_secret.clone(), false, String::new())
    } else if auth.access_key_id == cfg.sts_access_key_id {
        (
            cfg.sts_access_key_secret.clone(),
            true,
            cfg.sts_token.clone(),
        )
    } else if let Some(i) = issued {
        if now >= i.expires {
            emu.lock().stats.expired_keys += 1;
            return Err(ApiError::security_token_expired());
        }
        (i.secret, true, i.token)
    } else {
        return Err(ApiError::access_key_not_found());
    };
    let secret = secret.as_str();
    match (is_sts, header(headers, "x-acs-security-token")) {
        (true, Some(token)) if token == want_token => {}
        (true, _) => return Err(ApiError::security_token_malformed()),
        (false, Some(_)) => return Err(ApiError::security_token_mismatch()),
        (false, None) => {}
    }

    // Every common header except Authorization must be signed.
    let must_sign = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| *k == "host" || k.starts_with("x-acs-"));
    for name in must_sign {
        if !auth.signed_headers.iter().any(|s| s == name) {
            return Err(ApiError::incomplete_signature());
        }
    }
    let hashed = signature::sha256_hex(body);
    if header(headers, "x-acs-content-sha256") != Some(hashed.as_str()) {
        return Err(ApiError::signature_mismatch());
    }
    let mut signed = Vec::new();
    for name in &auth.signed_headers {
        let value = headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::signature_mismatch)?;
        signed.push((name.clone(), value.to_owned()));
    }
    let (canonical_headers, signed_names) = signature::canonical_headers(&signed);
    let query: Vec<(String, String)> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let request = signature::canonical_request(
        method.as_str(),
        "/",
        &signature::canonical_query(&query),
        &canonical_headers,
        &signed_names,
        &hashed,
    );
    let string_to_sign = signature::string_to_sign(&request);
    if !signature::signature_matches(secret, &string_to_sign, &auth.signature) {
        return Err(ApiError::signature_mismatch());
    }

    // Nonces are recorded only for genuine requests, so a forger cannot burn them.
    let nonce = header(headers, "x-acs-signature-nonce").unwrap_or_default();
    let mut st = emu.lock();
    st.nonces
        .retain(|_, seen| now - *seen <= MAX_CLOCK_SKEW * 2);
    if st.nonces.contains_key(nonce) {
        return Err(ApiError::nonce_used());
    }
    st.nonces.insert(nonce.to_owned(), now);
    Ok(())
}
