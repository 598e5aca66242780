//! One exec or attach, whatever the transport: the provider's Exec or Attach call, the one loop
//! that relays its output to the client ([`Session::run`], over a [`Client`]), and the status the
//! client gets when it ends.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use podprovider_proto::v1::{self as pb, stream_input::Input, stream_output::Output};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{KubeletApi, Options, Target};

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

/// How the remote command ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Exit(pb::ExitStatus),
    /// The provider ended the stream without an exit (an attach whose client detached).
    Ended,
    Failed(String),
}

/// The `metav1.Status` written on the error channel (protocol v4 and later).
pub(super) fn status_json(outcome: &Outcome, command: &[String]) -> String {
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

pub(super) fn input(i: Input) -> pb::StreamInput {
    pb::StreamInput { input: Some(i) }
}

/// Which of the command's outputs a chunk is.
#[derive(Clone, Copy, Debug)]
pub(super) enum OutputStream {
    Stdout,
    Stderr,
}

/// Why output could not be written; the transport knows which.
#[derive(Debug)]
pub(super) enum WriteFailed {
    /// The connection is broken: nothing more can reach the client, so the session is abandoned
    /// without a status.
    Connection,
    /// An output stream is shut but the connection may still work: the session ends as
    /// [`Outcome::Ended`] and its status is still written.
    Stream,
}

/// The client end of a session as the output loop sees it, whatever the transport.
pub(super) trait Client {
    /// Resolves once the client has gone away. It is raced against the provider's next message,
    /// so it must be cancel-safe.
    async fn gone(&mut self);

    /// Writes a chunk of the command's stdout or stderr.
    async fn write(&mut self, stream: OutputStream, data: Vec<u8>) -> Result<(), WriteFailed>;

    /// Writes the final `metav1.Status` on the error channel and closes the connection.
    async fn finish(self, status: String);

    /// Stops reading the client's input, after it went away or could not be written to.
    fn abandon(self);
}

/// One exec/attach between an upgraded client connection and the provider.
pub(super) struct Session {
    pub(super) api: Arc<KubeletApi>,
    pub(super) pod_ref: pb::PodRef,
    pub(super) target: Target,
    pub(super) options: Options,
    /// Client input for the provider call; the transport holds the sending end.
    pub(super) inputs: mpsc::Receiver<pb::StreamInput>,
}

impl Session {
    /// Opens the provider call, then relays its output to `client` until the command ends (the
    /// client then gets its status) or the client goes away.
    pub(super) async fn run(self, mut client: impl Client) {
        let Self {
            api,
            pod_ref,
            target,
            options,
            inputs,
        } = self;
        let opened = tokio::select! {
            o = open(&api, pod_ref, &target, &options, inputs) => o,
            () = client.gone() => {
                client.abandon();
                return;
            }
        };
        let outcome = match opened {
            Ok(mut outputs) => loop {
                let message = tokio::select! {
                    m = outputs.message() => m,
                    // The client went away: dropping `outputs` cancels the provider call.
                    () = client.gone() => {
                        client.abandon();
                        return;
                    }
                };
                let (stream, data) = match message {
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stdout(b)),
                    })) => (OutputStream::Stdout, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stderr(b)),
                    })) => (OutputStream::Stderr, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Exit(e)),
                    })) => break Outcome::Exit(e),
                    Ok(Some(_)) => continue,
                    Ok(None) => break Outcome::Ended,
                    Err(status) => break Outcome::Failed(status.message().to_owned()),
                };
                match client.write(stream, data).await {
                    Ok(()) => {}
                    Err(WriteFailed::Stream) => break Outcome::Ended,
                    Err(WriteFailed::Connection) => {
                        client.abandon();
                        return;
                    }
                }
            },
            Err(status) => Outcome::Failed(status.message().to_owned()),
        };
        client.finish(status_json(&outcome, &options.command)).await;
    }
}
