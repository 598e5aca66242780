//! Machinery every PodProvider service shares, so that a provider crate holds only its cloud's
//! mapping and client.
//!
//! - [`listen`]: where a provider listens (TCP or a unix socket), parsed from one flag.
//! - [`server`]: the gRPC server with `grpc.health.v1`, reflection v1 and v1alpha, graceful shutdown.
//! - [`tls`]: TLS and mutual TLS for the gRPC link, certificates re-read when their files change.
//! - [`shutdown`]: a future that completes on SIGTERM or Ctrl-C.
//! - [`logging`]: `tracing` set-up with text or JSON output.
//! - [`status_loop`]: the poll-diff-push status hub behind `WatchPods`, `GetPod` and `ListPods`.
//! - [`service`]: the one `PodProvider` implementation, generic over a provider's [`Cloud`].
//! - [`rpc`]: pod-reference checks and the RPCs answered from the status hub alone.
//! - [`retry`]: backoff with jitter for cloud calls, honouring Retry-After.
//! - [`cloud_error`]: the kinds of failed cloud calls, which are retried, and their gRPC codes.
//! - [`resources`]: a pod's total CPU and memory, rounding to cloud sizes.
//! - [`naming`]: deterministic resource names and identity tags.
//! - [`log_follow`]: container logs (and `follow` by polling) for clouds whose log API answers text.
//! - [`uid_lock`]: one create or delete per pod UID at a time.
//! - [`pod_spec`]: effective security settings, Secret-built commands, extended resources.
#![forbid(unsafe_code)]

#[cfg(feature = "arbitrary")]
pub mod arbitrary;
pub mod cloud_error;
pub mod listen;
pub mod log_follow;
pub mod log_share;
pub mod logging;
pub mod naming;
pub mod pod_spec;
pub mod resources;
pub mod retry;
pub mod rpc;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod status_loop;
pub mod tls;
pub mod uid_lock;

pub use cloud_error::CloudError;
pub use listen::ListenAddr;
pub use server::{
    BoxError, Cli, PollTask, ServerArgs, main, run, serve, serve_args, serve_metrics,
};
pub use service::{Cloud, Invalid, Notice, PodService, Streamed};
