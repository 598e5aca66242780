//! aci-emulator: an HTTP server that behaves like ARM's `Microsoft.ContainerInstance/containerGroups`
//! API plus Azure AD's token endpoints, written from Microsoft's REST reference, for tests.
//! See README.md for the endpoints, the simulated container behaviour and the deviations.

mod aad;
mod admin;
mod arm;
mod exec;
mod lifecycle;
mod metrics;
mod model;
mod state;
mod validate;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;

use crate::state::{AppState, Config};

/// Command-line flags (each also readable from the environment).
#[derive(Parser, Debug)]
#[command(
    name = "aci-emulator",
    about = "Azure Container Instances + Azure AD emulator for tests"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "ACI_EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The one subscription the emulator knows.
    #[arg(long, default_value = "00000000-0000-0000-0000-000000000001")]
    subscription_id: String,
    /// The one resource group the emulator knows.
    #[arg(long, default_value = "vk-rg")]
    resource_group: String,
    /// Azure AD tenant accepted by the token endpoint.
    #[arg(long, default_value = "00000000-0000-0000-0000-0000000000aa")]
    tenant_id: String,
    /// Application (client) id accepted by the token endpoint.
    #[arg(long, default_value = "vk-client")]
    client_id: String,
    /// Client secret accepted by the token endpoint.
    #[arg(
        long,
        env = "ACI_EMULATOR_CLIENT_SECRET",
        default_value = "vk-client-secret",
        hide_env_values = true
    )]
    client_secret: String,
    /// Workload-identity assertion (`client_assertion`) accepted by the token endpoint.
    #[arg(
        long,
        env = "ACI_EMULATOR_FEDERATED_TOKEN",
        default_value = "vk-federated-token",
        hide_env_values = true
    )]
    federated_token: String,
    /// Location reported for groups whose PUT body has none.
    #[arg(long, default_value = "westeurope")]
    location: String,
    /// Time a new group spends in provisioningState `Creating`.
    #[arg(long, default_value_t = 300)]
    provisioning_delay_ms: u64,
    /// Interval between the `heartbeat <n>` log lines of a running container.
    #[arg(long, default_value_t = 2000)]
    log_heartbeat_ms: u64,
    /// Lifetime of issued access tokens.
    #[arg(long, default_value_t = 3600)]
    token_lifetime_secs: u64,
    /// Probability (0..=1) that an ARM request is throttled with 429.
    #[arg(long, default_value_t = 0.0)]
    throttle_rate: f64,
    /// `Retry-After` seconds sent with 429.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let config = Config {
        subscription_id: args.subscription_id,
        resource_group: args.resource_group,
        tenant_id: args.tenant_id,
        client_id: args.client_id,
        client_secret: args.client_secret,
        federated_token: args.federated_token,
        location: args.location,
        provisioning_delay: Duration::from_millis(args.provisioning_delay_ms),
        heartbeat: Duration::from_millis(args.log_heartbeat_ms.max(1)),
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        retry_after_secs: args.retry_after_secs,
        base_url: format!("http://{addr}"),
    };
    let state = Arc::new(AppState::new(config, args.throttle_rate));
    tokio::spawn(lifecycle::run_ticker(state.clone()));
    let app = axum::Router::new()
        .merge(admin::routes())
        .merge(aad::routes())
        .merge(exec::routes())
        .fallback(arm::handle)
        .with_state(state);
    tracing::info!("listening on http://{addr}");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

/// SIGTERM or Ctrl-C: stop serving so exec processes are dropped (and killed) with their tasks.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
