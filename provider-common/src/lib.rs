//! Machinery every PodProvider service shares, so that a provider crate holds only its cloud's
//! mapping and client.
//!
//! - [`listen`]: where a provider listens (TCP or a unix socket), parsed from one flag.
//! - [`server`]: the gRPC server with `grpc.health.v1`, reflection v1 and v1alpha, graceful shutdown.
//! - [`shutdown`]: a future that completes on SIGTERM or Ctrl-C.
//! - [`logging`]: `tracing` set-up with text or JSON output.
#![forbid(unsafe_code)]

pub mod listen;
pub mod logging;
pub mod server;
pub mod shutdown;

pub use listen::ListenAddr;
pub use server::{ServerArgs, run, serve};
