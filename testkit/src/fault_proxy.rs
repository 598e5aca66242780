//! An HTTP proxy that injects cloud faults in front of a real emulator (moto, the ACI or ECI
//! emulator).
//!
//! [`FaultProxy::start`] is the AWS form the Fargate tests use: for requests whose `X-Amz-Target`
//! starts with a given prefix it answers, at a set rate and instead of forwarding, either ECS
//! throttling (HTTP 400, `x-amzn-ErrorType: ThrottlingException`, awsJson body) or a 5xx
//! `ServerException`. [`FaultProxy::start_with`] sits in front of any of the three clouds
//! ([`Flavor`]) and mixes four fault kinds ([`FaultKind`]): throttling as that cloud answers it,
//! a 5xx, a lost answer (the request is forwarded and applied, then the connection is closed
//! without an answer) and a slow answer (forwarded, answered late).
//!
//! It counts what it forwarded per operation, so tests can assert how many calls really reached
//! the cloud, and what it injected per operation and per kind; [`FaultProxy::forwarded_routes`]
//! counts the same calls a little finer (an ARM list apart from a GET of one resource, an AWS
//! operation with its service), for benchmarks of calls per pod. Tests can also script the next
//! answers of one operation ([`FaultProxy::respond_next`]), e.g. a RunTask with `failures` or a
//! `ConflictException`.

use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// ECS's JSON protocol target prefix.
pub const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

/// Which cloud's error shapes the proxy speaks, and how it names an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// AWS awsJson (ECS): the operation is the `X-Amz-Target` suffix; throttling is HTTP 400
    /// `ThrottlingException`, 5xx is 503 `ServerException`.
    Aws,
    /// Azure Resource Manager: the operation is the method and the resource type; throttling is
    /// 429 with `Retry-After: 1`, 5xx is 503 with an ARM error body.
    Azure,
    /// Alibaba Cloud RPC (ECI): the operation is the `Action` query parameter (or
    /// `x-acs-action`); throttling is HTTP 400 `Throttling.User`, 5xx is 503 `ServiceUnavailable`.
    Aliyun,
}

/// One kind of injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The cloud's throttling answer (not forwarded).
    Throttle,
    /// A 5xx answer (not forwarded).
    ServerError,
    /// Forwarded (the cloud applies it), then the connection is closed without an answer.
    LostAnswer,
    /// Forwarded, and the answer held back for a while before it is sent.
    Slow,
}

impl FaultKind {
    /// Every kind, in a fixed order (the seeded choice indexes into it).
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Throttle,
        FaultKind::ServerError,
        FaultKind::LostAnswer,
        FaultKind::Slow,
    ];
}

/// What [`FaultProxy::start_with`] injects.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// The cloud the proxy stands in front of.
    pub flavor: Flavor,
    /// Probability (0..1) that a request gets a fault.
    pub rate: f64,
    /// The kinds to choose from, uniformly (empty: nothing is injected).
    pub kinds: Vec<FaultKind>,
    /// Only requests whose path contains this are disturbed (e.g. `/subscriptions/` so the ACI
    /// provider's token endpoint is left alone); empty: every request. Admin paths
    /// (`/_emulator/`, `/moto-api/`) are never disturbed.
    pub path_contains: String,
    /// How long a [`FaultKind::Slow`] answer is held back, at most (uniform from a tenth of it).
    pub max_delay: Duration,
    /// Makes the fault pattern repeatable.
    pub seed: u64,
}

#[derive(Debug)]
struct State {
    rate: f64,
    prefix: String,
    /// `None`: the original AWS behaviour (half throttling, half 5xx, by target prefix).
    config: Option<FaultConfig>,
    rng: u64,
    forwarded: HashMap<String, usize>,
    /// Forwarded requests by [`route`].
    routes: HashMap<String, usize>,
    injected: HashMap<String, usize>,
    by_kind: HashMap<FaultKind, usize>,
    /// Canned answers per operation, used before anything else: (HTTP status, awsJson body).
    scripted: HashMap<String, VecDeque<(u16, String)>>,
}

impl State {
    /// xorshift64*: deterministic per seed, no dependency.
    fn next_unit(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let v = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Proxies to `upstream`, failing `rate` (0..1) of the requests whose target starts with
    /// `prefix`; `seed` makes the fault pattern repeatable.
    pub async fn start(
        upstream: SocketAddr,
        prefix: &str,
        rate: f64,
        seed: u64,
    ) -> anyhow::Result<Self> {
        Self::launch_to(
            upstream,
            State {
                rate,
                prefix: prefix.to_owned(),
                config: None,
                rng: seed.max(1),
                forwarded: HashMap::new(),
                routes: HashMap::new(),
                injected: HashMap::new(),
                by_kind: HashMap::new(),
                scripted: HashMap::new(),
            },
        )
        .await
    }

    /// Proxies to `upstream`, injecting the faults `config` describes.
    pub async fn start_with(upstream: SocketAddr, config: FaultConfig) -> anyhow::Result<Self> {
        Self::launch_to(
            upstream,
            State {
                rate: config.rate,
                prefix: String::new(),
                rng: config.seed.max(1),
                config: Some(config),
                forwarded: HashMap::new(),
                routes: HashMap::new(),
                injected: HashMap::new(),
                by_kind: HashMap::new(),
                scripted: HashMap::new(),
            },
        )
        .await
    }

    async fn launch_to(upstream: SocketAddr, state: State) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(req, upstream, state.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the fault rate.
    pub fn set_rate(&self, rate: f64) {
        self.state.lock().rate = rate;
    }

    /// Requests of operation `op` (e.g. "RunTask") forwarded to the upstream.
    pub fn forwarded(&self, op: &str) -> usize {
        self.state.lock().forwarded.get(op).copied().unwrap_or(0)
    }

    /// Requests forwarded to the upstream, by route: the operation with what [`forwarded`]
    /// leaves out. Azure: `GET containerGroups` is the list, `GET containerGroups/{}` one
    /// group; AWS: the whole `X-Amz-Target` (e.g. `secretsmanager.CreateSecret`); Aliyun: the
    /// action.
    ///
    /// [`forwarded`]: Self::forwarded
    pub fn forwarded_routes(&self) -> BTreeMap<String, usize> {
        self.state
            .lock()
            .routes
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Faults injected for `op`.
    pub fn injected(&self, op: &str) -> usize {
        self.state.lock().injected.get(op).copied().unwrap_or(0)
    }

    /// Answers the next request of operation `op` (e.g. "RunTask") with `status` and the awsJson
    /// `body` instead of forwarding it (counted as injected); calls queue up in order. An error
    /// body's `__type` becomes the `x-amzn-ErrorType` header.
    pub fn respond_next(&self, op: &str, status: u16, body: &str) {
        self.state
            .lock()
            .scripted
            .entry(op.to_owned())
            .or_default()
            .push_back((status, body.to_owned()));
    }

    /// Faults injected of `kind`, every operation together.
    pub fn injected_kind(&self, kind: FaultKind) -> usize {
        self.state.lock().by_kind.get(&kind).copied().unwrap_or(0)
    }

    /// Requests forwarded to the upstream, every operation together (lost answers included).
    pub fn forwarded_total(&self) -> usize {
        self.state.lock().forwarded.values().sum()
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        let mut s = self.state.lock();
        s.forwarded.clear();
        s.routes.clear();
        s.injected.clear();
        s.by_kind.clear();
    }
}

fn fault(throttle: bool) -> Response<Full<Bytes>> {
    let (status, kind, msg) = if throttle {
        (
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServerException",
            "Service unavailable, try again",
        )
    };
    let body = format!(r#"{{"__type":"{kind}","message":"{msg}"}}"#);
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    h.insert(
        "x-amzn-errortype",
        hyper::header::HeaderValue::from_static(kind),
    );
    resp
}

fn canned(status: u16, body: String) -> Response<Full<Bytes>> {
    let kind = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["__type"].as_str().map(str::to_owned));
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Some(v) = kind.and_then(|k| hyper::header::HeaderValue::from_str(&k).ok()) {
        h.insert("x-amzn-errortype", v);
    }
    resp
}

/// Why a connection is dropped without an answer (a lost answer); hyper closes the connection
/// when the service fails.
#[derive(Debug)]
struct AnswerLost;

impl std::fmt::Display for AnswerLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("answer dropped by the fault proxy")
    }
}

impl std::error::Error for AnswerLost {}

/// The operation a request names, as its cloud spells it.
fn operation(req: &Request<Incoming>, flavor: Flavor) -> String {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    match flavor {
        Flavor::Aws => header("x-amz-target")
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned(),
        Flavor::Aliyun => {
            let action = header("x-acs-action");
            if !action.is_empty() {
                return action;
            }
            req.uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("Action="))
                .unwrap_or_default()
                .to_owned()
        }
        Flavor::Azure => {
            // `.../containerGroups/{name}/containers/{c}/logs` → `GET containers/logs`: the
            // resource type words (every other segment after the provider), not the names.
            let path = req.uri().path();
            let tail = path
                .split_once("/providers/")
                .map(|(_, t)| t)
                .unwrap_or(path);
            let words: Vec<&str> = tail.split('/').skip(1).step_by(2).collect();
            format!("{} {}", req.method(), words.join("/"))
        }
    }
}

/// The operation a request names, with the detail [`operation`] drops (see
/// [`FaultProxy::forwarded_routes`]).
fn route(req: &Request<Incoming>, flavor: Flavor) -> String {
    match flavor {
        Flavor::Aws => match req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
        {
            Some(target) if !target.is_empty() => target.to_owned(),
            // awsQuery services (CloudWatch, STS) name the action in the form body, unread here.
            _ => format!("{} {}", req.method(), req.uri().path()),
        },
        Flavor::Aliyun => operation(req, flavor),
        Flavor::Azure => {
            // Resource types kept, names replaced by `{}`: a list ends with a type, a single
            // resource with `{}`.
            let path = req.uri().path();
            let tail = path
                .split_once("/providers/")
                .map(|(_, t)| t)
                .unwrap_or(path);
            let words: Vec<&str> = tail
                .split('/')
                .skip(1)
                .enumerate()
                .map(|(i, w)| if i % 2 == 0 { w } else { "{}" })
                .collect();
            format!("{} {}", req.method(), words.join("/"))
        }
    }
}

/// The answer a throttled or failed request gets from `flavor`'s cloud.
fn flavored_fault(flavor: Flavor, throttle: bool) -> Response<Full<Bytes>> {
    use hyper::header::HeaderValue;
    match flavor {
        Flavor::Aws => fault(throttle),
        Flavor::Azure => {
            let (status, code) = if throttle {
                (StatusCode::TOO_MANY_REQUESTS, "TooManyRequests")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            };
            let body = serde_json::json!({"error": {"code": code, "message": "injected by the fault proxy"}});
            let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            if throttle {
                h.insert("retry-after", HeaderValue::from_static("1"));
            }
            resp
        }
        Flavor::Aliyun => {
            let (status, code) = if throttle {
                (StatusCode::BAD_REQUEST, "Throttling.User")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
            };
            let body = serde_json::json!({
                "RequestId": "00000000-FAULT-PROXY",
                "HostId": "fault-proxy",
                "Code": code,
                "Message": "injected by the fault proxy",
            });
            let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            resp
        }
    }
}

/// What to do with one request: answer it now, or forward it and then maybe lose or delay the
/// answer.
enum Plan {
    Answer(Response<Full<Bytes>>),
    Forward { lose: bool, delay: Option<Duration> },
}

fn plan(s: &mut State, req: &Request<Incoming>) -> (String, Plan) {
    let flavor = s.config.as_ref().map_or(Flavor::Aws, |c| c.flavor);
    let op = operation(req, flavor);
    if let Some((status, body)) = s.scripted.get_mut(&op).and_then(VecDeque::pop_front) {
        *s.injected.entry(op.clone()).or_default() += 1;
        return (op, Plan::Answer(canned(status, body)));
    }
    let forward = Plan::Forward {
        lose: false,
        delay: None,
    };
    let Some(config) = s.config.clone() else {
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !s.prefix.is_empty() && target.starts_with(&s.prefix) {
            let roll = s.next_unit();
            if roll < s.rate {
                *s.injected.entry(op.clone()).or_default() += 1;
                // Half throttling, half 5xx.
                let throttle = roll < s.rate / 2.0;
                let kind = if throttle {
                    FaultKind::Throttle
                } else {
                    FaultKind::ServerError
                };
                *s.by_kind.entry(kind).or_default() += 1;
                return (op, Plan::Answer(fault(throttle)));
            }
        }
        return (op, forward);
    };
    let path = req.uri().path();
    let admin = path.starts_with("/_emulator/") || path.starts_with("/moto-api/");
    if admin || config.kinds.is_empty() || !path.contains(&config.path_contains) {
        return (op, forward);
    }
    // Two draws per request whatever the outcome, so one request's fault does not shift the
    // pattern of the next ones.
    let roll = s.next_unit();
    let pick = s.next_unit();
    let delay_roll = s.next_unit();
    if roll >= s.rate {
        return (op, forward);
    }
    let index = ((pick * config.kinds.len() as f64) as usize).min(config.kinds.len() - 1);
    let kind = config.kinds[index];
    *s.injected.entry(op.clone()).or_default() += 1;
    *s.by_kind.entry(kind).or_default() += 1;
    let plan = match kind {
        FaultKind::Throttle => Plan::Answer(flavored_fault(config.flavor, true)),
        FaultKind::ServerError => Plan::Answer(flavored_fault(config.flavor, false)),
        FaultKind::LostAnswer => Plan::Forward {
            lose: true,
            delay: None,
        },
        FaultKind::Slow => Plan::Forward {
            lose: false,
            delay: Some(config.max_delay.mul_f64(0.1 + 0.9 * delay_roll)),
        },
    };
    (op, plan)
}

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, AnswerLost> {
    let (op, route, plan) = {
        let mut s = state.lock();
        let flavor = s.config.as_ref().map_or(Flavor::Aws, |c| c.flavor);
        let (op, plan) = plan(&mut s, &req);
        (op, route(&req, flavor), plan)
    };
    let (lose, delay) = match plan {
        Plan::Answer(resp) => return Ok(resp),
        Plan::Forward { lose, delay } => (lose, delay),
    };
    match forward(req, upstream).await {
        Ok(resp) => {
            {
                let mut s = state.lock();
                *s.forwarded.entry(op).or_default() += 1;
                *s.routes.entry(route).or_default() += 1;
            }
            if lose {
                return Err(AnswerLost);
            }
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            Ok(resp)
        }
        Err(e) => {
            let mut resp = Response::new(Full::new(Bytes::from(format!("proxy: {e:#}"))));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(resp)
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    upstream: SocketAddr,
) -> anyhow::Result<Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.context("reading request")?.to_bytes();
    let stream = TcpStream::connect(upstream)
        .await
        .context("connecting upstream")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let resp = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await
        .context("forwarding")?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.context("reading response")?.to_bytes();
    Ok(Response::from_parts(parts, Full::new(body)))
}
