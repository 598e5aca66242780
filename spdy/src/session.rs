//! A server-side SPDY/3.1 session: accepts the streams the peer opens and
//! multiplexes them over one connection.
//!
//! [`Session::new`] spawns a task that owns the connection. That task runs a
//! reader and a writer concurrently:
//!
//! * the reader decodes frames, answers PINGs, replies SYN_REPLY to each
//!   SYN_STREAM and hands the new [`Stream`] to [`Session::accept`], and feeds
//!   DATA into per-stream buffers;
//! * the writer serializes frames from every stream through one zlib context,
//!   taking control frames first and DATA in the order streams queued it.
//!
//! # Back-pressure
//!
//! Each stream buffers at most [`Config::stream_receive_buffer`] bytes of
//! received data (or one frame, if a frame is larger), and the session at
//! most [`Config::session_receive_buffer`] over all its streams. Every
//! buffered frame is charged a fixed overhead on top of its payload and is
//! copied out of the connection's read buffer, so the budgets bound memory,
//! not just payload: a flood of 1-byte frames cannot pin read buffers or
//! queue entries beyond them. When a budget is used up the reader
//! stops reading the connection until the application consumes data, so a
//! slow reader stalls the whole connection rather than growing memory. This is
//! what spdystream does too (its frame handlers block on unbuffered
//! channels). Read every stream you accept, concurrently, or drop/reset it.
//!
//! # Limits
//!
//! At most [`Config::max_concurrent_streams`] streams are open at once;
//! further SYN_STREAMs get RST_STREAM(REFUSED_STREAM). A frame longer than
//! [`Config::max_frame_size`] ends the session before its payload is read.
//! A header block over one of the limits in [`crate::frame`] gets
//! RST_STREAM(FRAME_TOO_LARGE) for its stream; if it was too large to
//! decompress whole ([`HeaderLimit::BlockSize`]), GOAWAY(PROTOCOL_ERROR)
//! follows and the session ends, as SPDY/3.1 requires when the compression
//! contexts are out of step.
//!
//! [`HeaderLimit::BlockSize`]: crate::frame::HeaderLimit::BlockSize
//! Outgoing data goes through a bounded queue ([`Config::write_queue`] frames
//! of at most [`Config::max_data_chunk`] bytes), so `send` waits when the
//! peer is not reading.
//!
//! # Flow control
//!
//! spdystream, the Go implementation kube-apiserver and kubectl use, ignores
//! SETTINGS and WINDOW_UPDATE entirely and never sends WINDOW_UPDATE.
//! Enforcing SPDY/3.1 send windows against it would stall every stream after
//! 64 KiB, so this session does not limit what it sends. It does send
//! WINDOW_UPDATE as the application consumes data (which spdystream
//! harmlessly ignores), so a peer that does honour windows never has to wait.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::sync::{CancellationToken, PollSender};
use tracing::{debug, trace, warn};

use crate::Error;
use crate::frame::{
    Codec, DEFAULT_MAX_FRAME_SIZE, Frame, FrameError, GoAwayStatus, Headers, RstStatus, Setting,
    StreamId,
};

/// The SPDY/3 default initial flow-control window.
const DEFAULT_WINDOW: u32 = 64 * 1024;

/// Default for [`Config::max_concurrent_streams`]: 128 streams per session.
///
/// Kubernetes opens at most 5 for exec/attach and 2 per forwarded connection
/// for port-forward, so this leaves room for ~60 connections forwarded over
/// one session while bounding the per-stream state (and buffers) a peer can
/// make us hold.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 128;

/// Default for [`Config::stream_receive_buffer`]: 64 KiB per stream, the
/// SPDY/3 default window, so a peer that honours windows never overruns it.
pub const DEFAULT_STREAM_RECEIVE_BUFFER: u32 = DEFAULT_WINDOW;

/// Default for [`Config::session_receive_buffer`]: 8 MiB per session.
///
/// Room for every stream's default buffer at the default stream count, so it
/// only bites when frames larger than a stream's buffer pile up (a stream may
/// hold one frame of up to [`DEFAULT_MAX_FRAME_SIZE`]; without this, 128 such
/// streams would hold 128 MiB).
pub const DEFAULT_SESSION_RECEIVE_BUFFER: usize = 8 << 20;

/// Bytes charged per buffered DATA frame on top of its payload: roughly the
/// queue entry, the permit and the allocation header. Keeps a stream of
/// 1-byte frames within the buffer budgets in real memory.
const CHUNK_OVERHEAD: usize = 128;

/// Stop batching frames for one socket write beyond this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// Tunables for a [`Session`]. `Config::default()` suits Kubernetes traffic.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest frame payload accepted from the peer (a larger frame is a
    /// protocol error that ends the session) or sent to it.
    pub max_frame_size: usize,
    /// Outgoing data is split into DATA frames of at most this many bytes, so
    /// one busy stream cannot hog the connection.
    pub max_data_chunk: usize,
    /// Received bytes buffered per stream before the reader waits for the
    /// application (a frame larger than this is still taken, alone). Also
    /// the window we tell flow-control-aware peers about.
    pub stream_receive_buffer: u32,
    /// Received bytes buffered over all streams of the session before the
    /// reader waits for the application. Raised to at least
    /// `max_frame_size` plus a little, so any one frame fits.
    pub session_receive_buffer: usize,
    /// Send WINDOW_UPDATE frames as received data is consumed.
    pub send_window_updates: bool,
    /// Streams open at once; further SYN_STREAMs are refused.
    pub max_concurrent_streams: usize,
    /// Accepted streams waiting for [`Session::accept`] before the reader
    /// waits for the application.
    pub accept_backlog: usize,
    /// Outgoing DATA frames queued before `send` waits.
    pub write_queue: usize,
    /// How long closing may spend flushing queued frames to the peer.
    pub close_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_data_chunk: 32 * 1024,
            stream_receive_buffer: DEFAULT_STREAM_RECEIVE_BUFFER,
            session_receive_buffer: DEFAULT_SESSION_RECEIVE_BUFFER,
            send_window_updates: true,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            accept_backlog: 16,
            write_queue: 32,
            close_timeout: Duration::from_secs(5),
        }
    }
}

impl Config {
    /// Clamps values that would otherwise panic deep inside tokio or make no
    /// sense on the wire.
    fn sanitized(mut self) -> Self {
        let wire_max = (1 << 24) - 1;
        self.max_frame_size = self.max_frame_size.clamp(1, wire_max);
        self.max_data_chunk = self.max_data_chunk.clamp(1, self.max_frame_size);
        let permits_max = u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX);
        self.stream_receive_buffer = self
            .stream_receive_buffer
            .clamp(1, permits_max.min(0x7fff_ffff));
        // Permits are taken as u32, and one frame must always fit.
        self.session_receive_buffer = self.session_receive_buffer.clamp(
            self.max_frame_size + CHUNK_OVERHEAD,
            (permits_max as usize).min(u32::MAX as usize),
        );
        self.max_concurrent_streams = self.max_concurrent_streams.max(1);
        self.accept_backlog = self.accept_backlog.max(1);
        self.write_queue = self.write_queue.max(1);
        self
    }
}

/// State of one stream shared by its handles and the connection task.
struct StreamState {
    id: StreamId,
    headers: Headers,
    /// Reset by either side; terminal.
    reset: AtomicBool,
    /// RST_STREAM status, 0 while not reset.
    reset_status: AtomicU32,
    /// We queued FIN (or the stream is unidirectional from the peer).
    local_fin: AtomicBool,
    /// The peer sent FIN (or RST).
    remote_fin: AtomicBool,
    /// Bytes consumed by the application not yet announced by WINDOW_UPDATE.
    unacked: AtomicU32,
    window_update_queued: AtomicBool,
    /// Bounds buffered received bytes; one permit per byte.
    recv_buffer: Arc<Semaphore>,
}

impl StreamState {
    fn is_reset(&self) -> bool {
        self.reset.load(Ordering::Acquire)
    }

    fn reset_status(&self) -> Option<RstStatus> {
        match self.reset_status.load(Ordering::Acquire) {
            0 => None,
            s => Some(RstStatus(s)),
        }
    }

    /// Marks the stream reset; returns false if it already was.
    fn mark_reset(&self, status: RstStatus) -> bool {
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
struct Chunk {
    data: Bytes,
    _permit: OwnedSemaphorePermit,
    _session_permit: OwnedSemaphorePermit,
}

struct Entry {
    state: Arc<StreamState>,
    /// `None` once the peer finished sending.
    inbound: Option<mpsc::UnboundedSender<Chunk>>,
}

/// Work for the writer.
enum Out {
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

struct Shared {
    config: Config,
    streams: Mutex<HashMap<StreamId, Entry>>,
    /// Bounds buffered received bytes over all streams; one permit per byte.
    recv_budget: Arc<Semaphore>,
    /// GOAWAY sent or received.
    going_away: AtomicBool,
    goaway_sent: AtomicBool,
    /// Highest stream id we accepted (for our GOAWAY).
    last_accepted: AtomicU32,
    /// Stops the reader and makes the writer drain and shut down.
    shutdown: CancellationToken,
    /// Fired on GOAWAY either way: stop handing out new streams.
    no_new_streams: CancellationToken,
}

impl Shared {
    fn streams(&self) -> MutexGuard<'_, HashMap<StreamId, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent in
        // a way that matters more than losing the connection, so recover.
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the session once GOAWAY has been exchanged and no stream is open.
    fn maybe_finish(&self) {
        if self.going_away.load(Ordering::Acquire) && self.streams().is_empty() {
            debug!("SPDY session: going away and no open streams, shutting down");
            self.shutdown.cancel();
        }
    }

    fn begin_going_away(&self) {
        self.going_away.store(true, Ordering::Release);
        self.no_new_streams.cancel();
    }

    /// The peer finished sending on `id` (FIN).
    fn remote_finished(&self, id: StreamId) {
        {
            let mut streams = self.streams();
            let Some(entry) = streams.get_mut(&id) else {
                return;
            };
            entry.inbound = None;
            entry.state.remote_fin.store(true, Ordering::Release);
            if entry.state.local_fin.load(Ordering::Acquire) || entry.state.is_reset() {
                streams.remove(&id);
            }
        }
        self.maybe_finish();
    }

    /// Our FIN for `id` was written.
    fn local_finished(&self, id: StreamId) {
        {
            let mut streams = self.streams();
            if streams
                .get(&id)
                .is_some_and(|e| e.state.remote_fin.load(Ordering::Acquire))
            {
                streams.remove(&id);
            }
        }
        self.maybe_finish();
    }

    fn remove(&self, id: StreamId) -> Option<Entry> {
        let entry = self.streams().remove(&id);
        self.maybe_finish();
        entry
    }
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

fn reset_stream(state: &Arc<StreamState>, urgent: &mpsc::UnboundedSender<Out>, status: RstStatus) {
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

/// The future that runs a session's connection, from [`Session::unspawned`].
/// It resolves when the connection ends: `Ok` for a clean end (peer closed
/// the connection, GOAWAY exchanged and streams finished, or
/// [`Session::close`]), `Err` for I/O and protocol errors.
#[must_use = "the session does nothing unless the connection future is driven"]
pub struct Connection {
    inner: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
}

impl Future for Connection {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connection")
    }
}

/// Server side of a SPDY/3.1 connection. See the [module docs](crate::session).
///
/// Dropping the `Session` sends GOAWAY: streams already accepted keep
/// working, and the connection ends once they are all finished.
pub struct Session {
    incoming: mpsc::Receiver<Stream>,
    urgent: mpsc::UnboundedSender<Out>,
    data: mpsc::Sender<Out>,
    shared: Arc<Shared>,
    done: watch::Receiver<bool>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Starts serving `io` (an upgraded HTTP connection) with the default
    /// [`Config`], on a task spawned with [`tokio::spawn`]; must be called
    /// within a tokio runtime.
    pub fn new<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Self::with_config(io, Config::default())
    }

    /// [`Session::new`] with a custom [`Config`].
    pub fn with_config<T>(io: T, config: Config) -> Session
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut session, connection) = Self::unspawned(io, config);
        session.task = Some(tokio::spawn(connection));
        session
    }

    /// Like [`Session::with_config`] but returns the connection future for
    /// the caller to drive (spawn it or poll it alongside other work).
    pub fn unspawned<T>(io: T, config: Config) -> (Session, Connection)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = config.sanitized();
        let (accept_tx, incoming) = mpsc::channel(config.accept_backlog);
        let (urgent_tx, urgent_rx) = mpsc::unbounded_channel();
        // Reader-originated control frames (SYN_REPLY, PING echo, refusals).
        let (ctrl_tx, ctrl_rx) = mpsc::channel(64);
        let (data_tx, data_rx) = mpsc::channel(config.write_queue);
        let (done_tx, done) = watch::channel(false);
        let shared = Arc::new(Shared {
            recv_budget: Arc::new(Semaphore::new(config.session_receive_buffer)),
            config,
            streams: Mutex::new(HashMap::new()),
            going_away: AtomicBool::new(false),
            goaway_sent: AtomicBool::new(false),
            last_accepted: AtomicU32::new(0),
            shutdown: CancellationToken::new(),
            no_new_streams: CancellationToken::new(),
        });
        let driver = Driver {
            shared: shared.clone(),
            urgent_tx: urgent_tx.clone(),
            ctrl_tx,
            data_tx: data_tx.clone(),
        };
        let fut = driver.run(io, accept_tx, urgent_rx, ctrl_rx, data_rx, done_tx);
        let session = Session {
            incoming,
            urgent: urgent_tx,
            data: data_tx,
            shared,
            done,
            task: None,
        };
        (
            session,
            Connection {
                inner: Box::pin(fut),
            },
        )
    }

    /// The next stream opened by the peer, already answered with SYN_REPLY.
    /// `None` once the session will produce no more streams (GOAWAY either
    /// way, or the connection ended).
    pub async fn accept(&mut self) -> Option<Stream> {
        self.incoming.recv().await
    }

    /// Sends GOAWAY: the peer may open no more streams, open streams carry
    /// on, and the connection ends once they are all finished.
    pub fn goaway(&self) {
        let _ = self.urgent.send(Out::GoAway);
    }

    /// Closes the session like kubelet does when an exec ends: data already
    /// queued is sent, streams we have not half-closed are reset, GOAWAY is
    /// sent and the connection is shut down. Returns the connection's outcome
    /// (see [`Session::closed`]).
    pub async fn close(&mut self) -> Result<(), Error> {
        // Through the data queue so it goes out after data queued before it.
        let queued =
            tokio::time::timeout(self.shared.config.close_timeout, self.data.send(Out::Close))
                .await;
        if !matches!(queued, Ok(Ok(()))) {
            // Writer stuck or gone: give up on a graceful close.
            self.shared.shutdown.cancel();
        }
        self.closed().await
    }

    /// Waits for the connection to end. `Ok` for a clean end, otherwise the
    /// error that ended it. For an [unspawned](Session::unspawned) session the
    /// outcome goes to whoever drives the [`Connection`], and this returns
    /// `Ok` once it has ended.
    pub async fn closed(&mut self) -> Result<(), Error> {
        // Err means the driver was dropped without finishing: ended too.
        let _ = self.done.wait_for(|done| *done).await;
        match self.task.take() {
            Some(task) => match task.await {
                Ok(outcome) => outcome,
                Err(join) => Err(Error::Io(io::Error::other(join))),
            },
            None => Ok(()),
        }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.done.borrow()
    }
}

impl futures_core::Stream for Session {
    type Item = Stream;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Stream>> {
        self.incoming.poll_recv(cx)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.urgent.send(Out::GoAway);
    }
}

/// Everything the connection task needs besides the channel receivers.
struct Driver {
    shared: Arc<Shared>,
    urgent_tx: mpsc::UnboundedSender<Out>,
    ctrl_tx: mpsc::Sender<Frame>,
    data_tx: mpsc::Sender<Out>,
}

impl Driver {
    async fn run<T>(
        self,
        io: T,
        accept_tx: mpsc::Sender<Stream>,
        urgent_rx: mpsc::UnboundedReceiver<Out>,
        ctrl_rx: mpsc::Receiver<Frame>,
        data_rx: mpsc::Receiver<Out>,
        done_tx: watch::Sender<bool>,
    ) -> Result<(), Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let shared = self.shared.clone();
        let writer = Writer {
            shared: shared.clone(),
            codec: Codec::new().with_max_frame_size(shared.config.max_frame_size),
            buf: BytesMut::new(),
            urgent_rx,
            ctrl_rx,
            data_rx,
        };
        let reader = async {
            let result = self.read_loop(rd, accept_tx).await;
            // However the reader ended, the writer drains and shuts down.
            shared.shutdown.cancel();
            result
        };
        let (read_result, write_result) = tokio::join!(reader, writer.run(wr));

        // End every stream still open: dropping the inbound senders gives
        // their readers EOF after buffered data; sends fail now that the
        // writer's queue receiver is gone.
        shared.streams().clear();
        let _ = done_tx.send(true);
        match (&read_result, &write_result) {
            (Ok(()), Ok(())) => debug!("SPDY session ended"),
            _ => debug!(
                ?read_result,
                ?write_result,
                "SPDY session ended with an error"
            ),
        }
        read_result.and(write_result)
    }

    async fn read_loop<R: AsyncRead + Unpin>(
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
                            // Not enforced, see the module docs.
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
        let state = Arc::new(StreamState {
            id: stream_id,
            headers,
            reset: AtomicBool::new(false),
            reset_status: AtomicU32::new(0),
            local_fin: AtomicBool::new(unidirectional),
            remote_fin: AtomicBool::new(fin),
            unacked: AtomicU32::new(0),
            window_update_queued: AtomicBool::new(false),
            recv_buffer: Arc::new(Semaphore::new(config.stream_receive_buffer as usize)),
        });
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
        let guard = Arc::new(DropGuard {
            state: state.clone(),
            urgent: self.urgent_tx.clone(),
        });
        let window_update_threshold = if config.send_window_updates {
            (config.stream_receive_buffer / 2).max(1)
        } else {
            0
        };
        Stream {
            recv: RecvStream {
                state: state.clone(),
                rx: inbound_rx,
                pending: Bytes::new(),
                urgent: self.urgent_tx.clone(),
                window_update_threshold,
                _guard: guard.clone(),
            },
            send: SendStream {
                state,
                tx: PollSender::new(self.data_tx.clone()),
                urgent: self.urgent_tx.clone(),
                max_chunk: config.max_data_chunk,
                _guard: guard,
            },
        }
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

fn trace_frame(direction: &'static str, frame: &Frame) {
    match frame {
        // Payloads can be large; log their size only.
        Frame::Data {
            stream_id,
            fin,
            data,
        } => trace!(direction, stream_id, fin, len = data.len(), "SPDY DATA"),
        other => trace!(direction, frame = ?other, "SPDY control frame"),
    }
}

struct Writer {
    shared: Arc<Shared>,
    codec: Codec,
    buf: BytesMut,
    urgent_rx: mpsc::UnboundedReceiver<Out>,
    ctrl_rx: mpsc::Receiver<Frame>,
    data_rx: mpsc::Receiver<Out>,
}

impl Writer {
    async fn run<W: AsyncWrite + Unpin>(mut self, mut wr: W) -> Result<(), Error> {
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
