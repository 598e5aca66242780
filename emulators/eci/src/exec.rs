//! ExecContainerCommand's WebSocket and synchronous execution.
//!
//! ECI's reference only says the WebSocketUri "establishes a connection with the container"; it
//! does not publish a frame format. ECI containers run under Kubernetes-style kubelets, so the
//! emulator speaks the Kubernetes exec channel protocol (`v4.channel.k8s.io`): every binary frame
//! starts with a channel byte — 0 stdin (client → server; a frame with no payload closes stdin),
//! 1 stdout, 2 stderr, 3 error/status (a `metav1.Status` JSON: `Success`, or `Failure` with reason
//! `NonZeroExitCode` and the exit code in `details.causes[ExitCode]`), 4 resize (ignored). The
//! server closes the socket after the status frame.
//!
//! The command runs as a real local process with the container's environment in a per-group
//! temporary working directory.

use std::{os::unix::process::ExitStatusExt, path::PathBuf, process::Stdio};

use axum::{
    body::Bytes,
    extract::{
        Query, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
    sync::mpsc,
};

use crate::server::Shared;

/// A pending exec: what to run and how.
#[derive(Debug, Clone)]
pub struct ExecSession {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub stdin: bool,
    pub tty: bool,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The group's working directory (created on first use).
pub fn group_workdir(group_id: &str) -> PathBuf {
    std::env::temp_dir()
        .join(format!("eci-emulator-{}", std::process::id()))
        .join(group_id)
}

fn command(s: &ExecSession) -> std::io::Result<Command> {
    std::fs::create_dir_all(&s.workdir)?;
    let (prog, args) = s
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", &s.workdir)
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&s.workdir)
        .kill_on_drop(true);
    Ok(cmd)
}

/// Runs the command to completion; returns stdout followed by stderr (`SyncResponse`).
pub async fn run_sync(s: &ExecSession) -> Result<String, String> {
    let mut cmd = command(s).map_err(|e| format!("exec failed: {e}"))?;
    cmd.stdin(Stdio::null());
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| "exec timed out".to_owned())?
        .map_err(|e| format!("exec failed: {e}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(text)
}

#[derive(serde::Deserialize)]
pub struct ExecQuery {
    s: String,
}

/// `GET /exec/?s=<token>`: a single-use session created by ExecContainerCommand.
pub async fn ws_handler(
    State(emu): State<Shared>,
    Query(q): Query<ExecQuery>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(session) = emu.lock().exec_sessions.remove(&q.s) else {
        return (StatusCode::NOT_FOUND, "unknown or used exec session").into_response();
    };
    ws.protocols(["v4.channel.k8s.io", "channel.k8s.io"])
        .on_upgrade(move |socket| run_session(socket, session))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

/// The channel-3 status for an exit code, as the Kubernetes API server reports it.
pub fn exit_status_json(argv: &[String], code: i32) -> String {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"}).to_string();
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            argv.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
    .to_string()
}

fn pump(
    mut reader: impl AsyncRead + Unpin + Send + 'static,
    channel: u8,
    tx: mpsc::Sender<Message>,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(frame(channel, &buf[..n])).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
}

async fn run_session(socket: WebSocket, session: ExecSession) {
    let (mut sink, mut stream) = socket.split();
    let spawned = command(&session).and_then(|mut cmd| {
        cmd.stdin(if session.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    });
    let mut child: Child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let status = serde_json::json!({
                "metadata": {}, "status": "Failure", "reason": "InternalError",
                "message": format!("exec failed: {e}"),
            });
            let _ = sink.send(frame(3, status.to_string().as_bytes())).await;
            let _ = sink.send(Message::Close(None)).await;
            return;
        }
    };
    tracing::info!(tty = session.tty, "exec session started");
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    if let Some(out) = child.stdout.take() {
        pump(out, 1, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, 2, tx.clone());
    }
    drop(tx);
    let mut stdin = child.stdin.take();
    let mut client_open = true;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(msg) => {
                    if sink.send(msg).await.is_err() {
                        // The client is gone: nobody will read the rest.
                        let _ = child.kill().await;
                        return;
                    }
                }
                None => break,
            },
            msg = stream.next(), if client_open => match msg {
                Some(Ok(Message::Binary(data))) => match data.first() {
                    Some(0) if data.len() == 1 => stdin = None,
                    Some(0) => {
                        if let Some(w) = stdin.as_mut()
                            && w.write_all(&data[1..]).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    // v5.channel.k8s.io "close stream" frame for stdin.
                    Some(255) if data.get(1) == Some(&0) => stdin = None,
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    client_open = false;
                    stdin = None;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(stdin);
    let code = match child.wait().await {
        Ok(status) => status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
        Err(_) => -1,
    };
    let _ = sink
        .send(frame(3, exit_status_json(&session.argv, code).as_bytes()))
        .await;
    let _ = sink
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_frames_carry_the_exit_code() {
        let ok: serde_json::Value =
            serde_json::from_str(&exit_status_json(&["true".into()], 0)).unwrap_or_default();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_str(&exit_status_json(&["false".into()], 3)).unwrap_or_default();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
    }
}
