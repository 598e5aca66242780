//! exec, attach and port-forward: the kubelet's streaming endpoints, over SPDY/3.1 (what API
//! servers and kubectl ≤ 1.29 speak to kubelets) or WebSocket (`v5`/`v4.channel.k8s.io`, what
//! kubectl ≥ 1.30 tries first), bridged to the provider's bidirectional Exec, Attach and
//! PortForward RPCs.
//!
//! As in the kubelet, the connection is upgraded first; the provider's refusal (e.g. container not
//! running) then arrives as a failure status on the error channel, which kubectl prints. With a
//! TTY the client's first resize is awaited briefly so the process starts with the right size.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt, stream};
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use podprovider_proto::v1::{self as pb, stream_input::Input, stream_output::Output};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        handshake::derive_accept_key,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};
use tracing::Instrument;

use super::{Body, KubeletApi, handlers, has_container, text};
use crate::resolve;

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

/// WebSocket channel numbers.
mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[255, n]` closes channel `n` (only stdin is meaningful).
    pub const CLOSE: u8 = 255;
}

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

/// How long a TTY session waits for the client's initial terminal size (kubectl sends it as soon
/// as the streams are up).
const INITIAL_SIZE_WAIT: Duration = Duration::from_secs(2);

/// Opens the provider's Exec or Attach call fed by `inputs`. With a TTY, the client's first resize
/// becomes the start's terminal size.
async fn open(
    api: &KubeletApi,
    pod_ref: pb::PodRef,
    target: &Target,
    options: &Options,
    mut inputs: mpsc::Receiver<pb::StreamInput>,
) -> Result<tonic::Streaming<pb::StreamOutput>, tonic::Status> {
    let mut terminal_size = None;
    let mut first = None;
    if options.tty {
        match tokio::time::timeout(INITIAL_SIZE_WAIT, inputs.recv()).await {
            Ok(Some(pb::StreamInput {
                input: Some(Input::Resize(size)),
            })) => terminal_size = Some(size),
            Ok(other) => first = other,
            Err(_) => {}
        }
    }
    let inputs = stream::iter(first).chain(ReceiverStream::new(inputs));
    let mut provider = api.provider.clone();
    let response = if target.attach {
        use pb::attach_request::Request as R;
        let start = pb::AttachRequest {
            request: Some(R::Start(pb::AttachStart {
                pod_ref: Some(pod_ref),
                container: target.container.clone(),
                stdin: options.stdin,
                stdout: options.stdout,
                stderr: options.stderr,
                tty: options.tty,
                terminal_size,
            })),
        };
        let rest = inputs.map(|i| pb::AttachRequest {
            request: Some(R::Input(i)),
        });
        provider
            .attach(stream::once(async { start }).chain(rest))
            .await
    } else {
        use pb::exec_request::Request as R;
        let start = pb::ExecRequest {
            request: Some(R::Start(pb::ExecStart {
                pod_ref: Some(pod_ref),
                container: target.container.clone(),
                command: options.command.clone(),
                stdin: options.stdin,
                stdout: options.stdout,
                stderr: options.stderr,
                tty: options.tty,
                terminal_size,
            })),
        };
        let rest = inputs.map(|i| pb::ExecRequest {
            request: Some(R::Input(i)),
        });
        provider
            .exec(stream::once(async { start }).chain(rest))
            .await
    };
    response.map(tonic::Response::into_inner)
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
        inputs,
        inputs_rx,
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
            match transport {
                Transport::WebSocket(_) => {
                    let config = WebSocketConfig::default()
                        .max_message_size(Some(MAX_WEBSOCKET_MESSAGE))
                        .max_frame_size(Some(MAX_WEBSOCKET_MESSAGE));
                    let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config))
                        .await;
                    session.over_websocket(ws).await;
                }
                Transport::Spdy(_) => session.over_spdy(spdy::Session::new(upgraded)).await,
            }
        }
        .instrument(tracing::Span::current()),
    );
    response
}

/// How the remote command ended.
#[derive(Debug)]
enum Outcome {
    Exit(pb::ExitStatus),
    /// The provider ended the stream without an exit (an attach whose client detached).
    Ended,
    Failed(String),
}

/// The `metav1.Status` written on the error channel (protocol v4 and later).
fn status_json(outcome: &Outcome, command: &[String]) -> String {
    let value = match outcome {
        Outcome::Exit(e) if e.code == 0 => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Ended => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::Exit(e) => {
            let what = if e.message.is_empty() {
                format!("error executing command {command:?}, exit code {}", e.code)
            } else {
                e.message.clone()
            };
            serde_json::json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: {what}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": e.code.to_string()}]}
            })
        }
        Outcome::Failed(message) => serde_json::json!({
            "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"
        }),
    };
    value.to_string()
}

/// Terminal size messages: JSON objects `{"Width":..,"Height":..}`, possibly split or batched.
#[derive(Default)]
struct ResizeDecoder {
    buf: BytesMut,
}

impl ResizeDecoder {
    fn push(&mut self, data: &[u8]) -> Vec<pb::TerminalSize> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Size {
            width: u32,
            height: u32,
        }
        self.buf.extend_from_slice(data);
        let mut sizes = Vec::new();
        let mut consumed = 0;
        {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Size>();
            loop {
                match it.next() {
                    Some(Ok(s)) => {
                        consumed = it.byte_offset();
                        sizes.push(pb::TerminalSize {
                            width: s.width,
                            height: s.height,
                        });
                    }
                    // Not a size message: skip what is buffered rather than wait on it forever.
                    Some(Err(e)) if !e.is_eof() => {
                        consumed = self.buf.len();
                        break;
                    }
                    _ => break,
                }
            }
        }
        let _ = self.buf.split_to(consumed);
        if self.buf.len() > MAX_RESIZE_BUFFER {
            // Not a size message in the making: drop it rather than grow.
            self.buf.clear();
        }
        sizes
    }
}

/// What one binary WebSocket message from the client asks for: its first byte is the channel,
/// the rest the payload. Resize payloads go through `resize`, which keeps a partial size message
/// between calls; output channels and unknown ones are ignored, as the kubelet does.
fn client_inputs(data: &[u8], resize: &mut ResizeDecoder) -> Vec<Input> {
    let Some((&ch, payload)) = data.split_first() else {
        return Vec::new();
    };
    match ch {
        channel::STDIN => vec![Input::Stdin(payload.to_vec())],
        channel::RESIZE => resize
            .push(payload)
            .into_iter()
            .map(Input::Resize)
            .collect(),
        channel::CLOSE if payload.first() == Some(&channel::STDIN) => {
            vec![Input::StdinClosed(true)]
        }
        _ => Vec::new(),
    }
}

fn input(i: Input) -> pb::StreamInput {
    pb::StreamInput { input: Some(i) }
}

/// One exec/attach between an upgraded client connection and the provider.
struct Session {
    api: Arc<KubeletApi>,
    pod_ref: pb::PodRef,
    target: Target,
    options: Options,
    /// Client input, fed by the transport; `inputs_rx` goes to the provider call.
    inputs: mpsc::Sender<pb::StreamInput>,
    inputs_rx: mpsc::Receiver<pb::StreamInput>,
}

impl Session {
    async fn over_websocket(self, ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>) {
        let Self {
            api,
            pod_ref,
            target,
            options,
            inputs,
            inputs_rx,
        } = self;
        let command = &options.command;
        let (mut sink, mut source) = ws.split();
        // The kubelet's first message: an empty frame on the lowest writable channel tells the
        // client the streams are set up.
        let first = if options.stdout {
            channel::STDOUT
        } else if options.stderr {
            channel::STDERR
        } else {
            channel::ERROR
        };
        if sink.send(Message::binary(vec![first])).await.is_err() {
            return;
        }
        let mut reader = tokio::spawn(async move {
            let mut resize = ResizeDecoder::default();
            while let Some(Ok(message)) = source.next().await {
                let data = match message {
                    Message::Binary(b) => b,
                    Message::Close(_) => break,
                    _ => continue,
                };
                for i in client_inputs(&data, &mut resize) {
                    // A closed channel stays closed: the provider call is gone.
                    if inputs.send(input(i)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let opened = tokio::select! {
            o = open(&api, pod_ref, &target, &options, inputs_rx) => o,
            _ = &mut reader => return,
        };
        let outcome = match opened {
            Ok(mut outputs) => loop {
                let message = tokio::select! {
                    m = outputs.message() => m,
                    // The client went away: dropping `outputs` cancels the provider call.
                    _ = &mut reader => return,
                };
                let (ch, data) = match message {
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stdout(b)),
                    })) => (channel::STDOUT, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stderr(b)),
                    })) => (channel::STDERR, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Exit(e)),
                    })) => break Outcome::Exit(e),
                    Ok(Some(_)) => continue,
                    Ok(None) => break Outcome::Ended,
                    Err(status) => break Outcome::Failed(status.message().to_owned()),
                };
                let mut frame = Vec::with_capacity(data.len() + 1);
                frame.push(ch);
                frame.extend_from_slice(&data);
                if sink.send(Message::binary(frame)).await.is_err() {
                    reader.abort();
                    return;
                }
            },
            Err(status) => Outcome::Failed(status.message().to_owned()),
        };
        let mut status = vec![channel::ERROR];
        status.extend_from_slice(status_json(&outcome, command).as_bytes());
        let _ = sink.send(Message::binary(status)).await;
        // A normal closure is end-of-stream for kubectl; anything else is reported as an error.
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
        reader.abort();
    }

    async fn over_spdy(self, mut session: spdy::Session) {
        let Self {
            api,
            pod_ref,
            target,
            options,
            inputs,
            inputs_rx,
        } = self;
        let command = &options.command;
        use spdy::kube as k;
        let mut wanted: Vec<&str> = vec![k::STREAM_TYPE_ERROR];
        if options.stdin {
            wanted.push(k::STREAM_TYPE_STDIN);
        }
        if options.stdout {
            wanted.push(k::STREAM_TYPE_STDOUT);
        }
        if options.stderr {
            wanted.push(k::STREAM_TYPE_STDERR);
        }
        if options.tty {
            wanted.push(k::STREAM_TYPE_RESIZE);
        }
        let mut streams: HashMap<String, spdy::Stream> = HashMap::new();
        let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
        tokio::pin!(deadline);
        while !wanted.iter().all(|w| streams.contains_key(*w)) {
            tokio::select! {
                () = &mut deadline => {
                    tracing::debug!("exec: the client did not open its streams in time");
                    return;
                }
                s = session.accept() => match s {
                    Some(s) => {
                        let kind = s.stream_type().unwrap_or_default().to_owned();
                        streams.insert(kind, s);
                    }
                    None => return,
                },
            }
        }
        let take = |streams: &mut HashMap<String, spdy::Stream>, kind: &str| streams.remove(kind);
        let mut error = take(&mut streams, k::STREAM_TYPE_ERROR);
        let mut stdout = take(&mut streams, k::STREAM_TYPE_STDOUT);
        let mut stderr = take(&mut streams, k::STREAM_TYPE_STDERR);
        let mut pumps = Vec::new();
        if let Some(mut stdin) = take(&mut streams, k::STREAM_TYPE_STDIN) {
            let inputs = inputs.clone();
            pumps.push(tokio::spawn(async move {
                while let Some(data) = stdin.recv().await {
                    if inputs
                        .send(input(Input::Stdin(data.to_vec())))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = inputs.send(input(Input::StdinClosed(true))).await;
            }));
        }
        if let Some(mut resize) = take(&mut streams, k::STREAM_TYPE_RESIZE) {
            let inputs = inputs.clone();
            pumps.push(tokio::spawn(async move {
                let mut decoder = ResizeDecoder::default();
                while let Some(data) = resize.recv().await {
                    for size in decoder.push(&data) {
                        if inputs.send(input(Input::Resize(size))).await.is_err() {
                            return;
                        }
                    }
                }
            }));
        }
        let opened = tokio::select! {
            o = open(&api, pod_ref, &target, &options, inputs_rx) => o,
            _ = session.closed() => {
                pumps.iter().for_each(tokio::task::JoinHandle::abort);
                return;
            }
        };
        let outcome = match opened {
            Ok(mut outputs) => loop {
                let message = tokio::select! {
                    m = outputs.message() => m,
                    // The client went away: dropping `outputs` cancels the provider call.
                    _ = session.closed() => {
                        pumps.iter().for_each(tokio::task::JoinHandle::abort);
                        return;
                    }
                };
                let (target, data) = match message {
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stdout(b)),
                    })) => (&mut stdout, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stderr(b)),
                    })) => (&mut stderr, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Exit(e)),
                    })) => break Outcome::Exit(e),
                    Ok(Some(_)) => continue,
                    Ok(None) => break Outcome::Ended,
                    Err(status) => break Outcome::Failed(status.message().to_owned()),
                };
                if let Some(s) = target
                    && s.send(Bytes::from(data)).await.is_err()
                {
                    break Outcome::Ended;
                }
            },
            Err(status) => Outcome::Failed(status.message().to_owned()),
        };
        for s in [&mut stdout, &mut stderr].into_iter().flatten() {
            let _ = s.close().await;
        }
        if let Some(e) = &mut error {
            let _ = e.send(Bytes::from(status_json(&outcome, command))).await;
            let _ = e.close().await;
        }
        pumps.iter().for_each(tokio::task::JoinHandle::abort);
        drop(inputs);
        let _ = session.close().await;
    }
}

/// `/portForward/{namespace}/{pod}`: SPDY streams in `data`/`error` pairs per `requestid`, each
/// pair one provider PortForward call.
pub async fn port_forward(
    api: Arc<KubeletApi>,
    namespace: &str,
    name: &str,
    uid: Option<&str>,
    req: Request<Incoming>,
) -> Response<Body> {
    let pod = match api.pod(namespace, name, uid).await {
        Ok(p) => p,
        Err(response) => return response,
    };
    if is_websocket(&req) {
        // kubectl ≥ 1.31 tries SPDY tunnelled in WebSocket first and falls back to SPDY.
        return text(
            StatusCode::BAD_REQUEST,
            "port-forward over WebSocket is not supported by this node; use SPDY",
        );
    }
    if !is_spdy(&req) {
        return text(StatusCode::BAD_REQUEST, "Upgrade request required");
    }
    if let Err(response) = spdy_protocol(&req, &[PORT_FORWARD_PROTOCOL]) {
        return *response;
    }
    let pod_ref = resolve::pod_ref(&pod);
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => TokioIo::new(u),
            Err(err) => {
                tracing::debug!(%err, "port-forward upgrade failed");
                return;
            }
        };
        let mut session = spdy::Session::new(upgraded);
        let mut pending: HashMap<String, Pending> = HashMap::new();
        loop {
            // Halves of pairs that waited too long are dropped (their streams reset).
            let oldest = pending.values().map(|p| p.since).min();
            let stream = tokio::select! {
                s = session.accept() => s,
                () = async {
                    match oldest {
                        Some(at) => tokio::time::sleep_until(at + PORT_FORWARD_PAIRING_TIMEOUT).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let now = tokio::time::Instant::now();
                    pending.retain(|_, p| now.duration_since(p.since) < PORT_FORWARD_PAIRING_TIMEOUT);
                    continue;
                }
            };
            let Some(stream) = stream else { break };
            let id = stream
                .headers()
                .get(spdy::kube::HEADER_REQUEST_ID)
                .unwrap_or_default()
                .to_owned();
            if !pending.contains_key(&id) && pending.len() >= MAX_PENDING_PORT_FORWARD_STREAMS {
                tracing::debug!("too many unpaired port-forward streams; dropping one");
                continue;
            }
            let entry = pending.entry(id.clone()).or_insert_with(|| Pending {
                since: tokio::time::Instant::now(),
                streams: (None, None),
            });
            let entry = &mut entry.streams;
            match stream.stream_type() {
                Some(spdy::kube::STREAM_TYPE_DATA) => entry.0 = Some(stream),
                Some(spdy::kube::STREAM_TYPE_ERROR) => entry.1 = Some(stream),
                _ => continue,
            }
            // A pair is complete once both its streams are open.
            if matches!(pending.get(&id), Some(p) if matches!(p.streams, (Some(_), Some(_))))
                && let Some(Pending {
                    streams: (Some(data), Some(error)),
                    ..
                }) = pending.remove(&id)
            {
                let forwarded = forward(api.clone(), pod_ref.clone(), data, error);
                tokio::spawn(forwarded.instrument(tracing::Span::current()));
            }
        }
    });
    switching(spdy::kube::upgrade_response_headers(Some(
        PORT_FORWARD_PROTOCOL,
    )))
}

/// Half (or all) of a port-forward pair: its data and error streams, and since when it waits.
struct Pending {
    since: tokio::time::Instant,
    streams: (Option<spdy::Stream>, Option<spdy::Stream>),
}

/// One forwarded connection: the `data` stream's bytes to and from the provider; a failure is
/// written to the `error` stream as the kubelet words it.
async fn forward(
    api: Arc<KubeletApi>,
    pod_ref: pb::PodRef,
    data: spdy::Stream,
    mut error: spdy::Stream,
) {
    use pb::port_forward_request::Request as R;
    let port = data
        .headers()
        .get(spdy::kube::HEADER_PORT)
        .and_then(|p| p.parse::<u16>().ok());
    let fail = |message: String| {
        format!(
            "error forwarding port {} to pod {}, uid {}: {message}",
            port.map(|p| p.to_string()).unwrap_or_default(),
            pod_ref.name,
            pod_ref.uid
        )
    };
    let Some(port) = port else {
        let _ = error
            .send(Bytes::from(fail("invalid port header".into())))
            .await;
        let _ = error.close().await;
        return;
    };
    let (mut from_client, mut to_client) = data.into_split();
    let (tx, rx) = mpsc::channel(16);
    let start = pb::PortForwardRequest {
        request: Some(R::Start(pb::PortForwardStart {
            pod_ref: Some(pod_ref.clone()),
            port: i32::from(port),
        })),
    };
    let requests = stream::once(async { start }).chain(ReceiverStream::new(rx));
    let mut responses = match api.provider.clone().port_forward(requests).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let _ = error
                .send(Bytes::from(fail(status.message().to_owned())))
                .await;
            let _ = error.close().await;
            return;
        }
    };
    let upstream = tokio::spawn(async move {
        while let Some(chunk) = from_client.recv().await {
            let msg = pb::PortForwardRequest {
                request: Some(R::Data(chunk.to_vec())),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
        }
        let _ = tx
            .send(pb::PortForwardRequest {
                request: Some(R::Closed(true)),
            })
            .await;
    });
    loop {
        match responses.message().await {
            Ok(Some(pb::PortForwardResponse {
                response: Some(pb::port_forward_response::Response::Data(d)),
            })) => {
                if to_client.send(Bytes::from(d)).await.is_err() {
                    break;
                }
            }
            Ok(Some(_)) | Ok(None) => break,
            Err(status) => {
                let _ = error
                    .send(Bytes::from(fail(status.message().to_owned())))
                    .await;
                break;
            }
        }
    }
    let _ = to_client.close().await;
    let _ = error.close().await;
    upstream.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_api_server_and_kubectl_names() {
        let o = Options::parse(
            Some("command=sh&command=-c&command=echo+hi&input=1&output=1&error=1&tty=1"),
            false,
        )
        .expect("valid");
        assert_eq!(o.command, ["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.stdout && o.tty);
        assert!(!o.stderr, "stderr is merged into stdout with a TTY");
        let o = Options::parse(Some("stdout=true&stderr=true"), true).expect("attach");
        assert!(o.stdout && o.stderr && !o.stdin);
        assert!(Options::parse(Some("command=ls"), false).is_err());
        assert!(Options::parse(Some("output=1"), false).is_err());
    }

    #[test]
    fn status_for_exit_codes() {
        let ok = status_json(
            &Outcome::Exit(pb::ExitStatus {
                code: 0,
                message: String::new(),
            }),
            &[],
        );
        assert_eq!(ok, r#"{"metadata":{},"status":"Success"}"#);
        let failed: serde_json::Value = serde_json::from_str(&status_json(
            &Outcome::Exit(pb::ExitStatus {
                code: 3,
                message: String::new(),
            }),
            &["false".into()],
        ))
        .expect("json");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn resize_messages_split_and_batched() {
        let mut d = ResizeDecoder::default();
        assert!(d.push(br#"{"Width":80,"#).is_empty());
        let sizes = d.push(br#""Height":24}{"Width":100,"Height":40}"#);
        assert_eq!(
            sizes,
            [
                pb::TerminalSize {
                    width: 80,
                    height: 24
                },
                pb::TerminalSize {
                    width: 100,
                    height: 40
                }
            ]
        );
        assert!(d.buf.is_empty());
    }

    #[test]
    fn resize_garbage_is_bounded() {
        let mut d = ResizeDecoder::default();
        for _ in 0..1000 {
            assert!(d.push(&[b'x'; 1024]).is_empty());
            assert!(d.buf.len() <= MAX_RESIZE_BUFFER);
        }
        // An endless unterminated string is cut off too.
        assert!(d.push(br#"{"Width":""#).is_empty());
        for _ in 0..100 {
            assert!(d.push(&[b'a'; 1024]).is_empty());
            assert!(d.buf.len() <= MAX_RESIZE_BUFFER);
        }
        // After garbage, real messages still decode.
        let sizes = d.push(br#"{"Width":1,"Height":2}"#);
        assert_eq!(sizes.len(), 1);
    }
}

/// Hostile input to the WebSocket channel framing, the terminal-size decoder and the query
/// options: nothing panics, buffers stay bounded, valid input still works.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Bytes that look like size messages in the making, to reach the decoder's deeper states.
    fn jsonish() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b"{".to_vec()),
                Just(b"}".to_vec()),
                Just(b"\"Width\":".to_vec()),
                Just(b"\"Height\":".to_vec()),
                Just(b"\"".to_vec()),
                Just(b",".to_vec()),
                Just(b"[".to_vec()),
                Just(b" ".to_vec()),
                Just(b"99999999999".to_vec()),
                (0u32..100_000).prop_map(|n| n.to_string().into_bytes()),
                prop::collection::vec(any::<u8>(), 0..8),
            ],
            0..64,
        )
        .prop_map(|parts| parts.concat())
    }

    fn chunk() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..64),
            4 => jsonish(),
            // Over the buffer cap in one piece.
            1 => prop::collection::vec(any::<u8>(), MAX_RESIZE_BUFFER - 8..MAX_RESIZE_BUFFER * 2),
            1 => (1usize..MAX_RESIZE_BUFFER * 2).prop_map(|n| {
                let mut v = b"{\"Width\":\"".to_vec();
                v.resize(n, b'a');
                v
            }),
        ]
    }

    /// A valid size message for `(width, height)`, keys in either order, optional spacing.
    fn size_message(width: u32, height: u32, swap: bool, space: &str) -> String {
        let w = format!("\"Width\"{space}:{space}{width}");
        let h = format!("\"Height\"{space}:{space}{height}");
        let (a, b) = if swap { (h, w) } else { (w, h) };
        format!("{{{space}{a},{space}{b}{space}}}")
    }

    proptest! {
        #![proptest_config(crate::fuzzing::heavy_config())]

        #[test]
        fn fuzz_resize_decoder_arbitrary_chunks(chunks in prop::collection::vec(chunk(), 0..24)) {
            let mut d = ResizeDecoder::default();
            for c in &chunks {
                let _ = d.push(c);
                prop_assert!(d.buf.len() <= MAX_RESIZE_BUFFER, "buffer {} bytes", d.buf.len());
            }
        }
    }

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        #[test]
        fn fuzz_resize_messages_split_anywhere_decode(
            sizes in prop::collection::vec((any::<u32>(), any::<u32>(), any::<bool>()), 1..8),
            space in prop_oneof![Just(""), Just(" "), Just("\n"), Just("\t\r\n ")],
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
        ) {
            let stream: String = sizes
                .iter()
                .map(|&(w, h, swap)| size_message(w, h, swap, space))
                .collect::<Vec<_>>()
                .join(space);
            let bytes = stream.as_bytes();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut d = ResizeDecoder::default();
            let mut got = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                got.extend(d.push(&bytes[at..cut]));
                at = cut;
            }
            let want: Vec<_> = sizes
                .iter()
                .map(|&(width, height, _)| pb::TerminalSize { width, height })
                .collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn fuzz_websocket_client_messages(
            messages in prop::collection::vec(
                (
                    prop_oneof![
                        Just(channel::STDIN),
                        Just(channel::RESIZE),
                        Just(channel::CLOSE),
                        any::<u8>(),
                    ],
                    prop_oneof![prop::collection::vec(any::<u8>(), 0..64), jsonish()],
                    any::<bool>(),
                ),
                0..16,
            ),
        ) {
            let mut resize = ResizeDecoder::default();
            // Decoded on its own, the resize channel must give the same sizes.
            let mut model = ResizeDecoder::default();
            for (ch, payload, empty) in messages {
                let data: Vec<u8> = if empty {
                    Vec::new()
                } else {
                    [&[ch][..], &payload].concat()
                };
                let got = client_inputs(&data, &mut resize);
                prop_assert!(resize.buf.len() <= MAX_RESIZE_BUFFER);
                if empty {
                    prop_assert!(got.is_empty());
                    continue;
                }
                match ch {
                    channel::STDIN => prop_assert_eq!(got, vec![Input::Stdin(payload)]),
                    channel::RESIZE => {
                        let want: Vec<_> = model.push(&payload).into_iter().map(Input::Resize).collect();
                        prop_assert_eq!(got, want);
                    }
                    channel::CLOSE if payload.first() == Some(&channel::STDIN) => {
                        prop_assert_eq!(got, vec![Input::StdinClosed(true)]);
                    }
                    _ => prop_assert!(got.is_empty(), "channel {} gave {:?}", ch, got),
                }
            }
        }

        #[test]
        fn fuzz_exec_options_arbitrary_queries(
            query in prop_oneof![any::<String>(), query_string()],
            attach in any::<bool>(),
        ) {
            match Options::parse(Some(&query), attach) {
                Ok(o) => {
                    prop_assert!(o.stdin || o.stdout || o.stderr);
                    prop_assert!(!(o.tty && o.stderr), "stderr is merged with a TTY");
                    prop_assert!(attach || !o.command.is_empty());
                }
                Err(msg) => prop_assert!(msg.starts_with("you must specify")),
            }
        }
    }

    /// Queries made of the names exec and attach read, with assorted values.
    fn query_string() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("command"),
            Just("input"),
            Just("output"),
            Just("error"),
            Just("tty"),
            Just("stdin"),
            Just("stdout"),
            Just("stderr"),
            Just("x"),
            Just(""),
        ];
        let value = prop_oneof![
            Just(String::new()),
            Just("1".into()),
            Just("0".into()),
            Just("false".into()),
            Just("FALSE".into()),
            Just("true".into()),
            Just("%ff%00".into()),
            Just("%".into()),
            "[a-z0-9+%=&]{0,8}",
        ];
        prop::collection::vec((key, value, any::<bool>()), 0..8).prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v, bare)| {
                    if bare {
                        k.to_owned()
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect::<Vec<_>>()
                .join("&")
        })
    }
}
