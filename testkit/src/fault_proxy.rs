//! An HTTP proxy that injects AWS faults in front of a real emulator (moto): for requests whose
//! `X-Amz-Target` starts with a given prefix it answers, at a set rate and instead of forwarding,
//! either ECS throttling (HTTP 400, `x-amzn-ErrorType: ThrottlingException`, awsJson body) or a
//! 5xx `ServerException`. It counts what it forwarded per operation, so tests can assert how many
//! calls really reached the cloud. Tests can also script the next answers of one operation
//! ([`FaultProxy::respond_next`]), e.g. a RunTask with `failures` or a `ConflictException`.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// ECS's JSON protocol target prefix.
pub const ECS_TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";

#[derive(Debug)]
struct State {
    rate: f64,
    prefix: String,
    rng: u64,
    forwarded: HashMap<String, usize>,
    injected: HashMap<String, usize>,
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

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            rate,
            prefix: prefix.to_owned(),
            rng: seed.max(1),
            forwarded: HashMap::new(),
            injected: HashMap::new(),
            scripted: HashMap::new(),
        }));
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
        lock(&self.state).rate = rate;
    }

    /// Requests of operation `op` (e.g. "RunTask") forwarded to the upstream.
    pub fn forwarded(&self, op: &str) -> usize {
        lock(&self.state).forwarded.get(op).copied().unwrap_or(0)
    }

    /// Faults injected for `op`.
    pub fn injected(&self, op: &str) -> usize {
        lock(&self.state).injected.get(op).copied().unwrap_or(0)
    }

    /// Answers the next request of operation `op` (e.g. "RunTask") with `status` and the awsJson
    /// `body` instead of forwarding it (counted as injected); calls queue up in order. An error
    /// body's `__type` becomes the `x-amzn-ErrorType` header.
    pub fn respond_next(&self, op: &str, status: u16, body: &str) {
        lock(&self.state)
            .scripted
            .entry(op.to_owned())
            .or_default()
            .push_back((status, body.to_owned()));
    }

    /// Forgets the counts.
    pub fn reset_counts(&self) {
        let mut s = lock(&self.state);
        s.forwarded.clear();
        s.injected.clear();
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

async fn handle(
    req: Request<Incoming>,
    upstream: SocketAddr,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let op = target.rsplit('.').next().unwrap_or_default().to_owned();
    {
        let mut s = lock(&state);
        if let Some((status, body)) = s.scripted.get_mut(&op).and_then(VecDeque::pop_front) {
            *s.injected.entry(op.clone()).or_default() += 1;
            return Ok(canned(status, body));
        }
        if !s.prefix.is_empty() && target.starts_with(&s.prefix) {
            let roll = s.next_unit();
            if roll < s.rate {
                *s.injected.entry(op.clone()).or_default() += 1;
                // Half throttling, half 5xx.
                return Ok(fault(roll < s.rate / 2.0));
            }
        }
    }
    match forward(req, upstream).await {
        Ok(resp) => {
            *lock(&state).forwarded.entry(op).or_default() += 1;
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
