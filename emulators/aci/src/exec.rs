//! Exec and attach. `POST .../containers/{c}/exec` hands out a one-time WebSocket URI and
//! password; the WebSocket endpoint takes the password as its first message, then runs the
//! command as a real local process on a pseudo-terminal of the requested size (ACI's exec is a
//! terminal: input is echoed and line-edited, ^D at the start of a line is end of input, output
//! lines end in CRLF), with the container's environment, in the group's work directory; the socket
//! closes when it exits. `POST .../containers/{c}/attach` hands out a URI and password for the
//! container's output stream; the password goes in the `Authorization` header of the WebSocket
//! request, and the socket carries the output lines written from then on, closing when the
//! container stops running or its group is deleted.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{
        Path, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::{
    arm::{arm_error, container_not_found},
    state::{AppState, lock, random_hex},
};

/// How long the client has to send the password.
const PASSWORD_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an attach session looks for new output.
const ATTACH_POLL: Duration = Duration::from_millis(100);

/// A granted, not yet used, exec or attach.
pub struct ExecSession {
    pub group: String,
    password: String,
    kind: SessionKind,
}

enum SessionKind {
    Exec {
        command: String,
        env: Vec<(String, String)>,
        workdir: PathBuf,
        rows: u16,
        cols: u16,
    },
    Attach {
        container: String,
    },
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/exec/{id}", get(websocket))
        .route("/attach/{id}", get(attach_websocket))
}

/// `terminalSize.rows`/`cols` of an exec request (ACI's default-free fields; 24x80 if absent).
fn terminal_size(req: &Value) -> (u16, u16) {
    let dim = |key: &str, default: u16| {
        req["terminalSize"][key]
            .as_u64()
            .and_then(|v| u16::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default)
    };
    (dim("rows", 24), dim("cols", 80))
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
    let (rows, cols) = terminal_size(&req);
    let kind = SessionKind::Exec {
        command: command.to_owned(),
        env: c.env.clone(),
        workdir: g.workdir.path().to_owned(),
        rows,
        cols,
    };
    drop(groups);
    grant(st, group, "exec", kind)
}

/// Stores a session and answers `{"webSocketUri", "password"}` (ContainerExecResponse and
/// ContainerAttachResponse have the same shape).
fn grant(st: &AppState, group: &str, path: &str, kind: SessionKind) -> Response {
    let id = random_hex(16);
    let password = random_hex(16);
    let session = ExecSession {
        group: group.to_owned(),
        password: password.clone(),
        kind,
    };
    lock(&st.exec_sessions).insert(id.clone(), session);
    tracing::info!(group, session = path, "session granted");
    let uri = format!(
        "{}/{path}/{id}",
        st.config.base_url.replacen("http://", "ws://", 1)
    );
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({"webSocketUri": uri, "password": password}).to_string(),
    )
        .into_response()
}

/// Handles the ARM attach POST (already authenticated; Containers_Attach has no body).
pub fn create_attach(st: &AppState, group: &str, container: &str) -> Response {
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
                "The container '{container}' in container group '{group}' is not running. \
                 Attach is only supported on running containers."
            ),
        );
    }
    drop(groups);
    grant(
        st,
        group,
        "attach",
        SessionKind::Attach {
            container: container.to_owned(),
        },
    )
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
    let session = {
        let mut sessions = lock(&st.exec_sessions);
        match sessions.get(&id) {
            Some(ExecSession {
                kind: SessionKind::Exec { .. },
                ..
            }) => sessions.remove(&id),
            _ => None,
        }
    };
    let Some(session) = session else {
        return (
            StatusCode::NOT_FOUND,
            "unknown or already used exec session",
        )
            .into_response();
    };
    ws.on_upgrade(move |socket| run_session(socket, session))
}

/// The attach endpoint: the password is the `Authorization` header's value (as the reference's
/// ContainerAttachResponse says), checked before the upgrade; each URI works once.
async fn attach_websocket(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    let session = {
        let mut sessions = lock(&st.exec_sessions);
        match sessions.get(&id) {
            Some(ExecSession {
                kind: SessionKind::Attach { .. },
                password,
                ..
            }) if *password == given => sessions.remove(&id),
            Some(ExecSession {
                kind: SessionKind::Attach { .. },
                group,
                ..
            }) => {
                tracing::info!(group = %group, "attach refused: wrong password");
                return (StatusCode::UNAUTHORIZED, "authentication failed").into_response();
            }
            _ => None,
        }
    };
    let Some(ExecSession {
        group,
        kind: SessionKind::Attach { container },
        ..
    }) = session
    else {
        return (
            StatusCode::NOT_FOUND,
            "unknown or already used attach session",
        )
            .into_response();
    };
    ws.on_upgrade(move |socket| run_attach(st, socket, group, container))
}

/// Sends the container's output lines written from now on; closes when it stops running.
async fn run_attach(st: Arc<AppState>, mut socket: WebSocket, group: String, container: String) {
    tracing::info!(group = %group, container = %container, "attached");
    // Lines already sent of the current run, and which run that is (a restart starts new logs).
    let mut cursor: Option<(u32, usize)> = None;
    loop {
        let (lines, running) = {
            let groups = lock(&st.groups);
            let Some(c) = groups.get(&group).and_then(|g| g.container(&container)) else {
                break;
            };
            let run = c.restart_count;
            let from = match cursor {
                None => c.logs.len(),
                Some((r, n)) if r == run => n.min(c.logs.len()),
                Some(_) => 0,
            };
            cursor = Some((run, c.logs.len()));
            let lines: String = c.logs[from..]
                .iter()
                .map(|l| format!("{}\n", l.text))
                .collect();
            (lines, c.is_running())
        };
        if !lines.is_empty() && socket.send(Message::Text(lines.into())).await.is_err() {
            return;
        }
        if !running {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(ATTACH_POLL) => {}
            msg = socket.recv() => match msg {
                // Output only: whatever the client sends is not the container's input.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
        }
    }
    close(&mut socket, close_code::NORMAL, "").await;
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
    let SessionKind::Exec {
        command,
        env,
        workdir,
        rows,
        cols,
    } = session.kind
    else {
        return;
    };
    // ACI runs `command` as one executable without arguments: a string with spaces is looked
    // up as a file of that name, and the exec fails to start like a missing binary.
    let (mut child, master) = match spawn_on_terminal(&command, &env, &workdir, rows, cols) {
        Ok(x) => x,
        Err(_) => {
            let msg = format!(
                "OCI runtime exec failed: exec failed: unable to start container process: exec: \
                 \"{command}\": executable file not found in $PATH: unknown\r\n"
            );
            let _ = socket.send(Message::Text(msg.into())).await;
            close(&mut socket, close_code::NORMAL, "").await;
            return;
        }
    };
    tracing::info!(group = %session.group, "exec process started");
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let (in_tx, in_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let reader = master.try_clone();
    // The terminal's master side is a blocking file: one thread reads it, one writes it.
    if let Ok(mut reader) = reader {
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            // EIO once every process holding the terminal has gone.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
    }
    let mut writer = master;
    std::thread::spawn(move || {
        while let Ok(data) = in_rx.recv() {
            if writer
                .write_all(&data)
                .and_then(|()| writer.flush())
                .is_err()
            {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            chunk = out_rx.recv() => match chunk {
                Some(bytes) => {
                    let msg = match String::from_utf8(bytes) {
                        Ok(text) => Message::Text(text.into()),
                        Err(e) => Message::Binary(e.into_bytes().into()),
                    };
                    if socket.send(msg).await.is_err() {
                        break;
                    }
                }
                // The terminal closed: the process is gone.
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(t))) => { let _ = in_tx.send(t.as_bytes().to_vec()); }
                Some(Ok(Message::Binary(b))) => { let _ = in_tx.send(b.to_vec()); }
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

/// Starts `command` with a new pseudo-terminal of `rows` x `cols` as its stdin, stdout and
/// stderr; returns the process and the terminal's master side.
fn spawn_on_terminal(
    command: &str,
    env: &[(String, String)],
    workdir: &std::path::Path,
    rows: u16,
    cols: u16,
) -> std::io::Result<(tokio::process::Child, std::fs::File)> {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).map_err(std::io::Error::from)?;
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = tokio::process::Command::new(command);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", workdir)
        .env("TERM", "xterm")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(workdir)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave))
        .kill_on_drop(true);
    let child = cmd.spawn()?;
    // `cmd` (and with it this process's copies of the terminal's slave side) is dropped here, so
    // the master reads EIO once the command and its children have exited.
    drop(cmd);
    Ok((child, std::fs::File::from(pty.master)))
}
