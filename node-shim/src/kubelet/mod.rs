//! The kubelet HTTPS API, so `kubectl logs/exec/attach/port-forward/top` work through the API
//! server: it connects to the Node's InternalIP and kubelet port, and this module answers with the
//! real kubelet's paths, backed by the provider's RPCs.
//!
//! A request goes: TLS ([`tls`]) → identify and authorize the caller ([`auth`]) → [`route`] →
//! a handler: [`handlers`] (logs, stats, pod lists) or [`remotecommand`] (exec, attach,
//! port-forward over SPDY or WebSocket).

pub mod auth;
pub mod handlers;
pub mod remotecommand;
pub mod tls;

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{config::Config, provider_client::ProviderClient};
use auth::{Auth, Denied, User};

/// Connections served at once; more are closed at accept. High enough that thousands of idle
/// connections (each cut off by the timeouts below) leave room for real requests.
pub const MAX_CONNECTIONS: usize = 16_384;
/// Time a client has to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers, from connection or from the end of the
/// previous request (so it also bounds idle keep-alive connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The response body type of every handler.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// Errors that stop the kubelet API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port could not be bound.
    #[error("listening on {addr} for the kubelet API: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::Error),
}

/// What every request handler needs.
pub struct KubeletApi {
    /// The API client (pod lookups, reviews).
    pub client: Client,
    /// The provider.
    pub provider: ProviderClient,
    /// Flags.
    pub cfg: Arc<Config>,
    auth: Auth,
    started: std::time::SystemTime,
}

/// A complete response with a text body.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let body = Full::new(Bytes::from(body.into()))
        .map_err(|never| match never {})
        .boxed();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON response.
pub fn json(value: &serde_json::Value) -> Response<Body> {
    let mut response = text(StatusCode::OK, value.to_string());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// The HTTP status for a provider error, with its message (which the contract keeps secret-free).
pub fn provider_error(status: &tonic::Status) -> Response<Body> {
    use tonic::Code;
    let code = match status.code() {
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(code, status.message().to_owned())
}

impl KubeletApi {
    /// The pod `namespace/name` if it is bound to this node (and has `uid` when given).
    pub async fn pod(
        &self,
        namespace: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Pod, Response<Body>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = api.get_opt(name).await.map_err(|err| {
            tracing::warn!(%err, "reading a pod for the kubelet API failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, "reading the pod failed")
        })?;
        let on_node = |p: &Pod| {
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&self.cfg.node_name)
        };
        match pod {
            Some(p) if on_node(&p) && uid.is_none_or(|u| p.metadata.uid.as_deref() == Some(u)) => {
                Ok(p)
            }
            _ => Err(text(
                StatusCode::NOT_FOUND,
                format!("pod {namespace}/{name} not found on this node"),
            )),
        }
    }
}

/// Whether `pod` has a container called `name`.
pub fn has_container(pod: &Pod, name: &str) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == name)
            || s.init_containers.iter().flatten().any(|c| c.name == name)
    })
}

/// Serves the kubelet API until `shutdown`. The port is bound first, so a taken port fails at
/// once; with a CSR the listener then waits for the certificate before accepting.
pub async fn run(
    client: Client,
    provider: ProviderClient,
    cfg: Arc<Config>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr = SocketAddr::new(cfg.kubelet_address, cfg.kubelet_port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let serving = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        s = tls::serving_cert(&client, &cfg, &shutdown) => s?,
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(&cfg, serving)?));
    let api = Arc::new(KubeletApi {
        auth: Auth::new(client.clone(), cfg.node_name.clone(), cfg.anonymous_auth),
        client,
        provider,
        cfg,
        started: std::time::SystemTime::now(),
    });
    tracing::info!(%addr, "kubelet API listening");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "kubelet API connection limit reached; closing");
                    continue;
                };
                let (api, acceptor) = (api.clone(), acceptor.clone());
                tokio::spawn(async move {
                    serve_connection(api, acceptor, tcp, peer).await;
                    drop(slot);
                });
            }
            Err(err) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tracing::warn!(%err, "accepting a kubelet API connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    api: Arc<KubeletApi>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            tracing::debug!(%peer, %err, "kubelet API TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let cert_user = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|der| tls::certificate_user(der))
        .map(|(name, groups)| User {
            name,
            groups,
            uid: None,
            extra: Default::default(),
        });
    let service = service_fn(move |req| {
        let api = api.clone();
        let cert_user = cert_user.clone();
        async move { Ok::<_, Infallible>(handle(api, cert_user, peer, req).await) }
    });
    if let Err(err) = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, %err, "kubelet API connection ended with an error");
    }
}

async fn handle(
    api: Arc<KubeletApi>,
    cert_user: Option<User>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let authorization = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let path = req.uri().path().to_owned();
    let checked = match api
        .auth
        .authenticate(cert_user.as_ref(), authorization, peer.ip())
        .await
    {
        Ok(user) => api
            .auth
            .authorize(&user, req.method(), &path)
            .await
            .map(|()| user),
        Err(denied) => Err(denied),
    };
    let user = match checked {
        Ok(user) => user,
        Err(Denied::Unauthenticated) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Err(denied @ Denied::RateLimited) => {
            return text(StatusCode::TOO_MANY_REQUESTS, denied.to_string());
        }
        Err(denied @ Denied::Forbidden { .. }) => {
            return text(StatusCode::FORBIDDEN, denied.to_string());
        }
        Err(Denied::Unavailable(err)) => {
            tracing::warn!(%err, "access review failed");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                Denied::Unavailable(err).to_string(),
            );
        }
    };
    tracing::debug!(method = %req.method(), %path, user = %user.name, "kubelet API request");
    // Provider calls made for this request (logs, exec, stats) become this span's children.
    let span = tracing::info_span!(
        "kubelet.request",
        otel.name = %format!("{} {}", req.method(), kubelet_route(&path)),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %path,
        enduser.id = %user.name,
    );
    route(&api, req).instrument(span).await
}

/// The route template of `path`, for span names (paths hold pod names).
fn kubelet_route(path: &str) -> &'static str {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    match first {
        "containerLogs" => "/containerLogs/{namespace}/{pod}/{container}",
        "exec" => "/exec/{namespace}/{pod}/{container}",
        "attach" => "/attach/{namespace}/{pod}/{container}",
        "portForward" => "/portForward/{namespace}/{pod}",
        "stats" => "/stats/summary",
        "metrics" => "/metrics/resource",
        "pods" => "/pods",
        "runningpods" => "/runningpods/",
        "healthz" => "/healthz",
        _ => "other",
    }
}

/// Dispatches on the kubelet's paths.
async fn route(api: &Arc<KubeletApi>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok"),
        ["pods"] | ["pods", ""] => handlers::pods(api).await,
        ["runningpods"] | ["runningpods", ""] => handlers::running_pods(api).await,
        ["containerLogs", ns, pod, container] => {
            handlers::container_logs(api, ns, pod, container, req.uri().query()).await
        }
        ["stats", "summary"] | ["stats", "summary", ""] => handlers::summary(api).await,
        ["metrics", "resource"] | ["metrics", "resource", "v1alpha1"] => {
            handlers::resource_metrics(api).await
        }
        [verb @ ("exec" | "attach"), ns, pod, container] => {
            let target = remotecommand::Target::new(ns, pod, None, container, *verb == "attach");
            remotecommand::handle(api.clone(), target, req).await
        }
        [verb @ ("exec" | "attach"), ns, pod, uid, container] => {
            let target =
                remotecommand::Target::new(ns, pod, Some(uid), container, *verb == "attach");
            remotecommand::handle(api.clone(), target, req).await
        }
        ["portForward", ns, pod] => {
            remotecommand::port_forward(api.clone(), ns, pod, None, req).await
        }
        ["portForward", ns, pod, uid] => {
            remotecommand::port_forward(api.clone(), ns, pod, Some(uid), req).await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}
