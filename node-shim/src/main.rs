//! `node-shim` binary: parse flags, set up logging, run until SIGTERM or Ctrl-C.

use std::io::IsTerminal;

use clap::Parser;
use node_shim::{Config, config::LogFormat};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Both ring and aws-lc may be linked; rustls needs one chosen explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = Config::parse();
    let filter = EnvFilter::try_new(&cfg.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    // Colour codes only on a terminal, not in log files and collectors.
    let ansi = std::io::stderr().is_terminal();
    match cfg.log_format {
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
    }

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
    node_shim::run(cfg, shutdown).await?;
    Ok(())
}
