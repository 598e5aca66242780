//! The gRPC server every provider runs: its `PodProvider`, `grpc.health.v1` and server reflection
//! (v1 and v1alpha, since grpcurl 1.8 speaks only v1alpha), on TCP or a unix socket, stopping
//! gracefully on a shutdown future.

use std::{future::Future, io};

use clap::Args;
use podprovider_proto::{FILE_DESCRIPTOR_SET, MAX_MESSAGE_BYTES, PodProvider, PodProviderServer};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;

use prometheus_client::registry::Registry;
use vk_telemetry::grpc::{GrpcLayer, GrpcMetrics, Side};

use crate::{ListenAddr, logging::LogFormat};

/// Flags every provider binary takes (flatten into its clap parser).
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// Where to serve gRPC: HOST:PORT, tcp://HOST:PORT or unix:/PATH.
    #[arg(long, env = "PROVIDER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: ListenAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Where Prometheus metrics are served (`GET /metrics`), HOST:PORT; off when unset.
    #[arg(long, env = "PROVIDER_METRICS_ADDRESS")]
    pub metrics_address: Option<std::net::SocketAddr>,
}

/// Serves `registry` on `args.metrics_address` when set (bound before returning, so a taken port
/// fails at start).
pub async fn serve_metrics(args: &ServerArgs, registry: Registry) -> Result<(), Error> {
    if let Some(addr) = args.metrics_address {
        vk_telemetry::metrics::serve(
            addr,
            std::sync::Arc::new(registry),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .map_err(|source| Error::Bind {
            addr: ListenAddr::Tcp(addr),
            source,
        })?;
    }
    Ok(())
}

/// Errors from starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listening socket could not be created.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where we tried to listen.
        addr: ListenAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// The reflection service could not be built from the descriptor sets.
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed while running.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `provider` on `addr` until `shutdown` completes, then drains in-flight calls.
///
/// Health reports SERVING for the whole server and for `podprovider.v1.PodProvider` while running,
/// and NOT_SERVING once shutdown begins. Every call is a server span whose parent is the caller's
/// `traceparent`, and is counted in `metrics` when given.
pub async fn serve<P, F>(
    provider: P,
    addr: &ListenAddr,
    metrics: Option<GrpcMetrics>,
    shutdown: F,
) -> Result<(), Error>
where
    P: PodProvider,
    F: Future<Output = ()> + Send + 'static,
{
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<PodProviderServer<P>>().await;

    let reflection_v1 = reflection_builder().build_v1()?;
    let reflection_v1alpha = reflection_builder().build_v1alpha()?;

    let pod_provider = PodProviderServer::new(provider)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let router = Server::builder()
        .layer(GrpcLayer::new(Side::Server, metrics))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(pod_provider);

    let stopping = async move {
        shutdown.await;
        health.set_not_serving::<PodProviderServer<P>>().await;
    };

    let bind_err = |source| Error::Bind {
        addr: addr.clone(),
        source,
    };
    match addr {
        ListenAddr::Tcp(sock) => {
            let listener = TcpListener::bind(sock).await.map_err(bind_err)?;
            let local = listener.local_addr().map_err(bind_err)?;
            tracing::info!(listen = %local, "serving podprovider.v1.PodProvider");
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping)
                .await?;
        }
        ListenAddr::Unix(path) => {
            // A socket file left by a killed predecessor would make bind fail; anything that is
            // not a socket (a mistyped path to someone's file) is left alone.
            use std::os::unix::fs::{FileTypeExt, PermissionsExt};
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_socket() => {
                    std::fs::remove_file(path).map_err(bind_err)?;
                }
                Ok(_) => {
                    return Err(bind_err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "the path exists and is not a socket; refusing to replace it",
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(bind_err(e)),
            }
            let listener = UnixListener::bind(path).map_err(bind_err)?;
            // Only this user (the shim beside it runs as the same user) may connect: whoever
            // reaches the socket can create workloads in the cloud account.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(bind_err)?;
            tracing::info!(listen = %addr, "serving podprovider.v1.PodProvider");
            let result = router
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopping)
                .await;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(path);
            }
            result?;
        }
    }
    tracing::info!("server stopped");
    Ok(())
}

/// What a provider's `main` does after parsing its flags: set up logs, traces and metrics, serve
/// until SIGTERM or Ctrl-C, drain, flush, return.
pub async fn run<P: PodProvider>(
    service: &str,
    provider: P,
    args: &ServerArgs,
) -> Result<(), Error> {
    let _telemetry = crate::logging::init(service, args.log_format, &args.log_filter);
    let mut registry = Registry::default();
    let metrics = GrpcMetrics::register(&mut registry, "server");
    serve_metrics(args, registry).await?;
    serve(
        provider,
        &args.listen,
        Some(metrics),
        crate::shutdown::signal(),
    )
    .await
}

/// Reflection describes the contract, health, and reflection itself (so `list` shows all three).
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}
