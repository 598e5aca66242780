//! A Prometheus registry served as text on `GET /metrics`.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Buckets for durations: 1 ms doubling to about 16 s.
pub fn latency_histogram() -> prometheus_client::metrics::histogram::Histogram {
    prometheus_client::metrics::histogram::Histogram::new(
        prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
    )
}

/// The text of every metric in `registry`.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::warn!(%err, "encoding metrics failed");
    }
    text
}

/// Whether the process can do its work, as `GET /readyz` answers it (200 or 503); set by the part
/// that knows (the shim: whether its provider answers).
#[derive(Clone, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Starts as `ready`.
    pub fn new(ready: bool) -> Self {
        Self(Arc::new(AtomicBool::new(ready)))
    }

    /// Records whether the process is ready.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether the process is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn respond(registry: &Registry, ready: &Readiness, path: &str) -> http::Response<Full<Bytes>> {
    let (status, content_type, body) = if path == "/metrics" {
        (
            http::StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            encode(registry),
        )
    } else if path == "/healthz" {
        // For HTTP liveness probes: Kubernetes 1.20 has no gRPC probes, and the kubelet API's
        // own /healthz needs client credentials.
        (http::StatusCode::OK, "text/plain", "ok\n".to_owned())
    } else if path == "/readyz" {
        if ready.get() {
            (http::StatusCode::OK, "text/plain", "ok\n".to_owned())
        } else {
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "not ready\n".to_owned(),
            )
        }
    } else {
        (
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found; metrics are on /metrics, liveness on /healthz, readiness on /readyz\n"
                .to_owned(),
        )
    };
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// Metrics connections served at once (scrapers are few); more are closed at accept.
pub const MAX_CONNECTIONS: usize = 256;
/// Time a client has to send a request's headers (also bounds idle keep-alive connections).
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Binds `addr` and serves `registry` until `shutdown`. Binding happens before this returns, so a
/// taken port is reported at start.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_with_readiness(addr, registry, Readiness::new(true), shutdown).await
}

/// [`serve`], with `/readyz` answering what `ready` says.
pub async fn serve_with_readiness(
    addr: SocketAddr,
    registry: Arc<Registry>,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics on /metrics");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(err) => {
                        tracing::warn!(%err, "accepting a metrics connection failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let registry = registry.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let response = respond(&registry, &ready, req.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
                drop(slot);
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthz_answers_ok_readyz_follows_readiness_and_unknown_paths_404() {
        let registry = Registry::default();
        let ready = Readiness::new(false);
        let status = |path: &str| respond(&registry, &ready, path).status();
        assert_eq!(status("/healthz"), http::StatusCode::OK);
        assert_eq!(status("/metrics"), http::StatusCode::OK);
        assert_eq!(status("/other"), http::StatusCode::NOT_FOUND);
        assert_eq!(status("/readyz"), http::StatusCode::SERVICE_UNAVAILABLE);
        ready.set(true);
        assert_eq!(status("/readyz"), http::StatusCode::OK);
    }
}
