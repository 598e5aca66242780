//! Exec: runs a real local process for the command, so stdin, stdout, stderr, the terminal and
//! exit codes are real. Without a TTY the process gets pipes and its own process group; with a TTY
//! it becomes the session leader of a new session whose controlling terminal is a fresh
//! pseudo-terminal (allocated by `pty-process`), and all output arrives as stdout.

use std::{io, os::unix::process::ExitStatusExt as _, process::Stdio, sync::Arc};

use nix::{sys::signal::Signal, unistd::Pid};
use podprovider_proto::v1::{
    ExecRequest, ExecStart, ExitStatus, StreamOutput, TerminalSize, exec_request, stream_input,
    stream_output,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _},
    process::Child,
    sync::{mpsc, watch},
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{BoxStream, logs::Instance};

/// End of transmission: what a terminal sends for Ctrl-D, i.e. end of input for a reader in
/// canonical mode. A pty has no half-close, so this is how "stdin closed" reaches the process.
const EOT: u8 = 0x04;

/// Where the process runs.
pub(super) struct Target {
    /// The container's main process; the exec is killed when it ends.
    pub(super) container: watch::Receiver<Instance>,
    /// The container's working directory for exec'd processes.
    pub(super) workdir: Arc<tempfile::TempDir>,
    /// The container's environment, in order (later entries win).
    pub(super) env: Vec<(String, String)>,
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Tx = mpsc::Sender<Result<StreamOutput, Status>>;

/// The process's stdin side.
enum Input {
    Pipe(Option<tokio::process::ChildStdin>),
    Pty {
        writer: pty_process::OwnedWritePty,
        open: bool,
    },
}

impl Input {
    async fn write(&mut self, data: &[u8]) {
        let ok = match self {
            Self::Pipe(Some(pipe)) => pipe.write_all(data).await.is_ok(),
            Self::Pty { writer, open: true } => writer.write_all(data).await.is_ok(),
            _ => true,
        };
        if !ok {
            // The process closed its stdin (or exited): drop further input, as a broken pipe would.
            self.close().await;
        }
    }

    async fn close(&mut self) {
        match self {
            Self::Pipe(pipe) => *pipe = None,
            Self::Pty { writer, open } => {
                if *open {
                    *open = false;
                    let _ = writer.write_all(&[EOT]).await;
                }
            }
        }
    }

    fn resize(&self, size: TerminalSize) {
        if let Self::Pty { writer, .. } = self {
            // A failed resize leaves the old size: nothing the client could do about it.
            let _ = writer.resize(pty_size(size));
        }
    }
}

fn pty_size(size: TerminalSize) -> pty_process::Size {
    let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
    pty_process::Size::new(clamp(size.height), clamp(size.width))
}

/// Starts the process and returns its output stream: stdout/stderr chunks, then `exit`.
pub(super) fn start(
    start: ExecStart,
    target: Target,
    input: Streaming<ExecRequest>,
) -> BoxStream<StreamOutput> {
    let (tx, rx) = mpsc::channel(16);
    let spawned = if start.tty {
        spawn_pty(&start, &target)
    } else {
        spawn_pipes(&start, &target)
    };
    match spawned {
        Ok(process) => {
            tokio::spawn(run(process, target, input, tx));
        }
        Err(err) => {
            // The channel has room: this is its first message.
            let _ = tx.try_send(Ok(exit_message(spawn_failure(&start.command, &err))));
        }
    }
    Box::pin(ReceiverStream::new(rx))
}

struct Process {
    child: Child,
    stdin: Input,
    stdout: Option<Reader>,
    stderr: Option<Reader>,
}

fn spawn_pipes(start: &ExecStart, target: &Target) -> io::Result<Process> {
    let (program, args) = split_command(&start.command)?;
    let pipe_or_null = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(target.workdir.path())
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .stdin(pipe_or_null(start.stdin))
        .stdout(pipe_or_null(start.stdout))
        .stderr(pipe_or_null(start.stderr))
        // Its own group, so that killing the exec also kills what it started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    Ok(Process {
        stdin: Input::Pipe(child.stdin.take()),
        stdout: child.stdout.take().map(|r| Box::new(r) as Reader),
        stderr: child.stderr.take().map(|r| Box::new(r) as Reader),
        child,
    })
}

fn spawn_pty(start: &ExecStart, target: &Target) -> io::Result<Process> {
    let (program, args) = split_command(&start.command)?;
    let (pty, pts) = pty_process::open().map_err(pty_error)?;
    if let Some(size) = start.terminal_size {
        pty.resize(pty_size(size)).map_err(pty_error)?;
    }
    let has_term = target.env.iter().any(|(k, _)| k == "TERM");
    let mut command = pty_process::Command::new(program)
        .args(args)
        .current_dir(target.workdir.path())
        .envs(target.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(true);
    if !has_term {
        // What container runtimes set for a TTY when the image does not.
        command = command.env("TERM", "xterm");
    }
    // Session leader of a new session (so also its own process group) with the pty as its
    // controlling terminal; `pts` is consumed, so only the child keeps the terminal side open and
    // reading the pty ends once the child (and whatever it started) is gone.
    let child = command.spawn(pts).map_err(pty_error)?;
    let (reader, writer) = pty.into_split();
    Ok(Process {
        child,
        // Stdin the client did not announce is ignored, as with pipes.
        stdin: Input::Pty {
            writer,
            open: start.stdin,
        },
        stdout: start.stdout.then(|| Box::new(reader) as Reader),
        stderr: None,
    })
}

fn split_command(command: &[String]) -> io::Result<(&String, &[String])> {
    command
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))
}

fn pty_error(err: pty_process::Error) -> io::Error {
    match err {
        pty_process::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

/// The `exit` for a command that could not be started: 127 not found, 126 otherwise (as a shell).
fn spawn_failure(command: &[String], err: &io::Error) -> ExitStatus {
    let program = command.first().map_or("", String::as_str);
    match err.kind() {
        io::ErrorKind::NotFound => ExitStatus {
            code: 127,
            message: format!("executable file not found: {program}"),
        },
        io::ErrorKind::PermissionDenied => ExitStatus {
            code: 126,
            message: format!("permission denied: {program} is not executable"),
        },
        _ => ExitStatus {
            code: 126,
            message: format!("cannot run {program}: {err}"),
        },
    }
}

fn exit_message(exit: ExitStatus) -> StreamOutput {
    StreamOutput {
        output: Some(stream_output::Output::Exit(exit)),
    }
}

/// Shell convention: the exit code, or 128 + the signal that killed the process.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

enum End {
    Exited(io::Result<std::process::ExitStatus>),
    CallerGone,
    ContainerStopped,
}

async fn run(process: Process, mut target: Target, input: Streaming<ExecRequest>, tx: Tx) {
    let Process {
        mut child,
        stdin,
        stdout,
        stderr,
    } = process;
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let pump = tokio::spawn(pump_input(input, stdin));
    let end = tokio::select! {
        status = async {
            // `exit` comes last: after the process ended and its output was forwarded.
            let (status, (), ()) = tokio::join!(
                child.wait(),
                forward(stdout, &tx, stream_output::Output::Stdout),
                forward(stderr, &tx, stream_output::Output::Stderr),
            );
            status
        } => End::Exited(status),
        () = tx.closed() => End::CallerGone,
        () = async {
            // Also done when the instance is gone altogether (its pod was removed).
            let _ = target.container.wait_for(|i| i.exit.is_some()).await;
        } => End::ContainerStopped,
    };
    pump.abort();
    match end {
        End::Exited(Ok(status)) => {
            let _ = tx
                .send(Ok(exit_message(ExitStatus {
                    code: exit_code(status),
                    message: String::new(),
                })))
                .await;
        }
        End::Exited(Err(err)) => {
            kill_group(group);
            let _ = tx
                .send(Err(Status::internal(format!(
                    "waiting for the exec'd process failed: {err}"
                ))))
                .await;
        }
        End::CallerGone => kill_group(group),
        End::ContainerStopped => {
            kill_group(group);
            let code = child.wait().await.map_or(137, exit_code);
            let _ = tx
                .send(Ok(exit_message(ExitStatus {
                    code,
                    message: "killed: container stopped".into(),
                })))
                .await;
        }
    }
    // Dropping `child` kills it if still running (kill_on_drop) and lets tokio reap it.
}

/// Kills the exec'd process and everything in its process group (or pty session).
fn kill_group(group: Option<i32>) {
    if let Some(group) = group {
        // Already gone is fine.
        let _ = nix::sys::signal::killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
}

/// Copies one output of the process to the stream until it ends (a pty reports EIO once the
/// process side is closed: that is its end too).
async fn forward(reader: Option<Reader>, tx: &Tx, wrap: fn(Vec<u8>) -> stream_output::Output) {
    let Some(mut reader) = reader else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let message = StreamOutput {
                    output: Some(wrap(buf[..n].to_vec())),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Feeds the request stream to the process: stdin bytes, resizes, end of stdin (also when the
/// client half-closes). Stops when the client goes away; the caller kills the process then.
async fn pump_input(mut input: Streaming<ExecRequest>, mut stdin: Input) {
    loop {
        match input.message().await {
            Ok(Some(ExecRequest {
                request: Some(exec_request::Request::Input(message)),
            })) => match message.input {
                Some(stream_input::Input::Stdin(data)) => stdin.write(&data).await,
                Some(stream_input::Input::Resize(size)) => stdin.resize(size),
                Some(stream_input::Input::StdinClosed(_)) => stdin.close().await,
                None => {}
            },
            // A repeated `start` or an empty message: nothing to do.
            Ok(Some(_)) => {}
            Ok(None) => {
                stdin.close().await;
                // Keep the pty writer (and so the terminal) open until the process ends.
                std::future::pending::<()>().await;
            }
            Err(_) => return,
        }
    }
}
