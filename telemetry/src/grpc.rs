//! Tracing and metrics for gRPC calls, as tower layers: on the client, one span per call (a child
//! of the caller's span) whose context travels in `traceparent`; on the server, one span per call
//! whose parent comes from that header. Both count calls by method and status code.
//!
//! The status is read from the response headers, where gRPC puts it for calls that fail before
//! any message ("trailers-only"); a streaming call that fails later is counted with the code its
//! headers had (OK).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tracing::{Instrument, field::Empty};

use crate::propagation;

/// Labels of a call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `Service/Method`.
    pub method: String,
    /// The gRPC status code name, e.g. `Ok`, `NotFound`.
    pub code: String,
}

/// Labels of a latency sample.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// `Service/Method`.
    pub method: String,
}

/// Call counters and latency, for one side (client or server).
#[derive(Clone)]
pub struct GrpcMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
}

impl GrpcMetrics {
    /// Registers `grpc_<side>_calls` and `grpc_<side>_call_duration_seconds` (side: `client` or
    /// `server`).
    pub fn register(registry: &mut Registry, side: &str) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(
            crate::metrics::latency_histogram as fn() -> Histogram,
        );
        registry.register(
            format!("grpc_{side}_calls"),
            format!("gRPC calls by method and status code ({side} side)"),
            calls.clone(),
        );
        registry.register(
            format!("grpc_{side}_call_duration_seconds"),
            format!("Time to the response headers of gRPC calls ({side} side)"),
            latency.clone(),
        );
        Self { calls, latency }
    }

    fn observe(&self, method: &str, code: tonic::Code, started: Instant) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                code: format!("{code:?}"),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// `("podprovider.v1.PodProvider", "CreatePod")` from `/podprovider.v1.PodProvider/CreatePod`.
fn split_path(path: &str) -> (&str, &str) {
    let path = path.trim_start_matches('/');
    path.split_once('/').unwrap_or((path, ""))
}

fn status_code<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Which side a [`GrpcLayer`] instruments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Outgoing calls: the span is a child of the caller's span; `traceparent` is injected.
    Client,
    /// Incoming calls: the span's parent is the caller's `traceparent`.
    Server,
}

/// A tower layer that traces and counts gRPC calls.
#[derive(Clone)]
pub struct GrpcLayer {
    side: Side,
    metrics: Option<GrpcMetrics>,
}

impl GrpcLayer {
    /// A layer for `side`, counting into `metrics` when given.
    pub fn new(side: Side, metrics: Option<GrpcMetrics>) -> Self {
        Self { side, metrics }
    }
}

impl<S> tower::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcService {
            inner,
            side: self.side,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcLayer`] makes.
#[derive(Clone)]
pub struct GrpcService<S> {
    inner: S,
    side: Side,
    metrics: Option<GrpcMetrics>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for GrpcService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcService")
            .field("inner", &self.inner)
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().trim_start_matches('/').to_owned();
        let (service, rpc) = split_path(request.uri().path());
        let kind = match self.side {
            Side::Client => "client",
            Side::Server => "server",
        };
        let span = tracing::info_span!(
            "grpc",
            otel.name = %method,
            otel.kind = kind,
            otel.status_code = Empty,
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %rpc,
            rpc.grpc.status_code = Empty,
        );
        match self.side {
            Side::Client => propagation::inject(&span, request.headers_mut()),
            Side::Server => propagation::set_parent_from(&span, request.headers()),
        }
        // The clone that was polled ready handles this call (tower's usual pattern).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            inner.call(request)
        };
        let record = span.clone();
        Box::pin(
            async move {
                let result = future.await;
                let code = match &result {
                    Ok(response) => status_code(response),
                    Err(_) => tonic::Code::Unavailable,
                };
                record.record("rpc.grpc.status_code", code as i32);
                if code != tonic::Code::Ok {
                    record.record("otel.status_code", "ERROR");
                }
                if let Some(m) = &metrics {
                    m.observe(&method, code, started);
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_paths() {
        assert_eq!(
            split_path("/podprovider.v1.PodProvider/CreatePod"),
            ("podprovider.v1.PodProvider", "CreatePod")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
    }

    #[test]
    fn status_from_trailers_only_headers() {
        let mut response = http::Response::new(());
        assert_eq!(status_code(&response), tonic::Code::Ok);
        response
            .headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(status_code(&response), tonic::Code::NotFound);
    }

    #[test]
    fn counted_by_method_and_code() {
        let mut registry = Registry::default();
        let metrics = GrpcMetrics::register(&mut registry, "client");
        metrics.observe("svc/A", tonic::Code::Ok, Instant::now());
        metrics.observe("svc/A", tonic::Code::Ok, Instant::now());
        metrics.observe("svc/A", tonic::Code::NotFound, Instant::now());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("grpc_client_calls_total{method=\"svc/A\",code=\"Ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("grpc_client_calls_total{method=\"svc/A\",code=\"NotFound\"} 1"));
        assert!(text.contains("grpc_client_call_duration_seconds_count{method=\"svc/A\"} 3"));
    }
}
