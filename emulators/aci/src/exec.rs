//! Exec: `POST .../containers/{c}/exec` hands out a one-time WebSocket URI and password; the
//! WebSocket endpoint takes the password as its first message, then runs the command as a real
//! local process with the container's environment, in the group's work directory: client
//! messages are its stdin, its stdout and stderr come back as messages, and the socket closes
//! when it exits.

use std::{path::PathBuf, process::Stdio, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Bytes,
    extract::{
        Path, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code},
    },
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    arm::{arm_error, container_not_found},
    state::{AppState, lock, random_hex},
};

/// How long the client has to send the password.
const PASSWORD_TIMEOUT: Duration = Duration::from_secs(30);

/// A granted, not yet used, exec.
pub struct ExecSession {
    pub group: String,
    password: String,
    command: String,
    env: Vec<(String, String)>,
    workdir: PathBuf,
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/exec/{id}", get(websocket))
}

/// Handles the ARM exec POST (already authenticated).
pub fn create_session(st: &AppState, group: &str, container: &str, body: &Bytes) -> Response {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestContent",
                &format!("The request content was invalid and could not be deserialized: '{e}'."),
            );
        }
    };
    let Some(command) = req["command"].as_str().filter(|c| !c.is_empty()) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'Required property \
             'command' not found in JSON.'.",
        );
    };
    let groups = lock(&st.groups);
    let Some(g) = groups.get(group) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            &format!(
                "The Resource 'Microsoft.ContainerInstance/containerGroups/{group}' under \
                 resource group '{}' was not found.",
                st.config.resource_group
            ),
        );
    };
    let Some(c) = g.container(container) else {
        return container_not_found(group, container);
    };
    if !c.is_running() {
        return arm_error(
            StatusCode::CONFLICT,
            "ContainerGroupNotRunning",
            &format!(
                "The container '{container}' in container group '{group}' is not running. Exec \
                 is only supported on running containers."
            ),
        );
    }
    let id = random_hex(16);
    let password = random_hex(16);
    let session = ExecSession {
        group: group.to_owned(),
        password: password.clone(),
        command: command.to_owned(),
        env: c.env.clone(),
        workdir: g.workdir.path().to_owned(),
    };
    drop(groups);
    lock(&st.exec_sessions).insert(id.clone(), session);
    tracing::info!(group, container, "exec session granted");
    let uri = format!(
        "{}/exec/{id}",
        st.config.base_url.replacen("http://", "ws://", 1)
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({"webSocketUri": uri, "password": password}).to_string(),
    )
        .into_response()
}

/// Sessions of a deleted group can no longer be opened.
pub fn forget_group(st: &AppState, group: &str) {
    lock(&st.exec_sessions).retain(|_, s| s.group != group);
}

/// The WebSocket endpoint: each URI works once (it is removed when the upgrade is accepted).
async fn websocket(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(session) = lock(&st.exec_sessions).remove(&id) else {
        return (
            StatusCode::NOT_FOUND,
            "unknown or already used exec session",
        )
            .into_response();
    };
    ws.on_upgrade(move |socket| run_session(socket, session))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })))
        .await;
}

async fn run_session(mut socket: WebSocket, session: ExecSession) {
    let first = tokio::time::timeout(PASSWORD_TIMEOUT, socket.recv()).await;
    let given = match first {
        Ok(Some(Ok(Message::Text(t)))) => t.as_str().to_owned(),
        Ok(Some(Ok(Message::Binary(b)))) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    if given.trim_end() != session.password {
        tracing::info!(group = %session.group, "exec refused: wrong password");
        close(&mut socket, close_code::POLICY, "authentication failed").await;
        return;
    }
    // ACI runs `command` as one executable without arguments: a string with spaces is looked
    // up as a file of that name, and the exec fails to start like a missing binary.
    let mut cmd = tokio::process::Command::new(&session.command);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &session.workdir)
        .envs(session.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&session.workdir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(_) => {
            let msg = format!(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: \
                 \"{}\": executable file not found in $PATH: unknown\r\n",
                session.command
            );
            let _ = socket.send(Message::Text(msg.into())).await;
            close(&mut socket, close_code::NORMAL, "").await;
            return;
        }
    };
    tracing::info!(group = %session.group, "exec process started");
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(err, tx.clone()));
    }
    drop(tx);
    let mut stdin = child.stdin.take();
    loop {
        tokio::select! {
            chunk = rx.recv() => match chunk {
                Some(bytes) => {
                    let msg = match String::from_utf8(bytes) {
                        Ok(text) => Message::Text(text.into()),
                        Err(e) => Message::Binary(e.into_bytes().into()),
                    };
                    if socket.send(msg).await.is_err() {
                        break;
                    }
                }
                // Both pipes closed: the process is gone (or closed its output).
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => write_stdin(&mut stdin, t.as_bytes()).await,
                Some(Ok(Message::Binary(b))) => write_stdin(&mut stdin, &b).await,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // Client went away: the process is killed when `child` is dropped.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
            },
        }
    }
    let status = child.wait().await;
    tracing::info!(group = %session.group, ?status, "exec process exited");
    close(&mut socket, close_code::NORMAL, "").await;
}

async fn write_stdin(stdin: &mut Option<tokio::process::ChildStdin>, data: &[u8]) {
    if let Some(pipe) = stdin
        && (pipe.write_all(data).await.is_err() || pipe.flush().await.is_err())
    {
        *stdin = None;
    }
}

async fn pump(mut from: impl tokio::io::AsyncRead + Unpin, to: tokio::sync::mpsc::Sender<Vec<u8>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send(buf[..n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}
