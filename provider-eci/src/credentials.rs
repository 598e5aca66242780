//! Where the provider's credentials come from, and their refresh before they expire:
//! - an AccessKey pair (or an STS key and token) from the environment, used as is;
//! - the RAM role of the ECS instance, from the instance metadata service
//!   (`/latest/meta-data/ram/security-credentials/<role>`, with a hardened-mode token from
//!   `PUT /latest/api/token` when the service gives one);
//! - RRSA, as ACK pods get it: `AssumeRoleWithOIDC` on STS with the role ARN, the OIDC provider
//!   ARN and the projected service-account token (re-read at each refresh: the kubelet rotates it).
//!
//! Temporary credentials are replaced once less than a third of their lifetime (at most five
//! minutes) is left, so a call never goes out with credentials about to expire; a refresh that
//! fails while the old ones are still valid keeps them and tries again at the next call. Secrets,
//! tokens and the OIDC token are never logged or put in an error.

use std::{path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::{
    error::{EciError, Kind},
    signing::Credentials,
};

/// The ECS instance metadata service.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://100.100.100.200";
/// The public STS endpoint.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.aliyuncs.com";
/// Lifetime asked of STS (its documented default and the SDKs' choice).
const OIDC_DURATION_SECONDS: u64 = 3600;
/// Longest wait for a credential answer.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest credential answer read.
const MAX_ANSWER: usize = 64 << 10;
/// Most time before expiry at which temporary credentials are replaced.
const MAX_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Where credentials come from.
#[derive(Clone)]
pub enum Source {
    /// A fixed AccessKey pair or STS key and token.
    Static(Credentials),
    /// The instance's RAM role from the metadata service at `endpoint`.
    Metadata {
        /// `http://100.100.100.200`, or a test server.
        endpoint: String,
        /// The RAM role name.
        role: String,
    },
    /// RRSA: `AssumeRoleWithOIDC` at `sts`.
    Oidc {
        /// STS endpoint with scheme.
        sts: String,
        /// `acs:ram::<account>:role/<name>`.
        role_arn: String,
        /// `acs:ram::<account>:oidc-provider/<name>`.
        provider_arn: String,
        /// The projected service-account token.
        token_file: PathBuf,
        /// `RoleSessionName`.
        session: String,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(c) => write!(f, "AccessKey {}", c.access_key_id),
            Self::Metadata { role, .. } => write!(f, "RAM role {role} from instance metadata"),
            Self::Oidc { role_arn, .. } => write!(f, "RRSA role {role_arn}"),
        }
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

struct Cached {
    creds: Credentials,
    /// `None`: never expires.
    expires: Option<OffsetDateTime>,
    fetched: OffsetDateTime,
}

impl Cached {
    fn fresh(&self, now: OffsetDateTime) -> bool {
        let Some(exp) = self.expires else {
            return true;
        };
        let lifetime: time::Duration = (exp - self.fetched).max(time::Duration::ZERO);
        let most = time::Duration::seconds(MAX_REFRESH_MARGIN.as_secs() as i64);
        let margin = std::cmp::min(lifetime / 3_i32, most);
        exp - now > margin
    }

    fn valid(&self, now: OffsetDateTime) -> bool {
        self.expires.is_none_or(|exp| exp > now)
    }
}

/// Credentials for each call, refreshed as needed.
#[derive(Clone)]
pub struct CredentialProvider {
    inner: Arc<Inner>,
}

struct Inner {
    source: Source,
    http: HyperClient<Https, Full<Bytes>>,
    /// Held across a refresh, so concurrent calls wait for one fetch.
    cached: tokio::sync::Mutex<Option<Cached>>,
}

/// STS's `Credentials`, also the metadata service's answer (plus `Code`).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Temporary {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AssumeRoleAnswer {
    credentials: Temporary,
}

fn unavailable(op: &'static str, what: impl std::fmt::Display) -> EciError {
    EciError {
        kind: Kind::Unavailable,
        code: "CredentialsUnavailable".into(),
        message: format!("cannot get credentials: {what}"),
        ..crate::error::transport(op, "")
    }
}

fn rejected(op: &'static str, what: impl std::fmt::Display) -> EciError {
    EciError {
        kind: Kind::Unauthenticated,
        code: "CredentialsRejected".into(),
        message: format!("cannot get credentials: {what}"),
        ..crate::error::transport(op, "")
    }
}

impl CredentialProvider {
    /// A provider for `source`.
    pub fn new(source: Source) -> Result<Self, String> {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let cached = match &source {
            Source::Static(c) => Some(Cached {
                creds: c.clone(),
                expires: None,
                fetched: OffsetDateTime::now_utc(),
            }),
            _ => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                source,
                http: HyperClient::builder(TokioExecutor::new()).build(https),
                cached: tokio::sync::Mutex::new(cached),
            }),
        })
    }

    /// Fixed credentials.
    #[cfg(test)]
    pub fn fixed(creds: Credentials) -> Result<Self, String> {
        Self::new(Source::Static(creds))
    }

    /// What the credentials are, for the start-up log line (no secret).
    pub fn describe(&self) -> String {
        format!("{:?}", self.inner.source)
    }

    /// Credentials good for a call now.
    pub async fn get(&self) -> Result<Credentials, EciError> {
        let mut cached = self.inner.cached.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(c) = cached.as_ref().filter(|c| c.fresh(now)) {
            return Ok(c.creds.clone());
        }
        match self.fetch().await {
            Ok(new) => {
                tracing::info!(
                    source = %self.describe(),
                    expires = ?new.expires.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                    "credentials refreshed"
                );
                let creds = new.creds.clone();
                *cached = Some(new);
                Ok(creds)
            }
            Err(e) => match cached.as_ref().filter(|c| c.valid(now)) {
                Some(old) => {
                    tracing::warn!(error = %e, "credential refresh failed; the current ones are still valid");
                    Ok(old.creds.clone())
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self) -> Result<Cached, EciError> {
        let fetched = OffsetDateTime::now_utc();
        let t = match &self.inner.source {
            Source::Static(c) => {
                return Ok(Cached {
                    creds: c.clone(),
                    expires: None,
                    fetched,
                });
            }
            Source::Metadata { endpoint, role } => self.fetch_metadata(endpoint, role).await?,
            Source::Oidc {
                sts,
                role_arn,
                provider_arn,
                token_file,
                session,
            } => {
                self.assume_role_with_oidc(sts, role_arn, provider_arn, token_file, session)
                    .await?
            }
        };
        let expires = OffsetDateTime::parse(
            &t.expiration,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| unavailable("Credentials", format_args!("bad Expiration: {e}")))?;
        Ok(Cached {
            creds: Credentials {
                access_key_id: t.access_key_id,
                access_key_secret: t.access_key_secret,
                security_token: Some(t.security_token),
            },
            expires: Some(expires),
            fetched,
        })
    }

    /// One request; status and body (at most [`MAX_ANSWER`] bytes).
    async fn exchange(
        &self,
        op: &'static str,
        req: http::Request<Full<Bytes>>,
    ) -> Result<(u16, Bytes), EciError> {
        let call = async {
            let resp = self
                .inner
                .http
                .request(req)
                .await
                .map_err(|e| unavailable(op, e))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| unavailable(op, e))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(FETCH_TIMEOUT, call)
            .await
            .map_err(|_| unavailable(op, "timed out"))?
    }

    async fn fetch_metadata(&self, endpoint: &str, role: &str) -> Result<Temporary, EciError> {
        const OP: &str = "InstanceMetadata";
        let base = endpoint.trim_end_matches('/');
        // Hardened mode: a session token when the service offers one; without, plain GETs.
        let token = http::Request::put(format!("{base}/latest/api/token"))
            .header("X-aliyun-ecs-metadata-token-ttl-seconds", "21600")
            .body(Full::new(Bytes::new()))
            .map_err(|e| unavailable(OP, e))?;
        let token = match self.exchange(OP, token).await {
            Ok((200, body)) => String::from_utf8(body.to_vec()).ok(),
            _ => None,
        };
        let mut get = http::Request::get(format!(
            "{base}/latest/meta-data/ram/security-credentials/{role}"
        ));
        if let Some(t) = &token {
            get = get.header("X-aliyun-ecs-metadata-token", t.trim());
        }
        let get = get
            .body(Full::new(Bytes::new()))
            .map_err(|e| unavailable(OP, e))?;
        let (status, body) = self.exchange(OP, get).await?;
        match status {
            200 => {}
            404 => {
                return Err(rejected(
                    OP,
                    format_args!("the instance has no RAM role {role}"),
                ));
            }
            s => return Err(unavailable(OP, format_args!("HTTP status {s}"))),
        }
        let t: Temporary = serde_json::from_slice(&body)
            .map_err(|e| unavailable(OP, format_args!("unreadable answer: {e}")))?;
        match t.code.as_deref() {
            None | Some("Success") => Ok(t),
            Some(code) => Err(unavailable(OP, format_args!("the service answered {code}"))),
        }
    }

    async fn assume_role_with_oidc(
        &self,
        sts: &str,
        role_arn: &str,
        provider_arn: &str,
        token_file: &PathBuf,
        session: &str,
    ) -> Result<Temporary, EciError> {
        const OP: &str = "AssumeRoleWithOIDC";
        // Read at every refresh: the kubelet rotates the projected token.
        let oidc_token = tokio::fs::read_to_string(token_file).await.map_err(|e| {
            rejected(
                OP,
                format_args!(
                    "cannot read the OIDC token file {}: {e}",
                    token_file.display()
                ),
            )
        })?;
        let timestamp = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("Action", "AssumeRoleWithOIDC")
            .append_pair("Format", "JSON")
            .append_pair("Version", "2015-04-01")
            .append_pair("Timestamp", &timestamp)
            .finish();
        // The token travels in the body, not in a URL that proxies may log.
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("RoleArn", role_arn)
            .append_pair("OIDCProviderArn", provider_arn)
            .append_pair("OIDCToken", oidc_token.trim())
            .append_pair("RoleSessionName", session)
            .append_pair("DurationSeconds", &OIDC_DURATION_SECONDS.to_string())
            .finish();
        let req = http::Request::post(format!("{}/?{query}", sts.trim_end_matches('/')))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| unavailable(OP, e))?;
        let (status, body) = self.exchange(OP, req).await?;
        if !(200..300).contains(&status) {
            let mut e = crate::error::from_response(OP, status, &body, None);
            // A refusal is about the credentials; anything else passes.
            if !matches!(e.kind, Kind::Throttled | Kind::Unavailable) {
                e.kind = Kind::Unauthenticated;
            }
            return Err(e);
        }
        let a: AssumeRoleAnswer = serde_json::from_slice(&body)
            .map_err(|e| unavailable(OP, format_args!("unreadable answer: {e}")))?;
        Ok(a.credentials)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(lifetime_s: i64, age_s: i64) -> Cached {
        let now = OffsetDateTime::now_utc();
        let fetched = now - time::Duration::seconds(age_s);
        Cached {
            creds: Credentials {
                access_key_id: "STS.x".into(),
                access_key_secret: "s".into(),
                security_token: Some("t".into()),
            },
            expires: Some(fetched + time::Duration::seconds(lifetime_s)),
            fetched,
        }
    }

    #[test]
    fn temporary_credentials_are_replaced_before_they_expire() {
        let now = OffsetDateTime::now_utc();
        // An hour: replaced in its last five minutes.
        assert!(cached(3600, 3000).fresh(now));
        assert!(!cached(3600, 3301).fresh(now));
        // Short-lived: in its last third.
        assert!(cached(9, 5).fresh(now));
        assert!(!cached(9, 7).fresh(now));
        assert!(cached(9, 7).valid(now));
        assert!(!cached(9, 10).valid(now));
    }

    #[test]
    fn debug_names_the_source_without_secrets() {
        let s = Source::Static(Credentials {
            access_key_id: "LTAI-id".into(),
            access_key_secret: "very-secret".into(),
            security_token: Some("token-secret".into()),
        });
        let shown = format!("{s:?}");
        assert!(
            shown.contains("LTAI-id") && !shown.contains("secret"),
            "{shown}"
        );
        let o = Source::Oidc {
            sts: "https://sts.aliyuncs.com".into(),
            role_arn: "acs:ram::1:role/r".into(),
            provider_arn: "acs:ram::1:oidc-provider/p".into(),
            token_file: "/var/run/token".into(),
            session: "s".into(),
        };
        assert_eq!(format!("{o:?}"), "RRSA role acs:ram::1:role/r");
    }
}
