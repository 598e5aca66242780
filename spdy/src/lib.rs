//! The server side of SPDY/3.1 as Kubernetes uses it between kube-apiserver
//! (or kubectl) and a kubelet for `exec`, `attach` and `port-forward`.
//!
//! Kubernetes speaks SPDY through Go's `github.com/moby/spdystream`. The
//! client opens every stream (SYN_STREAM with a `streamtype` header such as
//! `stdin`, `stdout`, `stderr`, `error`, `resize`, or for port-forward `data`
//! and `error` with `port` and `requestid`), waits for the server's
//! SYN_REPLY, then exchanges DATA frames and half-closes with FIN.
//!
//! What this crate provides:
//!
//! * [`frame`]: a codec for every SPDY/3.1 frame (SYN_STREAM, SYN_REPLY,
//!   RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE, DATA) with
//!   zlib header compression primed with the SPDY/3 [`DICTIONARY`], one
//!   compression context per direction.
//! * [`Session`]: runs a connection, replies to every SYN_STREAM, hands the
//!   streams out via [`Session::accept`], echoes PINGs, handles GOAWAY and
//!   RST_STREAM, and multiplexes writes through one ordered writer with
//!   bounded buffers in both directions. See [`session`] for back-pressure and
//!   flow-control behaviour (matching spdystream: windows are not enforced).
//! * [`kube`]: constants and helpers for the HTTP upgrade handshake and the
//!   stream headers.
//!
//! What it does not do:
//!
//! * the HTTP/1.1 upgrade itself: the caller answers the request with
//!   `101 Switching Protocols` (see [`kube::upgrade_response_headers`] and
//!   [`kube::negotiate_protocol`]) and passes the upgraded connection (e.g.
//!   `hyper::upgrade::Upgraded` wrapped in `hyper_util::rt::TokioIo`) to
//!   [`Session::new`];
//! * opening streams from the server side, server push, or any HTTP semantics
//!   on streams (no `:method`/`:status` headers; SYN_REPLY carries an empty
//!   header block as spdystream sends it);
//! * the Kubernetes protocols on top (status JSON, resize messages,
//!   port-forward pairing): streams are plain byte pipes;
//! * SPDY/2, the CREDENTIAL frame, or enforcing send-side flow-control
//!   windows.
//!
//! ```no_run
//! # async fn serve(upgraded: tokio::io::DuplexStream) -> Result<(), spdy::Error> {
//! use spdy::{Session, kube};
//!
//! let mut session = Session::new(upgraded);
//! while let Some(mut stream) = session.accept().await {
//!     match stream.stream_type() {
//!         Some(kube::STREAM_TYPE_STDOUT) => {
//!             stream.send(bytes::Bytes::from_static(b"hello\n")).await?;
//!             stream.close().await?;
//!         }
//!         _ => { /* keep, read, or drop (which resets) */ }
//!     }
//! }
//! session.closed().await
//! # }
//! ```

pub mod dictionary;
pub mod frame;
pub mod kube;
pub mod session;

pub use dictionary::{DICTIONARY, DICTIONARY_ID};
pub use frame::{
    Codec, Frame, FrameError, GoAwayStatus, HeaderLimit, Headers, RstStatus, StreamId,
};
pub use session::{Config, Connection, RecvStream, SendStream, Session, Stream};

/// Errors of a [`Session`] and its streams.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("SPDY protocol error: {0}")]
    Frame(#[from] FrameError),
    #[error("SPDY session is closed")]
    SessionClosed,
    #[error("SPDY stream was reset ({0})")]
    StreamReset(RstStatus),
    #[error("SPDY stream is already closed for sending")]
    StreamClosed,
}
