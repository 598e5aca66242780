//! Attach to an emulated `cat`-like main process. The container's log is the main process's
//! output: a stdin line from any attached client is appended to it (so it is echoed to every
//! attached client and shows in `kubectl logs`), and so is every line from
//! [`Control::append_log`](super::Control::append_log). Attached clients receive, as stdout, the
//! lines appended after they attached.
//!
//! Stdin is line-buffered, as a terminal in canonical mode would hand it to `cat`: a partial line
//! is written when its newline arrives or when the client's stdin ends.
//!
//! The stream ends with `exit` when the main process ends while attached (the pod finishes, is
//! deleted or lost, or the container restarts). Otherwise it ends without `exit` when the client
//! detaches: a client that announced stdin detaches by closing stdin (`stdin_closed` or a
//! half-closed request stream), after the lines it wrote have been echoed to it; an output-only
//! client (no `stdin` in `start`) stays attached after half-closing until it cancels.

use std::sync::{Arc, Weak};

use podprovider_proto::v1::{
    AttachRequest, AttachStart, StreamOutput, attach_request, stream_input, stream_output,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::{BoxStream, logs::Instance};

type Tx = mpsc::Sender<Result<StreamOutput, Status>>;

/// Attaches to `instance` and returns the output stream.
pub(super) fn start(
    start: &AttachStart,
    instance: &Arc<watch::Sender<Instance>>,
    input: Streaming<AttachRequest>,
) -> BoxStream<StreamOutput> {
    let (tx, rx) = mpsc::channel(16);
    let mut output = Output {
        rx: instance.subscribe(),
        next: 0,
        stdout: start.stdout,
        closed: false,
    };
    // Only what the main process writes from now on.
    output.next = output.rx.borrow_and_update().lines.len();
    // Weak: an attached client must not keep a removed pod's container alive.
    let writer = Arc::downgrade(instance);
    let stdin = start.stdin;
    tokio::spawn(async move {
        let detached = tokio::select! {
            () = output.forward(&tx) => false,
            () = read_input(input, &writer, stdin) => true,
            () = tx.closed() => false,
        };
        if detached {
            // Deliver the echo of what this client wrote before it left.
            output.flush(&tx).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

struct Output {
    rx: watch::Receiver<Instance>,
    /// Next log line to send.
    next: usize,
    /// The client wants stdout.
    stdout: bool,
    /// The instance is gone without an exit (cannot happen while pods are removed through
    /// `stop_containers`); end quietly.
    closed: bool,
}

impl Output {
    /// New lines since the last call, and the exit if the main process ended.
    fn take(&mut self) -> (Vec<u8>, Option<StreamOutput>) {
        let instance = self.rx.borrow_and_update();
        let mut data = Vec::new();
        for line in instance.lines.iter().skip(self.next) {
            data.extend_from_slice(line.text.as_bytes());
            data.push(b'\n');
        }
        self.next = instance.lines.len();
        let exit = instance.exit.clone().map(|exit| StreamOutput {
            output: Some(stream_output::Output::Exit(exit)),
        });
        (data, exit)
    }

    /// Sends new lines as they come; ends after sending `exit`, or when the stream is gone.
    async fn forward(&mut self, tx: &Tx) {
        loop {
            let (data, exit) = self.take();
            if !self.send(tx, data).await {
                return;
            }
            if let Some(exit) = exit {
                let _ = tx.send(Ok(exit)).await;
                return;
            }
            if self.closed {
                return;
            }
            if self.rx.changed().await.is_err() {
                self.closed = true;
            }
        }
    }

    /// Sends the lines already written, without waiting for more.
    async fn flush(&mut self, tx: &Tx) {
        let (data, _) = self.take();
        self.send(tx, data).await;
    }

    /// False when the stream is gone.
    async fn send(&self, tx: &Tx, data: Vec<u8>) -> bool {
        if data.is_empty() || !self.stdout {
            return true;
        }
        let message = StreamOutput {
            output: Some(stream_output::Output::Stdout(data)),
        };
        tx.send(Ok(message)).await.is_ok()
    }
}

/// Reads the client's requests until it detaches (see the module comment), writing its stdin
/// lines to the main process.
async fn read_input(
    mut input: Streaming<AttachRequest>,
    writer: &Weak<watch::Sender<Instance>>,
    stdin: bool,
) {
    let mut partial = Vec::new();
    loop {
        match input.message().await {
            Ok(Some(AttachRequest {
                request: Some(attach_request::Request::Input(message)),
            })) => match message.input {
                Some(stream_input::Input::Stdin(data)) if stdin => {
                    partial.extend_from_slice(&data);
                    if let Some(end) = partial.iter().rposition(|b| *b == b'\n') {
                        let lines: Vec<u8> = partial.drain(..=end).collect();
                        write(writer, &lines);
                    }
                }
                Some(stream_input::Input::StdinClosed(_)) if stdin => break,
                // Resizes: the emulated main process has no terminal. Stdin the client did not
                // announce: ignored, as the kubelet would not wire it.
                _ => {}
            },
            // A repeated `start` or an empty message: nothing to do.
            Ok(Some(_)) => {}
            Ok(None) if stdin => break,
            // An output-only client stays attached until it cancels (the stream's end notices).
            Ok(None) => std::future::pending::<()>().await,
            // The client went away.
            Err(_) => break,
        }
    }
    if !partial.is_empty() {
        write(writer, &partial);
    }
}

/// Appends stdin bytes as log lines of the main process, unless it has ended.
fn write(writer: &Weak<watch::Sender<Instance>>, data: &[u8]) {
    let Some(instance) = writer.upgrade() else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    instance.send_if_modified(|i| {
        if i.exit.is_some() {
            return false;
        }
        i.push(&text);
        true
    });
}
