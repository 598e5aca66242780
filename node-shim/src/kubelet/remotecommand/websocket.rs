//! exec and attach over WebSocket (`v5`/`v4.channel.k8s.io`): one binary message per chunk, its
//! first byte the channel.

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use podprovider_proto::v1::{self as pb, stream_input::Input, stream_output::Output};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

use super::{
    resize::ResizeDecoder,
    session::{Outcome, Session, input, open, status_json},
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

impl Session {
    pub(super) async fn over_websocket(
        self,
        ws: WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>,
    ) {
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
}
