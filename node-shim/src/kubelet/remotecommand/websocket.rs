//! exec and attach over WebSocket (`v5`/`v4.channel.k8s.io`): one binary message per chunk, its
//! first byte the channel.

use futures::{SinkExt, StreamExt, stream::SplitSink};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use podprovider_proto::v1::{self as pb, stream_input::Input};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, Role, WebSocketConfig, frame::coding::CloseCode},
    },
};

use super::{
    MAX_WEBSOCKET_MESSAGE, Options,
    resize::ResizeDecoder,
    session::{Client, OutputStream, WriteFailed, input},
};

/// WebSocket channel numbers.
pub(super) mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[255, n]` closes channel `n` (only stdin is meaningful).
    pub const CLOSE: u8 = 255;
}

/// What one binary WebSocket message from the client asks for: its first byte is the channel,
/// the rest the payload. Resize payloads go through `resize`, which keeps a partial size message
/// between calls; output channels and unknown ones are ignored, as the kubelet does.
pub(super) fn client_inputs(data: &[u8], resize: &mut ResizeDecoder) -> Vec<Input> {
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

/// A client on WebSocket: the sending half of the connection, and the task that reads the other.
pub(super) struct WebSocketClient {
    sink: SplitSink<WebSocketStream<TokioIo<Upgraded>>, Message>,
    /// Forwards client messages to the provider call; it ends when the client closes or goes away.
    reader: JoinHandle<()>,
}

impl WebSocketClient {
    /// Tells the client the streams are set up and starts forwarding its input to `inputs`;
    /// `None` if it cannot be written to.
    pub(super) async fn start(
        upgraded: TokioIo<Upgraded>,
        options: &Options,
        inputs: mpsc::Sender<pb::StreamInput>,
    ) -> Option<Self> {
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_WEBSOCKET_MESSAGE))
            .max_frame_size(Some(MAX_WEBSOCKET_MESSAGE));
        let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, Some(config)).await;
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
            return None;
        }
        let reader = tokio::spawn(async move {
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
        Some(Self { sink, reader })
    }
}

impl Client for WebSocketClient {
    async fn gone(&mut self) {
        // Awaiting the handle by reference is cancel-safe; how the reader ended does not matter.
        let _ = (&mut self.reader).await;
    }

    async fn write(&mut self, stream: OutputStream, data: Vec<u8>) -> Result<(), WriteFailed> {
        let ch = match stream {
            OutputStream::Stdout => channel::STDOUT,
            OutputStream::Stderr => channel::STDERR,
        };
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(ch);
        frame.extend_from_slice(&data);
        // Every channel shares the one connection: if this send fails, the status cannot go
        // out either.
        self.sink
            .send(Message::binary(frame))
            .await
            .map_err(|_| WriteFailed::Connection)
    }

    async fn finish(mut self, status: String) {
        let mut frame = vec![channel::ERROR];
        frame.extend_from_slice(status.as_bytes());
        let _ = self.sink.send(Message::binary(frame)).await;
        // A normal closure is end-of-stream for kubectl; anything else is reported as an error.
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = self.sink.send(Message::Close(Some(close))).await;
        let _ = self.sink.close().await;
        self.reader.abort();
    }

    fn abandon(self) {
        self.reader.abort();
    }
}
