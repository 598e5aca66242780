//! The Azure AD side: the v2.0 token endpoint (client credentials with a secret or a federated
//! assertion) and the IMDS managed-identity endpoint. Tokens are opaque random strings the ARM
//! side looks up.

use std::{collections::HashMap, sync::Arc, time::Instant};

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

use crate::state::{AppState, Stats, lock, random_hex, rfc3339};

/// The scope (v2.0) and resource (IMDS) of Azure Resource Manager.
const ARM_SCOPE: &str = "https://management.azure.com/.default";
const ARM_RESOURCES: &[&str] = &[
    "https://management.azure.com/",
    "https://management.azure.com",
];
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route("/metadata/identity/oauth2/token", get(imds_token))
}

/// An AAD error body: `error`, `error_description` (starting with the AADSTS code), `error_codes`.
fn aad_error(status: StatusCode, error: &str, aadsts: u32, description: &str) -> Response {
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let now = rfc3339(time::OffsetDateTime::now_utc());
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{aadsts}: {description} Trace ID: {trace_id} Correlation ID: \
                 {correlation_id} Timestamp: {now}"
            ),
            "error_codes": [aadsts],
            "timestamp": now,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={aadsts}"),
        })
        .to_string(),
    )
        .into_response()
}

/// Issues a token valid for the configured lifetime.
fn issue(st: &AppState) -> (String, u64) {
    let token = random_hex(32);
    let lifetime = st.config.token_lifetime;
    lock(&st.tokens).insert(token.clone(), Instant::now() + lifetime);
    (token, lifetime.as_secs())
}

async fn token(
    State(st): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let cfg = &st.config;
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if tenant != cfg.tenant_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud."
            ),
        );
    }
    match field("grant_type") {
        "client_credentials" => {}
        "" => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        other => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
    }
    let client_id = field("client_id");
    if client_id.is_empty() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    }
    if client_id != cfg.client_id {
        Stats::bump(&st.stats.auth_failures);
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        );
    }
    let scope = field("scope");
    if scope.is_empty() {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        );
    }
    if !scope.split(' ').any(|s| s == ARM_SCOPE) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        );
    }
    let secret = form.get("client_secret");
    let assertion = form.get("client_assertion");
    match (secret, assertion) {
        (Some(s), None) => {
            if *s != cfg.client_secret {
                Stats::bump(&st.stats.auth_failures);
                return aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    &format!(
                        "Invalid client secret provided. Ensure the secret being sent in the \
                         request is the client secret value, not the client secret ID, for a \
                         secret added to app '{client_id}'."
                    ),
                );
            }
        }
        (None, Some(a)) => {
            if field("client_assertion_type") != JWT_BEARER {
                return aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    700024,
                    &format!(
                        "The client_assertion_type must be '{JWT_BEARER}' when client_assertion \
                         is present."
                    ),
                );
            }
            if *a != cfg.federated_token {
                Stats::bump(&st.stats.auth_failures);
                return aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    70021,
                    "No matching federated identity record found for presented assertion. \
                     Please check your federated identity credential configuration.",
                );
            }
        }
        (Some(_), Some(_)) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90014,
                "Only one of client_secret and client_assertion may be sent.",
            );
        }
        (None, None) => {
            Stats::bump(&st.stats.auth_failures);
            return aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or \
                 'client_secret'.",
            );
        }
    }
    let (access_token, expires_in) = issue(&st);
    tracing::info!(client_id, "issued an access token");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({
            "token_type": "Bearer",
            "expires_in": expires_in,
            "ext_expires_in": expires_in,
            "access_token": access_token,
        })
        .to_string(),
    )
        .into_response()
}

/// IMDS: `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...` with
/// `Metadata: true`; numbers come back as strings, as documented.
async fn imds_token(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let imds_error = |error: &str, description: &str| {
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            json!({"error": error, "error_description": description}).to_string(),
        )
            .into_response()
    };
    let metadata = headers
        .get("Metadata")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if !metadata {
        return imds_error("invalid_request", "Required metadata header not specified");
    }
    // Test-set "not yet" answers (404 while IMDS updates, 410 while it goes through updates).
    {
        let mut f = lock(&st.imds_faults);
        if f.remaining > 0 {
            f.remaining -= 1;
            f.served += 1;
            let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::GONE);
            tracing::info!(
                status = f.status,
                remaining = f.remaining,
                "IMDS fault answered"
            );
            return status.into_response();
        }
    }
    if q.get("api-version").is_none_or(String::is_empty) {
        return imds_error(
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = q.get("resource") else {
        return imds_error(
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    if !ARM_RESOURCES.contains(&resource.as_str()) {
        return imds_error(
            "invalid_resource",
            "AADSTS500011: The resource principal named was not found in the tenant.",
        );
    }
    let (access_token, expires_in) = issue(&st);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expires_on = now.saturating_add(i64::try_from(expires_in).unwrap_or(i64::MAX));
    tracing::info!("issued a managed-identity access token");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({
            "access_token": access_token,
            "client_id": st.config.client_id,
            "expires_in": expires_in.to_string(),
            "expires_on": expires_on.to_string(),
            "ext_expires_in": expires_in.to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        })
        .to_string(),
    )
        .into_response()
}
