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
//! # Reading order
//!
//! This file holds the public API ([`Config`], [`Session`], the [`Connection`]
//! future) and [`Driver::run`], which runs the reader and the writer
//! side by side. The rest, one job per file:
//!
//! 1. [`stream`]: the handles the application gets ([`Stream`],
//!    [`RecvStream`], [`SendStream`]) and the per-stream state behind them:
//!    the receive buffer, WINDOW_UPDATE accounting, reset on drop;
//! 2. [`shared`]: the session state the reader, the writer and the streams
//!    share: the table of open streams, the session receive budget, GOAWAY and
//!    shutdown;
//! 3. [`reader`]: the read loop, which decodes frames and dispatches them;
//! 4. [`writer`]: what the streams and the reader queue for the writer, and
//!    the write loop that encodes it onto the connection.
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

mod reader;
mod shared;
mod stream;
mod writer;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, trace};

use crate::Error;
use crate::frame::{DEFAULT_MAX_FRAME_SIZE, Frame};

use shared::Shared;
pub use stream::{RecvStream, SendStream, Stream};
use writer::{Out, Writer};

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
        let shared = Arc::new(Shared::new(config));
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

/// Everything the connection task needs besides the channel receivers. Its
/// reading methods are in [`reader`].
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
        let writer = Writer::new(shared.clone(), urgent_rx, ctrl_rx, data_rx);
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
