//! Who may use the kubelet API, decided as the kubelet decides: the caller is identified by a
//! verified client certificate or by a bearer token checked with a TokenReview (anonymous only
//! when enabled), and every request is authorized with a SubjectAccessReview on `nodes/<name>`
//! with the kubelet's verb and subresource mapping. Both answers are cached briefly.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{TokenReview, TokenReviewSpec},
    authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec},
};
use kube::{Api, Client, api::PostParams};

/// How long answers are kept: the kubelet's defaults (webhook token cache 2 min; authorization
/// 5 min when allowed, 30 s when denied).
const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Bounds the caches; a full cache is cleared of expired entries, then of everything.
const MAX_CACHED: usize = 4096;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    /// User name.
    pub name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// UID, when the authenticator gives one.
    pub uid: Option<String>,
    /// Extra attributes (e.g. a service-account token's pod binding), sorted.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// The anonymous user.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            uid: None,
            extra: BTreeMap::new(),
        }
    }
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No valid credentials (HTTP 401).
    #[error("Unauthorized")]
    Unauthenticated,
    /// Authenticated but not allowed (HTTP 403), with the kubelet's message.
    #[error("Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource})")]
    Forbidden {
        /// The user.
        user: String,
        /// The verb.
        verb: &'static str,
        /// The subresource.
        subresource: &'static str,
    },
    /// The API server could not answer a review (HTTP 500; not cached).
    #[error("checking access with the API server failed")]
    Unavailable(#[source] kube::Error),
}

/// The kubelet's authorization attributes for a request: verb from the HTTP method, subresource
/// from the path (`stats`, `metrics`, `log`, `spec`, else `proxy`).
pub fn attributes(method: &http::Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    };
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else {
        "proxy"
    };
    (verb, subresource)
}

struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: std::hash::Hash + Eq, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries
            .get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= MAX_CACHED {
            let now = Instant::now();
            entries.retain(|_, (until, _)| *until > now);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now() + ttl, value));
    }
}

/// Authenticates and authorizes kubelet API requests for one node.
pub struct Auth {
    client: Client,
    node_name: String,
    anonymous: bool,
    /// Keyed by the token's SHA-256, so tokens are not kept in memory.
    tokens: Cache<[u8; 32], Option<User>>,
    decisions: Cache<(User, &'static str, &'static str), bool>,
}

fn sha256(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Auth {
    /// Access control for `node_name`; `anonymous` lets credential-less requests be authorized as
    /// `system:anonymous`.
    pub fn new(client: Client, node_name: String, anonymous: bool) -> Self {
        Self {
            client,
            node_name,
            anonymous,
            tokens: Cache::new(),
            decisions: Cache::new(),
        }
    }

    /// The caller: `cert_user` from a verified client certificate, else the bearer token in
    /// `authorization`, else anonymous when enabled.
    pub async fn authenticate(
        &self,
        cert_user: Option<&User>,
        authorization: Option<&str>,
    ) -> Result<User, Denied> {
        if let Some(user) = cert_user {
            return Ok(user.clone());
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => self.review_token(token).await,
            None if self.anonymous => Ok(User::anonymous()),
            None => Err(Denied::Unauthenticated),
        }
    }

    async fn review_token(&self, token: &str) -> Result<User, Denied> {
        let key = sha256(token);
        if let Some(cached) = self.tokens.get(&key) {
            return cached.ok_or(Denied::Unauthenticated);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: None,
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Denied::Unavailable)?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(u)) => Some(User {
                name: u.username.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                uid: u.uid,
                extra: u.extra.unwrap_or_default(),
            }),
            _ => None,
        };
        self.tokens.put(key, user.clone(), TOKEN_TTL);
        user.ok_or(Denied::Unauthenticated)
    }

    /// Whether `user` may call `method path` on this node.
    pub async fn authorize(
        &self,
        user: &User,
        method: &http::Method,
        path: &str,
    ) -> Result<(), Denied> {
        let (verb, subresource) = attributes(method, path);
        let key = (user.clone(), verb, subresource);
        let allowed = match self.decisions.get(&key) {
            Some(allowed) => allowed,
            None => {
                let allowed = self.review_access(user, verb, subresource).await?;
                let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
                self.decisions.put(key, allowed, ttl);
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(Denied::Forbidden {
                user: user.name.clone(),
                verb,
                subresource,
            })
        }
    }

    async fn review_access(
        &self,
        user: &User,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<bool, Denied> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                uid: user.uid.clone(),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    name: Some(self.node_name.clone()),
                    version: Some("v1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(Denied::Unavailable)?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_subresource_mapping() {
        let get = http::Method::GET;
        assert_eq!(attributes(&get, "/stats/summary"), ("get", "stats"));
        assert_eq!(attributes(&get, "/stats"), ("get", "stats"));
        assert_eq!(attributes(&get, "/statsz"), ("get", "proxy"));
        assert_eq!(attributes(&get, "/metrics/resource"), ("get", "metrics"));
        assert_eq!(attributes(&get, "/logs/"), ("get", "log"));
        assert_eq!(attributes(&get, "/spec/"), ("get", "spec"));
        assert_eq!(attributes(&get, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(
            attributes(&http::Method::POST, "/exec/ns/p/c"),
            ("create", "proxy")
        );
        assert_eq!(attributes(&get, "/pods"), ("get", "proxy"));
    }

    #[test]
    fn cache_expires_and_is_bounded() {
        let cache: Cache<u32, bool> = Cache::new();
        cache.put(1, true, Duration::from_secs(60));
        cache.put(2, false, Duration::ZERO);
        assert_eq!(cache.get(&1), Some(true));
        assert_eq!(cache.get(&2), None);
        for i in 0..(MAX_CACHED as u32 + 10) {
            cache.put(i, true, Duration::from_secs(60));
        }
        let len = cache.entries.lock().map(|e| e.len()).unwrap_or_default();
        assert!(len <= MAX_CACHED, "{len}");
    }
}
