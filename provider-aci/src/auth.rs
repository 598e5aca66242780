//! Azure AD tokens for ARM: client secret, workload identity (federated token file) or managed
//! identity (IMDS), cached and refreshed before they expire. Secrets and tokens never reach a log
//! line or an error: `Secret` redacts itself and errors carry only Azure AD's error code and text.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Method, header};
use percent_encoding::utf8_percent_encode;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::{
    error::{AzureError, Kind},
    http::Http,
};

/// A string that never prints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How the provider proves who it is.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A service principal's client secret (AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET).
    ClientSecret {
        /// Tenant.
        tenant: String,
        /// Application (client) id.
        client_id: String,
        /// Client secret.
        secret: Secret,
    },
    /// Workload identity: a Kubernetes-issued token exchanged as a client assertion; the file is
    /// re-read on every fetch because the kubelet rotates it.
    WorkloadIdentity {
        /// Tenant.
        tenant: String,
        /// Application (client) id.
        client_id: String,
        /// AZURE_FEDERATED_TOKEN_FILE.
        token_file: PathBuf,
    },
    /// Managed identity through the instance metadata service; `client_id` picks a user-assigned
    /// identity.
    ManagedIdentity {
        /// User-assigned identity's client id.
        client_id: Option<String>,
    },
}

impl Credential {
    /// Short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientSecret { .. } => "client-secret",
            Self::WorkloadIdentity { .. } => "workload-identity",
            Self::ManagedIdentity { .. } => "managed-identity",
        }
    }
}

/// Where tokens come from.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// Azure AD authority host, e.g. `https://login.microsoftonline.com`.
    pub authority: String,
    /// IMDS base, e.g. `http://169.254.169.254`.
    pub imds: String,
    /// The token audience: ARM's resource id, e.g. `https://management.azure.com/`.
    pub resource: String,
}

/// How IMDS answers that mean "not yet" are retried, as the managed-identity documentation
/// ("How to use managed identities ... to acquire an access token", error handling and retry
/// guidance) says: 404 (IMDS is updating, or a new identity is not there yet) with exponential
/// backoff; 410 (IMDS is going through updates, available again within 70 seconds) for at least
/// 70 seconds. 429 and 5xx go back to the ARM call's own retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImdsRetry {
    /// First 404 backoff; doubled each time.
    pub base: Duration,
    /// 404 retries before giving up.
    pub not_found_retries: u32,
    /// How long 410s are retried, in steps of a seventh of it (10 s for 70 s).
    pub gone_for: Duration,
}

impl Default for ImdsRetry {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            not_found_retries: 3,
            gone_for: Duration::from_secs(70),
        }
    }
}

impl ImdsRetry {
    /// The wait before asking IMDS again after `status`, with `retries` retries behind and
    /// `elapsed` since the first request; `None` when the answer stands.
    pub fn delay(&self, status: u16, retries: u32, elapsed: Duration) -> Option<Duration> {
        match status {
            404 if retries < self.not_found_retries => {
                Some(self.base.saturating_mul(1 << retries.min(16)))
            }
            // One more request at or after the deadline: the documented window is a maximum.
            410 if elapsed < self.gone_for => {
                Some((self.gone_for / 7).min(self.gone_for - elapsed))
            }
            _ => None,
        }
    }
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
    expires_at: Instant,
}

/// A token source with a cache; one fetch at a time, shared by concurrent callers.
pub struct TokenSource {
    http: Http,
    credential: Credential,
    endpoints: Endpoints,
    imds_retry: ImdsRetry,
    cache: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("credential", &self.credential)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; a number from Azure AD, a string from IMDS.
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct AadError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                utf8_percent_encode(k, crate::client::UNRESERVED),
                utf8_percent_encode(v, crate::client::UNRESERVED)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// When to refresh a token that lives `lifetime`: five minutes before expiry, or halfway for
/// short-lived tokens.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 2).min(Duration::from_secs(300))
}

fn seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

const OP: &str = "AzureAD_Token";

impl TokenSource {
    /// A token source for `credential`.
    pub fn new(http: Http, credential: Credential, endpoints: Endpoints) -> Self {
        Self {
            http,
            credential,
            endpoints,
            imds_retry: ImdsRetry::default(),
            cache: Mutex::new(None),
        }
    }

    /// The same with another IMDS retry schedule (tests shorten it).
    pub fn with_imds_retry(mut self, r: ImdsRetry) -> Self {
        self.imds_retry = r;
        self
    }

    /// A valid token, from the cache or freshly fetched.
    pub async fn token(&self) -> Result<Secret, AzureError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        if let Some(c) = cache.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        match self.fetch().await {
            Ok((token, lifetime)) => {
                let now = Instant::now();
                *cache = Some(Cached {
                    token: token.clone(),
                    refresh_at: now + lifetime.saturating_sub(refresh_margin(lifetime)),
                    expires_at: now + lifetime,
                });
                tracing::debug!(
                    credential = self.credential.kind(),
                    lifetime_s = lifetime.as_secs(),
                    "fetched an Azure AD token"
                );
                Ok(token)
            }
            // A refresh that fails while the old token is still valid keeps the old one.
            Err(e) if cache.as_ref().is_some_and(|c| now < c.expires_at) => {
                tracing::warn!(error = %e, "token refresh failed; using the current token until it expires");
                cache.as_ref().map(|c| c.token.clone()).ok_or(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Drops the cached token (after ARM answered 401).
    pub async fn invalidate(&self) {
        *self.cache.lock().await = None;
    }

    async fn fetch(&self) -> Result<(Secret, Duration), AzureError> {
        let scope = format!("{}/.default", self.endpoints.resource.trim_end_matches('/'));
        let reply = match &self.credential {
            Credential::ClientSecret {
                tenant,
                client_id,
                secret,
            } => {
                let body = form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    ("client_secret", secret.expose()),
                    ("scope", &scope),
                ]);
                self.post_aad(tenant, body).await?
            }
            Credential::WorkloadIdentity {
                tenant,
                client_id,
                token_file,
            } => {
                let assertion = tokio::fs::read_to_string(token_file).await.map_err(|e| {
                    crate::error::failed(
                        OP,
                        Kind::Unauthenticated,
                        "FederatedTokenUnreadable",
                        format!("cannot read {}: {e}", token_file.display()),
                    )
                })?;
                let body = form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", assertion.trim()),
                    ("scope", &scope),
                ]);
                self.post_aad(tenant, body).await?
            }
            Credential::ManagedIdentity { client_id } => {
                let mut url = format!(
                    "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
                    self.endpoints.imds.trim_end_matches('/'),
                    utf8_percent_encode(&self.endpoints.resource, crate::client::UNRESERVED)
                );
                if let Some(id) = client_id {
                    url.push_str(&format!(
                        "&client_id={}",
                        utf8_percent_encode(id, crate::client::UNRESERVED)
                    ));
                }
                self.imds_get(&url).await?
            }
        };
        if !reply.status.is_success() {
            let status = reply.status.as_u16();
            let err: AadError = serde_json::from_slice(&reply.body).unwrap_or_default();
            let retry_after =
                crate::error::parse_retry_after(reply.headers.get(header::RETRY_AFTER));
            let kind = match status {
                429 => Kind::Throttled,
                s if s >= 500 => Kind::Unavailable,
                _ => Kind::Unauthenticated,
            };
            return Err(AzureError::new(
                &crate::error::ADVICE,
                OP,
                kind,
                if err.error.is_empty() {
                    format!("HTTP{status}")
                } else {
                    err.error
                },
                // Azure AD's description names the client id at most, never the secret.
                err.error_description,
            )
            .with_status(status)
            .with_retry_after(retry_after));
        }
        let parsed: TokenResponse = serde_json::from_slice(&reply.body).map_err(|e| {
            crate::error::failed(
                OP,
                Kind::Unauthenticated,
                "BadTokenResponse",
                format!("unreadable token response: {e}"),
            )
            .with_status(reply.status.as_u16())
        })?;
        let lifetime = parsed
            .expires_in
            .as_ref()
            .and_then(seconds)
            .map_or(Duration::from_secs(3600), Duration::from_secs);
        Ok((Secret::new(parsed.access_token), lifetime))
    }

    /// The IMDS token request, retried on 404 and 410 per [`ImdsRetry`].
    async fn imds_get(&self, url: &str) -> Result<crate::http::Reply, AzureError> {
        let start = Instant::now();
        let mut retries = 0;
        loop {
            let reply = self
                .http
                .send(
                    OP,
                    Method::GET,
                    url,
                    vec![(
                        header::HeaderName::from_static("metadata"),
                        HeaderValue::from_static("true"),
                    )],
                    None,
                )
                .await?;
            let status = reply.status.as_u16();
            let Some(wait) = self.imds_retry.delay(status, retries, start.elapsed()) else {
                return Ok(reply);
            };
            tracing::warn!(
                status,
                retry_in_ms = wait.as_millis() as u64,
                "IMDS is not ready to issue a token; retrying as its documentation advises"
            );
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    async fn post_aad(&self, tenant: &str, body: String) -> Result<crate::http::Reply, AzureError> {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.endpoints.authority.trim_end_matches('/'),
            utf8_percent_encode(tenant, crate::client::UNRESERVED)
        );
        self.http
            .send(
                OP,
                Method::POST,
                &url,
                vec![(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )],
                Some(Bytes::from(body)),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let c = Credential::ClientSecret {
            tenant: "t".into(),
            client_id: "c".into(),
            secret: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// Every type holding the provider's credentials, or secrets it sends to ACI, formatted
    /// with `{:?}` (as a log line or an error would) shows no canary value.
    #[tokio::test]
    async fn debug_of_secret_holding_types_shows_no_canary() {
        use crate::wire::{
            AzureFileVolume, ContainerDef, ContainerGroup, ContainerProps, EnvVar, ExecResponse,
            RegistryCredential, VolumeDef,
        };
        const CANARY: &str = "canary-5ecret-7f3a";
        let _ = rustls::crypto::ring::default_provider().install_default();
        let credential = Credential::ClientSecret {
            tenant: "t".into(),
            client_id: "c".into(),
            secret: Secret::new(CANARY),
        };
        let tokens = TokenSource::new(
            Http::new(),
            credential.clone(),
            Endpoints {
                authority: "https://login.microsoftonline.com".into(),
                imds: "http://169.254.169.254".into(),
                resource: "https://management.azure.com/".into(),
            },
        );
        // A cached access token too.
        *tokens.cache.lock().await = Some(Cached {
            token: Secret::new(CANARY),
            refresh_at: Instant::now(),
            expires_at: Instant::now(),
        });
        let tokens = std::sync::Arc::new(tokens);
        let arm = crate::client::Arm::new(
            Http::new(),
            tokens.clone(),
            crate::client::Scope {
                endpoint: "https://management.azure.com".into(),
                subscription: "s".into(),
                resource_group: "rg".into(),
            },
            provider_common::retry::RetryPolicy::default(),
        );
        let mut group = ContainerGroup::default();
        group.properties.containers.push(ContainerDef {
            name: "web".into(),
            properties: ContainerProps {
                environment_variables: vec![EnvVar {
                    name: "PASSWORD".into(),
                    value: None,
                    secure_value: Some(CANARY.into()),
                }],
                ..Default::default()
            },
        });
        group
            .properties
            .image_registry_credentials
            .push(RegistryCredential {
                server: "registry.example".into(),
                username: Some(CANARY.into()),
                password: Some(CANARY.into()),
            });
        group.properties.volumes.push(VolumeDef {
            name: "secret".into(),
            secret: Some([("key".to_owned(), CANARY.to_owned())].into()),
            ..Default::default()
        });
        group.properties.volumes.push(VolumeDef {
            name: "share".into(),
            azure_file: Some(AzureFileVolume {
                share_name: "s".into(),
                read_only: false,
                storage_account_name: "a".into(),
                storage_account_key: Some(CANARY.into()),
            }),
            ..Default::default()
        });
        let exec = ExecResponse {
            web_socket_uri: format!("wss://x/?token={CANARY}"),
            password: CANARY.into(),
        };
        for shown in [
            format!("{:?}", Secret::new(CANARY)),
            format!("{credential:?}"),
            format!("{tokens:?}"),
            format!("{arm:?}"),
            format!("{group:?}"),
            format!("{group:#?}"),
            format!("{exec:?}"),
        ] {
            assert!(!shown.contains(CANARY), "{shown}");
        }
    }

    #[test]
    fn refresh_comes_before_expiry() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(seconds(&serde_json::json!("86399")), Some(86399));
        assert_eq!(seconds(&serde_json::json!(3599)), Some(3599));
    }

    #[test]
    fn imds_404s_back_off_exponentially_and_410s_are_retried_for_70_seconds() {
        let r = ImdsRetry::default();
        let zero = Duration::ZERO;
        let secs = Duration::from_secs;
        assert_eq!(r.delay(404, 0, zero), Some(secs(1)));
        assert_eq!(r.delay(404, 1, zero), Some(secs(2)));
        assert_eq!(r.delay(404, 2, zero), Some(secs(4)));
        assert_eq!(r.delay(404, 3, zero), None);
        assert_eq!(r.delay(410, 0, zero), Some(secs(10)));
        assert_eq!(r.delay(410, 6, secs(65)), Some(secs(5)));
        assert_eq!(r.delay(410, 7, secs(70)), None);
        // Whatever the steps, 410s are retried until 70 s have passed.
        let (mut elapsed, mut retries) = (zero, 0);
        while let Some(d) = r.delay(410, retries, elapsed) {
            elapsed += d;
            retries += 1;
        }
        assert!(elapsed >= secs(70) && retries <= 8, "{elapsed:?} {retries}");
        for status in [200, 400, 401, 429, 500] {
            assert_eq!(r.delay(status, 0, zero), None, "{status}");
        }
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form(&[
                ("scope", "https://management.azure.com/.default"),
                ("a", "b c")
            ]),
            "scope=https%3A%2F%2Fmanagement.azure.com%2F.default&a=b%20c"
        );
    }
}
