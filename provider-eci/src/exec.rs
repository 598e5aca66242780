//! The bridge between the contract's Exec stream and ECI's exec WebSocket.
//!
//! Two framings are understood, chosen by the subprotocol the server accepts:
//! - Kubernetes `v5.channel.k8s.io` / `v4.channel.k8s.io` / `channel.k8s.io`: every message starts
//!   with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 status as JSON with the exit code, 4
//!   resize as `{"Width","Height"}`); the end of stdin is v5's close message `[255, 0]`, and before
//!   v5 an empty stdin message (which servers that cannot half-close simply ignore);
//! - none: binary or text messages are the command's output (stdout; with a TTY the terminal),
//!   client messages are stdin, and the exit code is 0 when the server closes normally (code 1000)
//!   and 1 otherwise, since such a server does not report one.

use std::pin::Pin;

use futures::{SinkExt, Stream, StreamExt};
use podprovider_proto::v1::{
    ExecRequest, ExitStatus, StreamOutput, exec_request, stream_input, stream_output,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::mpsc,
};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::{
    Message,
    client::IntoClientRequest,
    protocol::{WebSocketConfig, frame::coding::CloseCode},
};
use tonic::{Status, Streaming};

/// Deadline of the connect, TLS and WebSocket handshake to the exec URI.
pub const OPEN_TIMEOUT: std::time::Duration = crate::client::ATTEMPT_TIMEOUT;
/// Largest WebSocket message and frame accepted from ECI's exec endpoint.
pub const MAX_MESSAGE: usize = 1 << 20;

/// The subprotocols offered, best first.
const SUBPROTOCOLS: &str = "v5.channel.k8s.io, v4.channel.k8s.io, channel.k8s.io";

/// A stream of exec output as tonic serves it.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<StreamOutput, Status>> + Send>>;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(url: &url::Url) -> Result<Box<dyn Io>, String> {
    let host = url.host_str().ok_or("the exec URI has no host")?.to_owned();
    let tls = match url.scheme() {
        "wss" => true,
        "ws" => false,
        other => return Err(format!("unexpected exec URI scheme {other}")),
    };
    let port = url.port().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("bad host {host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS to {host}: {e}"))?;
    Ok(Box::new(stream))
}

/// The exit code in a Kubernetes status message (channel 3).
pub fn exit_code_of_status(json: &[u8]) -> (i32, String) {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap_or_default();
    if v["status"] == "Success" {
        return (0, String::new());
    }
    let code = v["details"]["causes"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|c| c["reason"] == "ExitCode")
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse::<i32>().ok())
        })
        .unwrap_or(1);
    (code, v["message"].as_str().unwrap_or_default().to_owned())
}

/// Connects to `uri` and bridges it with `input`; the returned stream ends with `exit`.
pub async fn bridge(
    uri: &str,
    mut input: Streaming<ExecRequest>,
    tty: bool,
) -> Result<OutputStream, String> {
    let url = url::Url::parse(uri).map_err(|e| format!("bad exec URI: {e}"))?;
    let mut request = uri
        .into_client_request()
        .map_err(|e| format!("bad exec URI: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static(SUBPROTOCOLS),
    );
    // Output chunks are small; tungstenite's defaults would buffer 64 MiB per message.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    // A server that accepts the connection and then stalls must not hold the exec forever.
    let (ws, resp) = tokio::time::timeout(OPEN_TIMEOUT, async {
        let io = connect(&url).await?;
        tokio_tungstenite::client_async_with_config(request, io, Some(config))
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))
    })
    .await
    .map_err(|_| format!("no WebSocket handshake within {OPEN_TIMEOUT:?}"))??;
    let protocol = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let channels = protocol.contains("channel.k8s.io");
    let v5 = protocol.starts_with("v5.");
    let (mut sink, mut source) = ws.split();
    let (tx, rx) = mpsc::channel::<Result<StreamOutput, Status>>(64);

    // Client → container. A half-closed request stream means the same as `stdin_closed`.
    let writer = tokio::spawn(async move {
        let close_stdin = if v5 { vec![255u8, 0] } else { vec![0u8] };
        let mut closed = false;
        loop {
            let input = match input.next().await {
                Some(Ok(ExecRequest {
                    request: Some(exec_request::Request::Input(i)),
                })) => i.input,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => Some(stream_input::Input::StdinClosed(true)),
            };
            let frame = match input {
                Some(stream_input::Input::StdinClosed(_)) if channels && !closed => {
                    closed = true;
                    Message::binary(close_stdin.clone())
                }
                Some(stream_input::Input::StdinClosed(_)) => return,
                // An empty message would read as the end of stdin.
                Some(stream_input::Input::Stdin(data)) if data.is_empty() => continue,
                Some(stream_input::Input::Stdin(data)) if channels => {
                    let mut f = vec![0u8];
                    f.extend_from_slice(&data);
                    Message::binary(f)
                }
                Some(stream_input::Input::Stdin(data)) => Message::binary(data),
                Some(stream_input::Input::Resize(r)) if channels && tty => {
                    let mut f = vec![4u8];
                    f.extend_from_slice(
                        format!(r#"{{"Width":{},"Height":{}}}"#, r.width, r.height).as_bytes(),
                    );
                    Message::binary(f)
                }
                // Resizes without a TTY, or in the raw framing, have nowhere to go.
                _ => continue,
            };
            if sink.send(frame).await.is_err() {
                return;
            }
        }
    });

    // Container → client.
    tokio::spawn(async move {
        let out = |o: stream_output::Output| Ok(StreamOutput { output: Some(o) });
        let mut exit: Option<(i32, String)> = None;
        while let Some(msg) = source.next().await {
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    exit.get_or_insert((1, format!("exec connection failed: {e}")));
                    break;
                }
            };
            let data: Vec<u8> = match msg {
                Message::Binary(b) => b.to_vec(),
                Message::Text(t) => t.as_bytes().to_vec(),
                Message::Close(frame) => {
                    if !channels {
                        let normal = frame.as_ref().is_none_or(|f| f.code == CloseCode::Normal);
                        exit.get_or_insert(if normal {
                            (0, String::new())
                        } else {
                            (1, frame.map(|f| f.reason.to_string()).unwrap_or_default())
                        });
                    }
                    break;
                }
                _ => continue,
            };
            let sent = if channels {
                match data.split_first() {
                    Some((1, rest)) if !rest.is_empty() => {
                        tx.send(out(stream_output::Output::Stdout(rest.to_vec())))
                            .await
                    }
                    Some((2, rest)) if !rest.is_empty() => {
                        let o = if tty {
                            stream_output::Output::Stdout(rest.to_vec())
                        } else {
                            stream_output::Output::Stderr(rest.to_vec())
                        };
                        tx.send(out(o)).await
                    }
                    Some((3, rest)) => {
                        exit = Some(exit_code_of_status(rest));
                        Ok(())
                    }
                    _ => Ok(()),
                }
            } else if data.is_empty() {
                Ok(())
            } else {
                tx.send(out(stream_output::Output::Stdout(data))).await
            };
            if sent.is_err() {
                break;
            }
        }
        writer.abort();
        let (code, message) = exit.unwrap_or((0, String::new()));
        let _ = tx
            .send(out(stream_output::Output::Exit(ExitStatus {
                code,
                message,
            })))
            .await;
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_status_messages_carry_the_exit_code() {
        assert_eq!(
            exit_code_of_status(br#"{"metadata":{},"status":"Success"}"#).0,
            0
        );
        let (code, msg) = exit_code_of_status(
            br#"{"status":"Failure","message":"command terminated with non-zero exit code","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
        );
        assert_eq!(code, 3);
        assert!(msg.contains("non-zero"));
        assert_eq!(exit_code_of_status(b"garbage").0, 1);
    }
}
