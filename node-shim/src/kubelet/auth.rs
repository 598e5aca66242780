//! Who may use the kubelet API, decided as the kubelet decides: the caller is identified by a
//! verified client certificate or by a bearer token checked with a TokenReview (anonymous only
//! when enabled), and every request is authorized with a SubjectAccessReview on `nodes/<name>`
//! with the kubelet's verb and subresource mapping. Both answers are cached briefly.

use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, HashMap},
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
/// Bounds the caches; a full cache drops its expired entries, then the least recently used.
pub const MAX_CACHED: usize = 4096;
/// TokenReviews one client address may cause: a burst, then this many per second. A client
/// trying tokens at random gets 429 instead of turning each guess into an API server call.
pub const TOKEN_REVIEW_BURST: f64 = 20.0;
/// See [`TOKEN_REVIEW_BURST`].
pub const TOKEN_REVIEWS_PER_SECOND: f64 = 5.0;

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
    /// The client caused too many TokenReviews lately (HTTP 429).
    #[error("too many new bearer tokens from this client; retry later")]
    RateLimited,
    /// The API server could not answer a review (HTTP 500; not cached).
    #[error("checking access with the API server failed")]
    Unavailable(#[source] kube::Error),
}

/// The kubelet's authorization attributes for a request: verb from the HTTP method, subresource
/// from the path (`stats`, `metrics`, `log`, `spec`, else `proxy`).
pub fn attributes(method: &http::Method, path: &str) -> (&'static str, &'static str) {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    // Streaming commands are `create` whatever the method: over WebSocket they arrive as GET, and a
    // principal allowed only to read (`get nodes/proxy`) must not exec into pods.
    let streaming = ["/exec", "/attach", "/portForward", "/run"]
        .iter()
        .any(|p| under(p));
    let verb = match *method {
        _ if streaming => "create",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "get",
    };
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

struct Entry<V> {
    until: Instant,
    used: u64,
    value: V,
}

/// A bounded cache with expiry, evicting the least recently used entry when full.
struct Cache<K, V> {
    entries: Mutex<(u64, HashMap<K, Entry<V>>)>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new((0, HashMap::new())),
        }
    }

    fn get(&self, key: &K) -> Option<V> {
        let mut guard = self.entries.lock();
        let (clock, entries) = &mut *guard;
        *clock += 1;
        let e = entries.get_mut(key).filter(|e| e.until > Instant::now())?;
        e.used = *clock;
        Some(e.value.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        let mut guard = self.entries.lock();
        let (clock, entries) = &mut *guard;
        *clock += 1;
        if entries.len() >= MAX_CACHED && !entries.contains_key(&key) {
            let now = Instant::now();
            entries.retain(|_, e| e.until > now);
            if entries.len() >= MAX_CACHED {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    entries.remove(&k);
                }
            }
        }
        let until = Instant::now() + ttl;
        entries.insert(
            key,
            Entry {
                until,
                used: *clock,
                value,
            },
        );
    }
}

/// Token buckets per client address, for TokenReviews.
struct ReviewBudget {
    buckets: Mutex<HashMap<std::net::IpAddr, (f64, Instant)>>,
}

impl ReviewBudget {
    /// Takes one review from `client`'s bucket; false when it is empty.
    fn take(&self, client: std::net::IpAddr) -> bool {
        let mut buckets = self.buckets.lock();
        let now = Instant::now();
        if buckets.len() >= MAX_CACHED && !buckets.contains_key(&client) {
            // Full buckets carry no information; drop them first.
            let refill = Duration::from_secs_f64(TOKEN_REVIEW_BURST / TOKEN_REVIEWS_PER_SECOND);
            buckets.retain(|_, (_, at)| now.duration_since(*at) < refill);
            if buckets.len() >= MAX_CACHED {
                return false;
            }
        }
        let (tokens, at) = buckets.entry(client).or_insert((TOKEN_REVIEW_BURST, now));
        let refilled = *tokens + now.duration_since(*at).as_secs_f64() * TOKEN_REVIEWS_PER_SECOND;
        *tokens = refilled.min(TOKEN_REVIEW_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
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
    budget: ReviewBudget,
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
            budget: ReviewBudget {
                buckets: Mutex::default(),
            },
        }
    }

    /// The caller: `cert_user` from a verified client certificate, else the bearer token in
    /// `authorization`, else anonymous when enabled.
    pub async fn authenticate(
        &self,
        cert_user: Option<&User>,
        authorization: Option<&str>,
        client: std::net::IpAddr,
    ) -> Result<User, Denied> {
        if let Some(user) = cert_user {
            return Ok(user.clone());
        }
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => self.review_token(token, client).await,
            None if self.anonymous => Ok(User::anonymous()),
            None => Err(Denied::Unauthenticated),
        }
    }

    async fn review_token(&self, token: &str, client: std::net::IpAddr) -> Result<User, Denied> {
        let key = sha256(token);
        if let Some(cached) = self.tokens.get(&key) {
            return cached.ok_or(Denied::Unauthenticated);
        }
        if !self.budget.take(client) {
            return Err(Denied::RateLimited);
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
        let len = cache.entries.lock().1.len();
        assert!(len <= MAX_CACHED, "{len}");
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_used() {
        let cache: Cache<u32, u32> = Cache::new();
        for i in 0..MAX_CACHED as u32 {
            cache.put(i, i, Duration::from_secs(60));
        }
        // 0 is the oldest insert, but it was just used: 1 goes instead.
        assert_eq!(cache.get(&0), Some(0));
        cache.put(99_999, 1, Duration::from_secs(60));
        assert_eq!(cache.get(&0), Some(0));
        assert_eq!(cache.get(&1), None);
        assert_eq!(cache.get(&2), Some(2), "only one entry was evicted");
    }

    #[test]
    fn token_reviews_are_budgeted_per_client() {
        let budget = ReviewBudget {
            buckets: Mutex::default(),
        };
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let allowed = (0..100).filter(|_| budget.take(a)).count();
        assert_eq!(
            allowed, TOKEN_REVIEW_BURST as usize,
            "a burst, then nothing"
        );
        assert!(budget.take(b), "another client has its own budget");
    }

    #[test]
    fn streaming_commands_are_create_whatever_the_method() {
        let get = http::Method::GET;
        for path in [
            "/exec/ns/p/c",
            "/attach/ns/p/c",
            "/portForward/ns/p",
            "/run/ns/p/c",
        ] {
            assert_eq!(attributes(&get, path), ("create", "proxy"), "{path}");
        }
        assert_eq!(attributes(&get, "/execute"), ("get", "proxy"));
    }
}
