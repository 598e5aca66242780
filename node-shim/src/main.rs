//! `node-shim` binary: parse flags, set up logging, run until SIGTERM or Ctrl-C.

use clap::Parser;
use node_shim::{Config, config::LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Both ring and aws-lc may be linked; rustls needs one chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = Config::parse();
    raise_open_files_limit();
    let telemetry = vk_telemetry::init(
        "node-shim",
        cfg.log_format == LogFormat::Json,
        &cfg.log_filter,
    )?;

    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        }
        trigger.cancel();
    });
    let result = node_shim::run(cfg, shutdown).await;
    telemetry.shutdown();
    Ok(result?)
}

/// Raises the soft limit on open files to the hard limit, as Go programs (the kubelet among them)
/// do at start: every kubelet API connection and every exec stream holds descriptors, and the
/// usual soft limit of 1024 would turn a burst of idle connections into refused requests.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("node-shim: raising the open files limit from {soft} to {hard} failed: {err}");
    }
}
