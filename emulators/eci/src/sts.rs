//! The credential side, for providers that do not hold an AccessKey: STS's
//! `AssumeRoleWithOIDC` (RRSA, as ACK pods use it; anonymous RPC call, version 2015-04-01) and
//! the ECS instance metadata service's RAM role credentials (`/latest/meta-data/ram/
//! security-credentials/<role>`, with the hardened-mode session token of `PUT /latest/api/token`).
//! Both hand out temporary keys (`STS.…` id, secret, security token) that the API accepts until
//! their `Expiration`, then rejects with `InvalidSecurityToken.Expired`.

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};

use crate::{errors::ApiError, model::format_time, rpc::Params, server::Shared};

/// Temporary credentials the emulator issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub secret: String,
    pub token: String,
    pub expires: OffsetDateTime,
}

fn random(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// Issues a key valid for `ttl` (the `credential_ttl_ms` knob caps it).
fn issue(emu: &Shared, ttl: Duration) -> (String, Issued) {
    let mut st = emu.lock();
    let cap = Duration::milliseconds(st.knobs.credential_ttl_ms as i64);
    let id = format!("STS.{}", random(24));
    let issued = Issued {
        secret: random(40),
        token: format!("CAIS{}", random(120)),
        expires: OffsetDateTime::now_utc() + ttl.min(cap),
    };
    // Long expired keys are forgotten.
    let now = OffsetDateTime::now_utc();
    st.issued
        .retain(|_, i| now - i.expires < Duration::minutes(30));
    st.issued.insert(id.clone(), issued.clone());
    (id, issued)
}

fn credentials_json(id: &str, i: &Issued) -> Value {
    json!({
        "AccessKeyId": id,
        "AccessKeySecret": i.secret,
        "SecurityToken": i.token,
        "Expiration": format_time(i.expires),
    })
}

/// `AssumeRoleWithOIDC`: `RoleArn`, `OIDCProviderArn`, `OIDCToken`, `RoleSessionName` required;
/// `DurationSeconds` 900–43200 (default 3600). The token is not verified beyond being there (the
/// emulator has no OIDC issuer); each distinct token is counted.
pub fn assume_role_with_oidc(emu: &Shared, p: &Params) -> Result<Value, ApiError> {
    for name in ["RoleArn", "OIDCProviderArn", "OIDCToken", "RoleSessionName"] {
        p.required(name)?;
    }
    let role = p.required("RoleArn")?;
    if !role.starts_with("acs:ram::") {
        return Err(ApiError::invalid("RoleArn"));
    }
    if !p.required("OIDCProviderArn")?.starts_with("acs:ram::") {
        return Err(ApiError::invalid("OIDCProviderArn"));
    }
    let secs = p.int("DurationSeconds")?.unwrap_or(3600);
    if !(900..=43200).contains(&secs) {
        return Err(ApiError::invalid("DurationSeconds"));
    }
    let token = p.required("OIDCToken")?.to_owned();
    let (id, issued) = issue(emu, Duration::seconds(secs));
    let mut st = emu.lock();
    st.stats.sts_issued += 1;
    if !st.oidc_tokens.contains(&token) {
        st.oidc_tokens.push(token);
    }
    st.stats.oidc_tokens_seen = st.oidc_tokens.len() as u64;
    let session = p.required("RoleSessionName")?;
    Ok(json!({
        "Credentials": credentials_json(&id, &issued),
        "AssumedRoleUser": {
            "Arn": format!("{role}/{session}"),
            "AssumedRoleId": format!("3{}:{session}", random(17)),
        },
        "OIDCTokenInfo": {"Issuer": "https://oidc.emulator", "Subject": "system:serviceaccount", "ClientIds": "sts.aliyuncs.com"},
    }))
}

/// `PUT /latest/api/token`: a session token for hardened mode (TTL header 1–21600 s).
pub async fn metadata_token(State(emu): State<Shared>, headers: HeaderMap) -> Response {
    let ttl = headers
        .get("x-aliyun-ecs-metadata-token-ttl-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    match ttl {
        Some(t) if (1..=21600).contains(&t) => {
            let token = random(48);
            let mut st = emu.lock();
            // The latest 100 stay valid: enough for any client, bounded for a long run.
            if st.metadata_tokens.len() >= 100 {
                st.metadata_tokens.remove(0);
            }
            st.metadata_tokens.push(token.clone());
            token.into_response()
        }
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

fn token_ok(emu: &Shared, headers: &HeaderMap) -> bool {
    match headers
        .get("x-aliyun-ecs-metadata-token")
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(t) => emu.lock().metadata_tokens.iter().any(|k| k == t),
    }
}

/// `GET /latest/meta-data/ram/security-credentials/`: the instance's role name.
pub async fn metadata_roles(State(emu): State<Shared>, headers: HeaderMap) -> Response {
    if !token_ok(&emu, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    emu.lock().knobs.ram_role.clone().into_response()
}

/// `GET /latest/meta-data/ram/security-credentials/<role>`: temporary keys of the role (6 h, or
/// the `credential_ttl_ms` knob), `Code: Success`.
pub async fn metadata_credentials(
    State(emu): State<Shared>,
    Path(role): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !token_ok(&emu, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if role != emu.lock().knobs.ram_role {
        return StatusCode::NOT_FOUND.into_response();
    }
    let (id, issued) = issue(&emu, Duration::hours(6));
    emu.lock().stats.metadata_issued += 1;
    let mut v = credentials_json(&id, &issued);
    v["LastUpdated"] = json!(format_time(OffsetDateTime::now_utc()));
    v["Code"] = json!("Success");
    Json(v).into_response()
}
