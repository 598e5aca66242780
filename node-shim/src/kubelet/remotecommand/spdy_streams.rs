//! exec and attach over SPDY/3.1: one stream per channel (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`), opened by the client after the upgrade.

use std::collections::HashMap;

use bytes::Bytes;
use podprovider_proto::v1::{self as pb, stream_input::Input, stream_output::Output};

use super::{
    STREAM_CREATION_TIMEOUT,
    resize::ResizeDecoder,
    session::{Outcome, Session, input, open, status_json},
};

impl Session {
    pub(super) async fn over_spdy(self, mut session: spdy::Session) {
        let Self {
            api,
            pod_ref,
            target,
            options,
            inputs,
            inputs_rx,
        } = self;
        let command = &options.command;
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
                    return;
                }
                s = session.accept() => match s {
                    Some(s) => {
                        let kind = s.stream_type().unwrap_or_default().to_owned();
                        streams.insert(kind, s);
                    }
                    None => return,
                },
            }
        }
        let take = |streams: &mut HashMap<String, spdy::Stream>, kind: &str| streams.remove(kind);
        let mut error = take(&mut streams, k::STREAM_TYPE_ERROR);
        let mut stdout = take(&mut streams, k::STREAM_TYPE_STDOUT);
        let mut stderr = take(&mut streams, k::STREAM_TYPE_STDERR);
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
        let opened = tokio::select! {
            o = open(&api, pod_ref, &target, &options, inputs_rx) => o,
            _ = session.closed() => {
                pumps.iter().for_each(tokio::task::JoinHandle::abort);
                return;
            }
        };
        let outcome = match opened {
            Ok(mut outputs) => loop {
                let message = tokio::select! {
                    m = outputs.message() => m,
                    // The client went away: dropping `outputs` cancels the provider call.
                    _ = session.closed() => {
                        pumps.iter().for_each(tokio::task::JoinHandle::abort);
                        return;
                    }
                };
                let (target, data) = match message {
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stdout(b)),
                    })) => (&mut stdout, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Stderr(b)),
                    })) => (&mut stderr, b),
                    Ok(Some(pb::StreamOutput {
                        output: Some(Output::Exit(e)),
                    })) => break Outcome::Exit(e),
                    Ok(Some(_)) => continue,
                    Ok(None) => break Outcome::Ended,
                    Err(status) => break Outcome::Failed(status.message().to_owned()),
                };
                if let Some(s) = target
                    && s.send(Bytes::from(data)).await.is_err()
                {
                    break Outcome::Ended;
                }
            },
            Err(status) => Outcome::Failed(status.message().to_owned()),
        };
        for s in [&mut stdout, &mut stderr].into_iter().flatten() {
            let _ = s.close().await;
        }
        if let Some(e) = &mut error {
            let _ = e.send(Bytes::from(status_json(&outcome, command))).await;
            let _ = e.close().await;
        }
        pumps.iter().for_each(tokio::task::JoinHandle::abort);
        drop(inputs);
        let _ = session.close().await;
    }
}
