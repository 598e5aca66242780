//! One stream: the handles the application reads and writes through
//! ([`Stream`], [`RecvStream`], [`SendStream`]) and the state behind them
//! (receive buffer, WINDOW_UPDATE accounting, reset on drop).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::PollSender;

use super::Config;
use super::writer::Out;
use crate::Error;
use crate::frame::{Headers, RstStatus, StreamId};

/// State of one stream shared by its handles and the connection task.
pub(super) struct StreamState {
    pub(super) id: StreamId,
    pub(super) headers: Headers,
    /// Reset by either side; terminal.
    reset: AtomicBool,
    /// RST_STREAM status, 0 while not reset.
    reset_status: AtomicU32,
    /// We queued FIN (or the stream is unidirectional from the peer).
    pub(super) local_fin: AtomicBool,
    /// The peer sent FIN (or RST).
    pub(super) remote_fin: AtomicBool,
    /// Bytes consumed by the application not yet announced by WINDOW_UPDATE.
    pub(super) unacked: AtomicU32,
    pub(super) window_update_queued: AtomicBool,
    /// Bounds buffered received bytes; one permit per byte.
    pub(super) recv_buffer: Arc<Semaphore>,
}

impl StreamState {
    /// A stream the peer just opened with SYN_STREAM, buffering at most
    /// `receive_buffer` received bytes.
    pub(super) fn new(
        id: StreamId,
        headers: Headers,
        fin: bool,
        unidirectional: bool,
        receive_buffer: u32,
    ) -> StreamState {
        StreamState {
            id,
            headers,
            reset: AtomicBool::new(false),
            reset_status: AtomicU32::new(0),
            local_fin: AtomicBool::new(unidirectional),
            remote_fin: AtomicBool::new(fin),
            unacked: AtomicU32::new(0),
            window_update_queued: AtomicBool::new(false),
            recv_buffer: Arc::new(Semaphore::new(receive_buffer as usize)),
        }
    }

    pub(super) fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    fn reset_status(&self) -> Option<RstStatus> {
        match self.reset_status.load(Ordering::Acquire) {
            0 => None,
            s => Some(RstStatus(s)),
        }
    }

    /// Marks the stream reset; returns false if it already was.
    pub(super) fn mark_reset(&self, status: RstStatus) -> bool {
        if self.reset.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.reset_status.store(status.0, Ordering::Release);
        // Wakes a reader waiting for buffer space so it drops the data.
        self.recv_buffer.close();
        true
    }
}

/// A received chunk; dropping it returns its bytes to the stream's and the
/// session's budgets.
pub(super) struct Chunk {
    pub(super) data: Bytes,
    pub(super) _permit: OwnedSemaphorePermit,
    pub(super) _session_permit: OwnedSemaphorePermit,
}

/// Resets the stream if every handle is dropped before it finished cleanly,
/// so the peer is not left waiting for a FIN that never comes.
struct DropGuard {
    state: Arc<StreamState>,
    urgent: mpsc::UnboundedSender<Out>,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.state.local_fin.load(Ordering::Acquire) && self.state.mark_reset(RstStatus::CANCEL)
        {
            let _ = self.urgent.send(Out::Reset {
                stream: self.state.clone(),
                status: RstStatus::CANCEL,
            });
        }
    }
}

/// The receiving half of a [`Stream`].
///
/// Yields data until the peer sends FIN, resets the stream, or the session
/// ends. Implements [`AsyncRead`].
pub struct RecvStream {
    state: Arc<StreamState>,
    rx: mpsc::UnboundedReceiver<Chunk>,
    /// Data taken from `rx` but not yet returned by `poll_read`.
    pending: Bytes,
    urgent: mpsc::UnboundedSender<Out>,
    /// Consumed bytes that trigger a WINDOW_UPDATE; 0 disables them.
    window_update_threshold: u32,
    _guard: Arc<DropGuard>,
}

impl RecvStream {
    pub fn id(&self) -> StreamId {
        self.state.id
    }

    /// Headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        &self.state.headers
    }

    /// The next chunk of data, or `None` at FIN, reset, or end of session.
    /// Chunks follow the peer's DATA frames (empty frames are skipped).
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Poll form of [`RecvStream::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.state.is_reset() {
            // Reset discards whatever was buffered: the stream was aborted.
            self.pending = Bytes::new();
            return Poll::Ready(None);
        }
        if !self.pending.is_empty() {
            return Poll::Ready(Some(std::mem::take(&mut self.pending)));
        }
        let Some(chunk) = ready!(self.rx.poll_recv(cx)) else {
            return Poll::Ready(None);
        };
        if self.state.is_reset() {
            return Poll::Ready(None);
        }
        self.consumed(chunk.data.len());
        Poll::Ready(Some(chunk.data))
    }

    /// Whether the stream was reset (by either side).
    pub fn is_reset(&self) -> bool {
        self.state.is_reset()
    }

    /// The RST_STREAM status, if the stream was reset.
    pub fn reset_status(&self) -> Option<RstStatus> {
        self.state.reset_status()
    }

    fn consumed(&self, n: usize) {
        if self.window_update_threshold == 0 || n == 0 {
            return;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        let total = self
            .state
            .unacked
            .fetch_add(n, Ordering::AcqRel)
            .saturating_add(n);
        // One queued WINDOW_UPDATE per stream at a time; the writer picks up
        // everything consumed until it gets to it.
        if total >= self.window_update_threshold
            && !self.state.window_update_queued.swap(true, Ordering::AcqRel)
        {
            let _ = self.urgent.send(Out::WindowUpdate(self.state.clone()));
        }
    }
}

impl Drop for RecvStream {
    fn drop(&mut self) {
        // Nobody will read any more: make the reader discard further data for
        // this stream instead of waiting for buffer space forever.
        self.state.recv_buffer.close();
    }
}

impl AsyncRead for RecvStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            match ready!(this.poll_recv(cx)) {
                Some(data) => this.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// The sending half of a [`Stream`]. Implements [`AsyncWrite`]; `shutdown`
/// sends FIN.
pub struct SendStream {
    state: Arc<StreamState>,
    tx: PollSender<Out>,
    urgent: mpsc::UnboundedSender<Out>,
    max_chunk: usize,
    _guard: Arc<DropGuard>,
}

impl SendStream {
    pub fn id(&self) -> StreamId {
        self.state.id
    }

    /// Headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        &self.state.headers
    }

    /// Queues `data` as DATA frames of at most [`Config::max_data_chunk`]
    /// bytes. Returns once queued; waits while the write queue is full.
    pub async fn send(&mut self, mut data: Bytes) -> Result<(), Error> {
        while !data.is_empty() {
            self.check_writable()?;
            self.reserve().await?;
            let chunk = data.split_to(data.len().min(self.max_chunk));
            self.send_reserved(chunk, false)?;
        }
        Ok(())
    }

    /// Half-closes the stream: sends FIN after the data already queued.
    /// Receiving continues. Calling it again is a no-op.
    pub async fn close(&mut self) -> Result<(), Error> {
        if let Some(status) = self.state.reset_status() {
            return Err(Error::StreamReset(status));
        }
        if self.state.local_fin.load(Ordering::Acquire) {
            return Ok(());
        }
        self.reserve().await?;
        // Marked only once the FIN is certain to be queued: a close that is
        // cancelled while waiting leaves the stream open (and a later drop
        // resets it instead of leaving the peer waiting).
        self.state.local_fin.store(true, Ordering::Release);
        self.send_reserved(Bytes::new(), true)
    }

    /// Resets the stream with RST_STREAM(CANCEL), like spdystream's `Reset`.
    pub fn reset(&self) {
        self.reset_with(RstStatus::CANCEL);
    }

    /// Resets the stream with the given status. Queued, unsent data is
    /// dropped and both halves report end of stream.
    pub fn reset_with(&self, status: RstStatus) {
        reset_stream(&self.state, &self.urgent, status);
    }

    /// Whether the stream was reset (by either side).
    pub fn is_reset(&self) -> bool {
        self.state.is_reset()
    }

    fn check_writable(&self) -> Result<(), Error> {
        if self.state.is_reset() {
            return Err(Error::StreamReset(
                self.state.reset_status().unwrap_or(RstStatus::CANCEL),
            ));
        }
        if self.state.local_fin.load(Ordering::Acquire) {
            return Err(Error::StreamClosed);
        }
        Ok(())
    }

    /// Waits for room in the write queue.
    async fn reserve(&mut self) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.tx.poll_reserve(cx))
            .await
            .map_err(|_| Error::SessionClosed)
    }

    /// Queues a frame into the slot taken by [`SendStream::reserve`].
    fn send_reserved(&mut self, data: Bytes, fin: bool) -> Result<(), Error> {
        self.tx
            .send_item(Out::Data {
                stream: self.state.clone(),
                data,
                fin,
            })
            .map_err(|_| Error::SessionClosed)
    }
}

pub(super) fn reset_stream(
    state: &Arc<StreamState>,
    urgent: &mpsc::UnboundedSender<Out>,
    status: RstStatus,
) {
    if state.mark_reset(status) {
        let _ = urgent.send(Out::Reset {
            stream: state.clone(),
            status,
        });
    }
}

fn io_error(e: Error) -> io::Error {
    let kind = match e {
        Error::StreamReset(_) => io::ErrorKind::ConnectionReset,
        Error::StreamClosed | Error::SessionClosed => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

impl AsyncWrite for SendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        this.check_writable().map_err(io_error)?;
        if ready!(this.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io_error(Error::SessionClosed)));
        }
        let n = buf.len().min(this.max_chunk);
        let out = Out::Data {
            stream: this.state.clone(),
            data: Bytes::copy_from_slice(&buf[..n]),
            fin: false,
        };
        if this.tx.send_item(out).is_err() {
            return Poll::Ready(Err(io_error(Error::SessionClosed)));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Queued frames are written in order by the connection task; there is
        // no per-stream buffer to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(status) = this.state.reset_status() {
            return Poll::Ready(Err(io_error(Error::StreamReset(status))));
        }
        if this.state.local_fin.load(Ordering::Acquire) {
            return Poll::Ready(Ok(()));
        }
        if ready!(this.tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(io_error(Error::SessionClosed)));
        }
        this.state.local_fin.store(true, Ordering::Release);
        let out = Out::Data {
            stream: this.state.clone(),
            data: Bytes::new(),
            fin: true,
        };
        if this.tx.send_item(out).is_err() {
            return Poll::Ready(Err(io_error(Error::SessionClosed)));
        }
        Poll::Ready(Ok(()))
    }
}

/// A stream opened by the peer. Read with [`Stream::recv`] or [`AsyncRead`],
/// write with [`Stream::send`] or [`AsyncWrite`], half-close with
/// [`Stream::close`], abort with [`Stream::reset`].
///
/// The session already answered the SYN_STREAM with SYN_REPLY. Dropping every
/// handle of a stream that was not closed or reset resets it with CANCEL.
pub struct Stream {
    recv: RecvStream,
    send: SendStream,
}

impl Stream {
    /// The application's handles for a stream the reader just opened:
    /// `inbound` is what the reader feeds its DATA into.
    pub(super) fn new(
        state: Arc<StreamState>,
        inbound: mpsc::UnboundedReceiver<Chunk>,
        urgent_tx: &mpsc::UnboundedSender<Out>,
        data_tx: &mpsc::Sender<Out>,
        config: &Config,
    ) -> Stream {
        let guard = Arc::new(DropGuard {
            state: state.clone(),
            urgent: urgent_tx.clone(),
        });
        let window_update_threshold = if config.send_window_updates {
            (config.stream_receive_buffer / 2).max(1)
        } else {
            0
        };
        Stream {
            recv: RecvStream {
                state: state.clone(),
                rx: inbound,
                pending: Bytes::new(),
                urgent: urgent_tx.clone(),
                window_update_threshold,
                _guard: guard.clone(),
            },
            send: SendStream {
                state,
                tx: PollSender::new(data_tx.clone()),
                urgent: urgent_tx.clone(),
                max_chunk: config.max_data_chunk,
                _guard: guard,
            },
        }
    }

    pub fn id(&self) -> StreamId {
        self.recv.id()
    }

    /// Headers of the SYN_STREAM that opened the stream.
    pub fn headers(&self) -> &Headers {
        self.recv.headers()
    }

    /// The Kubernetes `streamtype` header (`error`, `stdin`, `stdout`,
    /// `stderr`, `resize`, `data`), if present.
    pub fn stream_type(&self) -> Option<&str> {
        self.headers().get(crate::kube::HEADER_STREAM_TYPE)
    }

    /// See [`RecvStream::recv`].
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.recv.recv().await
    }

    /// See [`SendStream::send`].
    pub async fn send(&mut self, data: Bytes) -> Result<(), Error> {
        self.send.send(data).await
    }

    /// See [`SendStream::close`].
    pub async fn close(&mut self) -> Result<(), Error> {
        self.send.close().await
    }

    /// See [`SendStream::reset`].
    pub fn reset(&self) {
        self.send.reset();
    }

    /// See [`SendStream::reset_with`].
    pub fn reset_with(&self, status: RstStatus) {
        self.send.reset_with(status);
    }

    pub fn is_reset(&self) -> bool {
        self.recv.is_reset()
    }

    pub fn reset_status(&self) -> Option<RstStatus> {
        self.recv.reset_status()
    }

    /// Splits into halves that can be used from different tasks.
    pub fn into_split(self) -> (RecvStream, SendStream) {
        (self.recv, self.send)
    }
}

impl std::fmt::Debug for RecvStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvStream")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SendStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendStream")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id())
            .field("headers", self.headers())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().send).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_shutdown(cx)
    }
}
