//! exec, attach and port-forward: the kubelet's streaming endpoints, over SPDY/3.1 (what API
//! servers and kubectl ≤ 1.29 speak to kubelets) or WebSocket (`v5`/`v4.channel.k8s.io`, what
//! kubectl ≥ 1.30 tries first), bridged to the provider's bidirectional Exec, Attach and
//! PortForward RPCs.
//!
//! As in the kubelet, the connection is upgraded first; the provider's refusal (e.g. container not
//! running) then arrives as a failure status on the error channel, which kubectl prints. With a
//! TTY the client's first resize is awaited briefly so the process starts with the right size.
//!
//! Read in this order:
//! - here: [`handle`] (exec, attach) and [`port_forward()`] answer the HTTP request (options, pod
//!   and container, protocol negotiation, `101 Switching Protocols`) and carry on with the
//!   upgraded connection in a task; the limits are the constants here;
//! - [`websocket`] or [`spdy_streams`]: the exec/attach transport, which sets up the client's
//!   side and forwards its input (stdin, resize, stdin close) to the provider;
//! - [`session`]: then the provider's Exec or Attach call is opened, and the one output loop,
//!   [`Session::run`], relays its output to whichever [`session::Client`] the transport made,
//!   ending with the exit as a `metav1.Status`;
//! - [`resize`]: the terminal-size decoder both transports use;
//! - [`port_forward`](mod@port_forward): SPDY `data`/`error` stream pairs, one provider
//!   PortForward call each.

use std::{sync::Arc, time::Duration};

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::Instrument;

use super::{Body, KubeletApi, handlers, has_container, text};
use crate::resolve;
use session::Session;
use spdy_streams::SpdyClient;
use websocket::WebSocketClient;

mod port_forward;
mod resize;
mod session;
mod spdy_streams;
mod websocket;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use port_forward::port_forward;

/// Sub-protocols with a JSON status on the error channel, newest first; v5 adds the WebSocket
/// stdin close signal and is otherwise v4.
const CHANNEL_PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
const PORT_FORWARD_PROTOCOL: &str = spdy::kube::PORT_FORWARD_V1;
/// How long the client has to open its SPDY streams after the upgrade (the kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest WebSocket message and frame accepted (stdin chunks from kubectl, `kubectl cp` included,
/// are 32 KiB at most); tungstenite's defaults would buffer 64 MiB per message.
pub const MAX_WEBSOCKET_MESSAGE: usize = 1 << 20;
/// Port-forward streams waiting for their partner (data/error); kubectl opens a pair per
/// connection, so more than this is not kubectl.
pub const MAX_PENDING_PORT_FORWARD_STREAMS: usize = 64;
/// How long half a port-forward pair waits for the other half (the kubelet's stream creation
/// timeout).
pub const PORT_FORWARD_PAIRING_TIMEOUT: Duration = STREAM_CREATION_TIMEOUT;
/// Unparsed terminal-size bytes kept between messages; a real resize message is a few dozen.
pub const MAX_RESIZE_BUFFER: usize = 4096;

/// The container an exec or attach is for.
pub struct Target {
    namespace: String,
    pod: String,
    uid: Option<String>,
    container: String,
    attach: bool,
}

impl Target {
    /// `attach` selects attach rather than exec.
    pub fn new(
        namespace: &str,
        pod: &str,
        uid: Option<&str>,
        container: &str,
        attach: bool,
    ) -> Self {
        Self {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            uid: uid.map(str::to_owned),
            container: container.to_owned(),
            attach,
        }
    }
}

/// What the client asked for (the API server passes `input`, `output`, `error`, `tty` and
/// repeated `command`; kubectl's own names `stdin`, `stdout`, `stderr` are accepted too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The command (exec only).
    pub command: Vec<String>,
    /// Client sends stdin.
    pub stdin: bool,
    /// Client wants stdout.
    pub stdout: bool,
    /// Client wants stderr (never with a TTY).
    pub stderr: bool,
    /// A TTY.
    pub tty: bool,
}

impl Options {
    /// Parses and validates the query.
    pub fn parse(query: Option<&str>, attach: bool) -> Result<Self, String> {
        let q = handlers::query_map(query);
        let on = |a: &str, b: &str| handlers::flag(&q, a) || handlers::flag(&q, b);
        let tty = handlers::flag(&q, "tty");
        let options = Self {
            command: handlers::query_all(query, "command"),
            stdin: on("input", "stdin"),
            stdout: on("output", "stdout"),
            // With a TTY stderr is merged into stdout, as the kubelet does.
            stderr: on("error", "stderr") && !tty,
            tty,
        };
        if !options.stdin && !options.stdout && !options.stderr {
            return Err("you must specify at least 1 of stdin, stdout, stderr".into());
        }
        if !attach && options.command.is_empty() {
            return Err("you must specify a command".into());
        }
        Ok(options)
    }
}

fn header_values(req: &Request<Incoming>, name: header::HeaderName) -> Vec<&str> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    header_values(req, header::UPGRADE)
        .iter()
        .any(|v| v.eq_ignore_ascii_case("websocket"))
}

fn is_spdy(req: &Request<Incoming>) -> bool {
    spdy::kube::is_spdy_upgrade(
        header_values(req, header::CONNECTION),
        header_values(req, header::UPGRADE),
    )
}

/// A `101 Switching Protocols` answer with `headers`.
fn switching(headers: Vec<(&'static str, String)>) -> Response<Body> {
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, "");
    response.headers_mut().remove(header::CONTENT_TYPE);
    for (name, value) in headers {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            response.headers_mut().append(name, v);
        }
    }
    response
}

/// The WebSocket handshake answer for `protocol`, or `None` when the request lacks a key.
fn websocket_accept(req: &Request<Incoming>, protocol: &str) -> Option<Response<Body>> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY)?;
    Some(switching(vec![
        ("Connection", "Upgrade".into()),
        ("Upgrade", "websocket".into()),
        ("Sec-WebSocket-Accept", derive_accept_key(key.as_bytes())),
        ("Sec-WebSocket-Protocol", protocol.to_owned()),
    ]))
}

fn websocket_protocol(req: &Request<Incoming>, supported: &[&str]) -> Option<String> {
    let offered = header_values(req, header::SEC_WEBSOCKET_PROTOCOL);
    spdy::kube::negotiate_protocol(offered, supported).map(str::to_owned)
}

fn spdy_protocol(
    req: &Request<Incoming>,
    supported: &[&str],
) -> Result<String, Box<Response<Body>>> {
    let offered = header_values(
        req,
        header::HeaderName::from_static("x-stream-protocol-version"),
    );
    match spdy::kube::negotiate_protocol(offered.iter().copied(), supported) {
        Some(p) => Ok(p.to_owned()),
        None => {
            let mut response = text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"
                ),
            );
            if let Ok(v) = http::HeaderValue::from_str(&supported.join(", ")) {
                response
                    .headers_mut()
                    .insert(spdy::kube::HEADER_ACCEPTED_PROTOCOL_VERSIONS, v);
            }
            Err(Box::new(response))
        }
    }
}

/// `/exec/...` and `/attach/...`.
pub async fn handle(
    api: Arc<KubeletApi>,
    target: Target,
    req: Request<Incoming>,
) -> Response<Body> {
    let options = match Options::parse(req.uri().query(), target.attach) {
        Ok(o) => o,
        Err(msg) => return text(StatusCode::BAD_REQUEST, msg),
    };
    let pod = match api
        .pod(&target.namespace, &target.pod, target.uid.as_deref())
        .await
    {
        Ok(p) => p,
        Err(response) => return response,
    };
    if !has_container(&pod, &target.container) {
        return text(
            StatusCode::NOT_FOUND,
            format!("container not found ({:?})", target.container),
        );
    }
    enum Transport {
        WebSocket(String),
        Spdy(String),
    }
    let transport = if is_websocket(&req) {
        match websocket_protocol(&req, CHANNEL_PROTOCOLS) {
            Some(p) => Transport::WebSocket(p),
            // kubectl falls back to SPDY when the WebSocket upgrade fails.
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("unsupported WebSocket sub-protocol; supported: {CHANNEL_PROTOCOLS:?}"),
                );
            }
        }
    } else if is_spdy(&req) {
        match spdy_protocol(&req, CHANNEL_PROTOCOLS) {
            Ok(p) => Transport::Spdy(p),
            Err(response) => return *response,
        }
    } else {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required");
    };

    let (transport_name, protocol) = match &transport {
        Transport::WebSocket(p) => ("websocket", p.as_str()),
        Transport::Spdy(p) => ("spdy", p.as_str()),
    };
    tracing::info!(
        kind = if target.attach { "attach" } else { "exec" },
        transport = transport_name,
        protocol,
        pod = %format!("{}/{}", target.namespace, target.pod),
        container = %target.container,
        "remote command"
    );
    let response = match &transport {
        Transport::WebSocket(p) => match websocket_accept(&req, p) {
            Some(r) => r,
            None => return text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"),
        },
        Transport::Spdy(p) => switching(spdy::kube::upgrade_response_headers(Some(p))),
    };
    let (inputs, inputs_rx) = mpsc::channel(16);
    let session = Session {
        api,
        pod_ref: resolve::pod_ref(&pod),
        target,
        options,
        inputs: inputs_rx,
    };
    tokio::spawn(
        async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => TokioIo::new(u),
                Err(err) => {
                    tracing::debug!(%err, "exec upgrade failed");
                    return;
                }
            };
            // The provider call is opened only once the client's side is set up, as the
            // kubelet does; `run` is generic, hence one call per transport.
            match transport {
                Transport::WebSocket(_) => {
                    if let Some(client) =
                        WebSocketClient::start(upgraded, &session.options, inputs).await
                    {
                        session.run(client).await;
                    }
                }
                Transport::Spdy(_) => {
                    if let Some(client) =
                        SpdyClient::start(upgraded, &session.options, inputs).await
                    {
                        session.run(client).await;
                    }
                }
            }
        }
        .instrument(tracing::Span::current()),
    );
    response
}
