//! The writer half of the connection task: takes frames from the urgent,
//! control and data queues, urgent and control first, and writes them to the
//! connection through one zlib context.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;
use tracing::debug;

use super::shared::{Entry, Shared};
use super::stream::StreamState;
use super::{DEFAULT_WINDOW, trace_frame};
use crate::Error;
use crate::frame::{Codec, Frame, GoAwayStatus, RstStatus, Setting};

/// Stop batching frames for one socket write beyond this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// Work for the writer.
pub(super) enum Out {
    /// A control frame, written as is.
    Frame(Frame),
    Data {
        stream: Arc<StreamState>,
        data: Bytes,
        fin: bool,
    },
    Reset {
        stream: Arc<StreamState>,
        status: RstStatus,
    },
    WindowUpdate(Arc<StreamState>),
    /// Send GOAWAY and accept no more streams.
    GoAway,
    /// Reset unfinished streams, send GOAWAY, shut the connection down.
    Close,
}

/// Owns the write half of the connection and the outgoing compression
/// context.
pub(super) struct Writer {
    shared: Arc<Shared>,
    codec: Codec,
    buf: BytesMut,
    /// Unbounded: resets, WINDOW_UPDATEs and GOAWAY from the stream handles
    /// and the [`Session`](super::Session).
    urgent_rx: mpsc::UnboundedReceiver<Out>,
    /// The reader's control frames (SYN_REPLY, PING echo, refusals).
    ctrl_rx: mpsc::Receiver<Frame>,
    /// DATA from the streams, and [`Out::Close`], in the order queued.
    data_rx: mpsc::Receiver<Out>,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        urgent_rx: mpsc::UnboundedReceiver<Out>,
        ctrl_rx: mpsc::Receiver<Frame>,
        data_rx: mpsc::Receiver<Out>,
    ) -> Writer {
        Writer {
            codec: Codec::new().with_max_frame_size(shared.config.max_frame_size),
            shared,
            buf: BytesMut::new(),
            urgent_rx,
            ctrl_rx,
            data_rx,
        }
    }

    pub(super) async fn run<W: AsyncWrite + Unpin>(mut self, mut wr: W) -> Result<(), Error> {
        if let Err(e) = self.run_until_shutdown(&mut wr).await {
            // The connection is broken; there is nothing left to flush.
            self.shared.shutdown.cancel();
            return Err(e);
        }
        let timeout = self.shared.config.close_timeout;
        match tokio::time::timeout(timeout, self.drain(&mut wr)).await {
            Ok(result) => result,
            Err(_) => {
                debug!("SPDY peer not reading; gave up flushing on close");
                Ok(())
            }
        }
    }

    async fn run_until_shutdown<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), Error> {
        let shared = self.shared.clone();
        if shared.config.stream_receive_buffer != DEFAULT_WINDOW
            && shared.config.send_window_updates
        {
            // Tell flow-control-aware peers the window matching our buffers.
            self.encode(Frame::Settings {
                clear_settings: false,
                settings: vec![Setting {
                    flags: 0,
                    id: Setting::INITIAL_WINDOW_SIZE,
                    value: shared.config.stream_receive_buffer,
                }],
            })?;
        }
        loop {
            if self.buf.is_empty() {
                let out = tokio::select! {
                    biased;
                    Some(out) = self.urgent_rx.recv() => out,
                    Some(frame) = self.ctrl_rx.recv() => Out::Frame(frame),
                    Some(out) = self.data_rx.recv() => out,
                    _ = shared.shutdown.cancelled() => return Ok(()),
                };
                self.process(out)?;
            }
            // Batch whatever else is ready into the same write.
            while self.buf.len() < WRITE_BATCH {
                let Some(out) = self.try_next() else { break };
                self.process(out)?;
            }
            if self.buf.is_empty() {
                continue;
            }
            tokio::select! {
                biased;
                written = wr.write_all_buf(&mut self.buf) => written?,
                // Unfinished bytes stay in `buf` for the drain.
                _ = shared.shutdown.cancelled() => return Ok(()),
            }
            wr.flush().await?;
        }
    }

    /// Writes everything still queued, then shuts the connection down.
    async fn drain<W: AsyncWrite + Unpin>(&mut self, wr: &mut W) -> Result<(), Error> {
        while let Some(out) = self.try_next() {
            self.process(out)?;
        }
        wr.write_all_buf(&mut self.buf).await?;
        wr.flush().await?;
        // The peer may already be gone; that is fine at this point.
        let _ = wr.shutdown().await;
        Ok(())
    }

    /// Next queued item, control before data (keeps SYN_REPLY ahead of the
    /// stream's first DATA).
    fn try_next(&mut self) -> Option<Out> {
        if let Ok(out) = self.urgent_rx.try_recv() {
            return Some(out);
        }
        if let Ok(frame) = self.ctrl_rx.try_recv() {
            return Some(Out::Frame(frame));
        }
        self.data_rx.try_recv().ok()
    }

    fn encode(&mut self, frame: Frame) -> Result<(), Error> {
        trace_frame("sent", &frame);
        self.codec.encode(frame, &mut self.buf)?;
        Ok(())
    }

    fn process(&mut self, out: Out) -> Result<(), Error> {
        let shared = self.shared.clone();
        match out {
            Out::Frame(frame) => self.encode(frame)?,
            Out::Data { stream, data, fin } => {
                if stream.is_reset() {
                    // The peer discards frames for reset streams anyway.
                    return Ok(());
                }
                self.encode(Frame::Data {
                    stream_id: stream.id,
                    fin,
                    data,
                })?;
                if fin {
                    shared.local_finished(stream.id);
                }
            }
            Out::Reset { stream, status } => {
                self.encode(Frame::RstStream {
                    stream_id: stream.id,
                    status,
                })?;
                shared.remove(stream.id);
            }
            Out::WindowUpdate(stream) => {
                stream.window_update_queued.store(false, Ordering::Release);
                let delta = stream.unacked.swap(0, Ordering::AcqRel);
                let open = !stream.is_reset() && !stream.remote_fin.load(Ordering::Acquire);
                if delta > 0 && open {
                    self.encode(Frame::WindowUpdate {
                        stream_id: stream.id,
                        delta_window_size: delta.min(0x7fff_ffff),
                    })?;
                }
            }
            Out::GoAway => {
                self.send_goaway()?;
                shared.maybe_finish();
            }
            Out::Close => {
                let open: Vec<Entry> = shared.streams().drain().map(|(_, e)| e).collect();
                for entry in open {
                    // spdystream's Reset also skips streams it finished.
                    let finished = entry.state.local_fin.load(Ordering::Acquire);
                    if !finished && entry.state.mark_reset(RstStatus::CANCEL) {
                        self.encode(Frame::RstStream {
                            stream_id: entry.state.id,
                            status: RstStatus::CANCEL,
                        })?;
                    }
                }
                self.send_goaway()?;
                shared.shutdown.cancel();
            }
        }
        Ok(())
    }

    fn send_goaway(&mut self) -> Result<(), Error> {
        let shared = self.shared.clone();
        shared.begin_going_away();
        if !shared.goaway_sent.swap(true, Ordering::AcqRel) {
            self.encode(Frame::GoAway {
                last_good_stream_id: shared.last_accepted.load(Ordering::Acquire),
                status: GoAwayStatus::OK,
            })?;
        }
        Ok(())
    }
}
