//! exec and attach over SPDY/3.1: one stream per channel (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`), opened by the client after the upgrade.

use std::collections::HashMap;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use podprovider_proto::v1::{self as pb, stream_input::Input};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    Options, STREAM_CREATION_TIMEOUT,
    resize::ResizeDecoder,
    session::{Client, OutputStream, WriteFailed, input},
};

/// A client on SPDY: its session, the streams the output goes to, and the tasks that read the
/// others.
pub(super) struct SpdyClient {
    session: spdy::Session,
    error: Option<spdy::Stream>,
    stdout: Option<spdy::Stream>,
    stderr: Option<spdy::Stream>,
    /// Forward the stdin and resize streams to the provider call.
    pumps: Vec<JoinHandle<()>>,
    /// Keeps the provider call's input open until the session ends, whether or not the client
    /// sends stdin.
    inputs: mpsc::Sender<pb::StreamInput>,
    /// Streams of types not used here: dropping one resets it, so they are kept until the end.
    _unused: HashMap<String, spdy::Stream>,
}

impl SpdyClient {
    /// Waits for the streams `options` call for and starts forwarding stdin and resize to
    /// `inputs`; `None` if the client goes away or does not open them in time.
    pub(super) async fn start(
        upgraded: TokioIo<Upgraded>,
        options: &Options,
        inputs: mpsc::Sender<pb::StreamInput>,
    ) -> Option<Self> {
        let mut session = spdy::Session::new(upgraded);
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
                    return None;
                }
                s = session.accept() => match s {
                    Some(s) => {
                        let kind = s.stream_type().unwrap_or_default().to_owned();
                        streams.insert(kind, s);
                    }
                    None => return None,
                },
            }
        }
        let take = |streams: &mut HashMap<String, spdy::Stream>, kind: &str| streams.remove(kind);
        let error = take(&mut streams, k::STREAM_TYPE_ERROR);
        let stdout = take(&mut streams, k::STREAM_TYPE_STDOUT);
        let stderr = take(&mut streams, k::STREAM_TYPE_STDERR);
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
        Some(Self {
            session,
            error,
            stdout,
            stderr,
            pumps,
            inputs,
            _unused: streams,
        })
    }
}

impl Client for SpdyClient {
    async fn gone(&mut self) {
        // How the connection ended does not matter here.
        let _ = self.session.closed().await;
    }

    async fn write(&mut self, stream: OutputStream, data: Vec<u8>) -> Result<(), WriteFailed> {
        let target = match stream {
            OutputStream::Stdout => &mut self.stdout,
            OutputStream::Stderr => &mut self.stderr,
        };
        // Output for a stream the client did not open is dropped. A failed stream need not mean
        // a failed connection, so the status is still tried on the error stream.
        if let Some(s) = target
            && s.send(Bytes::from(data)).await.is_err()
        {
            return Err(WriteFailed::Stream);
        }
        Ok(())
    }

    async fn finish(mut self, status: String) {
        for s in [&mut self.stdout, &mut self.stderr].into_iter().flatten() {
            let _ = s.close().await;
        }
        if let Some(e) = &mut self.error {
            let _ = e.send(Bytes::from(status)).await;
            let _ = e.close().await;
        }
        self.pumps.iter().for_each(JoinHandle::abort);
        drop(self.inputs);
        let _ = self.session.close().await;
    }

    fn abandon(self) {
        self.pumps.iter().for_each(JoinHandle::abort);
    }
}
