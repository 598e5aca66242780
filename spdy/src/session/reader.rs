//! The reader half of the connection task: decodes frames from the
//! connection and dispatches them (opens, feeds, finishes and resets streams,
//! echoes PINGs, handles GOAWAY), queueing any answer for the writer.
//!
//! These are methods of [`Driver`]; [`Driver::run`] runs
//! [`Driver::read_loop`] alongside the [`writer`](super::writer).

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tracing::{debug, trace, warn};

use super::shared::Entry;
use super::stream::{Chunk, Stream, StreamState, reset_stream};
use super::{CHUNK_OVERHEAD, Driver, trace_frame};
use crate::Error;
use crate::frame::{Codec, Frame, FrameError, GoAwayStatus, Headers, RstStatus, Setting, StreamId};

impl Driver {
    pub(super) async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        mut rd: R,
        accept_tx: mpsc::Sender<Stream>,
    ) -> Result<(), Error> {
        let shared = &*self.shared;
        let mut accept_tx = Some(accept_tx);
        let mut codec = Codec::new().with_max_frame_size(shared.config.max_frame_size);
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut last_stream_id: StreamId = 0;
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if buf.capacity() - buf.len() < 4096 {
                        buf.reserve(16 * 1024);
                    }
                    let n = tokio::select! {
                        biased;
                        _ = shared.shutdown.cancelled() => return Ok(()),
                        _ = shared.no_new_streams.cancelled(), if accept_tx.is_some() => {
                            // Lets `accept` return None once queued streams
                            // are taken.
                            accept_tx = None;
                            continue;
                        }
                        n = rd.read_buf(&mut buf) => n?,
                    };
                    if n == 0 {
                        if buf.is_empty() {
                            debug!("SPDY peer closed the connection");
                            return Ok(());
                        }
                        return Err(Error::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed in the middle of a frame",
                        )));
                    }
                    continue;
                }
                Err(FrameError::Io(e)) => return Err(Error::Io(e)),
                Err(FrameError::HeaderLimit {
                    stream_id: Some(stream_id),
                    limit,
                }) if limit.compression_in_sync() => {
                    // The frame was consumed whole and the zlib contexts are
                    // in step: refusing the one stream is enough.
                    warn!(stream_id, %limit, "SPDY header block refused, resetting the stream");
                    let state = shared.streams().get(&stream_id).map(|e| e.state.clone());
                    match state {
                        Some(state) => {
                            reset_stream(&state, &self.urgent_tx, RstStatus::FRAME_TOO_LARGE)
                        }
                        None => {
                            if stream_id % 2 == 1 && stream_id > last_stream_id {
                                // A refused SYN_STREAM still uses up its id.
                                last_stream_id = stream_id;
                            }
                            self.refuse(stream_id, RstStatus::FRAME_TOO_LARGE).await;
                        }
                    }
                    continue;
                }
                Err(e) => {
                    if let FrameError::HeaderLimit {
                        stream_id: Some(stream_id),
                        ..
                    } = e
                    {
                        // SPDY/3.1: FRAME_TOO_LARGE for the stream, then the
                        // session must close (the block was not inflated
                        // whole).
                        let _ = self.ctrl_tx.try_send(Frame::RstStream {
                            stream_id,
                            status: RstStatus::FRAME_TOO_LARGE,
                        });
                    }
                    warn!(error = %e, "SPDY protocol error, sending GOAWAY");
                    let _ = self.ctrl_tx.try_send(Frame::GoAway {
                        last_good_stream_id: shared.last_accepted.load(Ordering::Acquire),
                        status: GoAwayStatus::PROTOCOL_ERROR,
                    });
                    shared.goaway_sent.store(true, Ordering::Release);
                    return Err(Error::Frame(e));
                }
            };
            trace_frame("received", &frame);
            match frame {
                Frame::SynStream {
                    stream_id,
                    fin,
                    unidirectional,
                    headers,
                    ..
                } => {
                    if stream_id % 2 == 0 || stream_id <= last_stream_id {
                        // Clients open odd, increasing ids (spdystream sends
                        // PROTOCOL_ERROR for the same violation).
                        self.refuse(stream_id, RstStatus::PROTOCOL_ERROR).await;
                        continue;
                    }
                    last_stream_id = stream_id;
                    if accept_tx.is_none() || shared.going_away.load(Ordering::Acquire) {
                        self.refuse(stream_id, RstStatus::REFUSED_STREAM).await;
                        continue;
                    }
                    if shared.streams().len() >= shared.config.max_concurrent_streams {
                        debug!(stream_id, "too many SPDY streams, refusing");
                        self.refuse(stream_id, RstStatus::REFUSED_STREAM).await;
                        continue;
                    }
                    let stream = self.open_stream(stream_id, fin, unidirectional, headers);
                    // Reply before the application can queue data on the
                    // stream: control frames are written ahead of data, so
                    // SYN_REPLY always precedes the stream's first DATA.
                    let reply = Frame::SynReply {
                        stream_id,
                        fin: false,
                        headers: Headers::new(),
                    };
                    if !self.send_ctrl(reply).await {
                        return Ok(());
                    }
                    shared.last_accepted.store(stream_id, Ordering::Release);
                    let Some(tx) = &accept_tx else { continue };
                    // A stream not handed over is dropped, which resets it
                    // (CANCEL); the peer already has its SYN_REPLY.
                    let handed_over = tokio::select! {
                        biased;
                        _ = shared.shutdown.cancelled() => return Ok(()),
                        _ = shared.no_new_streams.cancelled() => false,
                        // Err: the Session handle is gone.
                        sent = tx.send(stream) => sent.is_ok(),
                    };
                    if !handed_over {
                        accept_tx = None;
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    let found = shared
                        .streams()
                        .get(&stream_id)
                        .map(|e| (e.state.clone(), e.inbound.clone()));
                    let Some((state, inbound)) = found else {
                        // Reset or finished stream: late data is expected.
                        trace!(stream_id, "DATA for unknown SPDY stream ignored");
                        continue;
                    };
                    if let (false, Some(inbound)) = (data.is_empty(), inbound) {
                        let cost = data.len().saturating_add(CHUNK_OVERHEAD);
                        let cost = u32::try_from(cost).unwrap_or(u32::MAX);
                        // Capped so a frame larger than a budget still gets
                        // in (alone) instead of waiting forever. The session
                        // budget is at least a frame, so it never is capped.
                        let stream_cost = cost.min(shared.config.stream_receive_buffer);
                        let session_cost = cost.min(
                            u32::try_from(shared.config.session_receive_buffer).unwrap_or(u32::MAX),
                        );
                        let permits = async {
                            let stream = state.recv_buffer.clone();
                            let stream = stream.acquire_many_owned(stream_cost).await?;
                            let session = shared.recv_budget.clone();
                            let session = session.acquire_many_owned(session_cost).await?;
                            Ok::<_, tokio::sync::AcquireError>((stream, session))
                        };
                        let permits = tokio::select! {
                            biased;
                            _ = shared.shutdown.cancelled() => return Ok(()),
                            permits = permits => permits,
                        };
                        // Err: the stream was reset or its reader dropped
                        // (a reset while waiting for the session budget is
                        // caught by the check below).
                        // (No let-chain: the crate keeps to its 1.85 MSRV.)
                        if let Ok((permit, session_permit)) = permits {
                            if !state.is_reset() {
                                // Copied so the chunk does not pin the whole
                                // read buffer it was decoded from.
                                let _ = inbound.send(Chunk {
                                    data: Bytes::copy_from_slice(&data),
                                    _permit: permit,
                                    _session_permit: session_permit,
                                });
                            }
                        }
                    }
                    if fin {
                        shared.remote_finished(stream_id);
                    }
                }
                Frame::RstStream { stream_id, status } => {
                    debug!(stream_id, ?status, "SPDY stream reset by peer");
                    let state = shared.streams().get(&stream_id).map(|e| e.state.clone());
                    if let Some(state) = state {
                        // Flag first, then drop the inbound sender (with the
                        // entry): a reader woken by the EOF sees the reset.
                        state.mark_reset(status);
                        state.remote_fin.store(true, Ordering::Release);
                        shared.remove(stream_id);
                    }
                }
                Frame::Settings { settings, .. } => {
                    for s in settings {
                        if s.id == Setting::INITIAL_WINDOW_SIZE {
                            // Not enforced, see the session module docs.
                            debug!(window = s.value, "SPDY peer initial window size");
                        }
                    }
                }
                Frame::Ping { id } => {
                    // Odd ids are the client's; even ones would answer pings
                    // we never send. Same rule as spdystream.
                    if id % 2 == 1 && !self.send_ctrl(Frame::Ping { id }).await {
                        return Ok(());
                    }
                }
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                } => {
                    debug!(last_good_stream_id, ?status, "SPDY GOAWAY received");
                    shared.begin_going_away();
                    accept_tx = None;
                    shared.maybe_finish();
                }
                Frame::Headers { stream_id, fin, .. } => {
                    // Kubernetes never sends HEADERS; only its FIN matters.
                    if fin {
                        shared.remote_finished(stream_id);
                    }
                }
                Frame::WindowUpdate { .. } | Frame::SynReply { .. } => {
                    // Flow control is not enforced, and we open no streams.
                }
            }
        }
    }

    fn open_stream(
        &self,
        stream_id: StreamId,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    ) -> Stream {
        let config = &self.shared.config;
        let state = Arc::new(StreamState::new(
            stream_id,
            headers,
            fin,
            unidirectional,
            config.stream_receive_buffer,
        ));
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        if !(fin && unidirectional) {
            self.shared.streams().insert(
                stream_id,
                Entry {
                    state: state.clone(),
                    inbound: (!fin).then_some(inbound_tx),
                },
            );
        }
        debug!(stream_id, headers = ?state.headers, "SPDY stream opened");
        Stream::new(state, inbound_rx, &self.urgent_tx, &self.data_tx, config)
    }

    /// Queues a control frame; false if the session is shutting down.
    async fn send_ctrl(&self, frame: Frame) -> bool {
        tokio::select! {
            biased;
            _ = self.shared.shutdown.cancelled() => false,
            sent = self.ctrl_tx.send(frame) => sent.is_ok(),
        }
    }

    async fn refuse(&self, stream_id: StreamId, status: RstStatus) {
        debug!(stream_id, ?status, "refusing SPDY stream");
        self.send_ctrl(Frame::RstStream { stream_id, status }).await;
    }
}
