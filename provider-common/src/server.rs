//! The gRPC server every provider runs: its `PodProvider`, `grpc.health.v1` and server reflection
//! (v1 and v1alpha, since grpcurl 1.8 speaks only v1alpha), on TCP or a unix socket, stopping
//! gracefully on a shutdown future; over TLS (optionally mutual) when given a certificate.

use std::{future::Future, io, path::PathBuf, pin::Pin, sync::Arc, task};

use clap::Args;
use podprovider_proto::{FILE_DESCRIPTOR_SET, MAX_MESSAGE_BYTES, PodProvider, PodProviderServer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream, UnixListener},
};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream, UnixListenerStream};
use tonic::transport::{
    Server,
    server::{Connected, TcpConnectInfo},
};

use prometheus_client::registry::Registry;
use vk_telemetry::grpc::{GrpcLayer, GrpcMetrics, Side};

use crate::{
    ListenAddr,
    logging::LogFormat,
    service::{Cloud, PodService},
    tls::{ServerTls, TlsError},
};

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

    /// PEM certificate (chain) to serve gRPC over TLS with; re-read when the file changes.
    #[arg(
        long,
        env = "PROVIDER_TLS_CERT_FILE",
        requires = "tls_private_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of `--tls-cert-file`; re-read when the file changes.
    #[arg(
        long,
        env = "PROVIDER_TLS_PRIVATE_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_private_key_file: Option<PathBuf>,

    /// CA bundle that must sign the client's certificate (mutual TLS); without it any client
    /// that reaches the port is served.
    #[arg(long, env = "PROVIDER_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub client_ca_file: Option<PathBuf>,

    /// Only clients whose certificate's subject alternative names hold one of these DNS names or
    /// IPs are served (comma-separated in env); any certificate the client CA signed when unset.
    #[arg(
        long,
        env = "PROVIDER_ALLOWED_CLIENT_NAMES",
        value_delimiter = ',',
        requires = "client_ca_file"
    )]
    pub allowed_client_names: Vec<String>,

    /// Serve plaintext gRPC, without client authentication, on a TCP address other than loopback.
    /// Whoever reaches the port can then create workloads and exec in the cloud account: only
    /// for networks where something else (a service mesh, a NetworkPolicy) authenticates peers.
    #[arg(long, env = "PROVIDER_INSECURE_PLAINTEXT_LISTEN")]
    pub insecure_plaintext_listen: bool,
}

impl ServerArgs {
    /// The TLS settings, when `--tls-cert-file` is set.
    pub fn tls(&self) -> Option<ServerTls> {
        Some(ServerTls {
            cert_file: self.tls_cert_file.clone()?,
            key_file: self.tls_private_key_file.clone()?,
            client_ca_file: self.client_ca_file.clone(),
            allowed_client_names: self.allowed_client_names.clone(),
        })
    }

    /// Refuses listening where anyone could drive the cloud account: a TCP address other than
    /// loopback needs mutual TLS (`--tls-cert-file` and `--client-ca-file`) unless
    /// `--insecure-plaintext-listen` says otherwise; TLS on a unix socket is refused as a
    /// likely mistake (the socket's file mode is its protection).
    pub fn check_listen(&self) -> Result<(), Error> {
        match &self.listen {
            ListenAddr::Unix(_) if self.tls_cert_file.is_some() => Err(Error::Insecure(
                "TLS flags apply to TCP listens; a unix socket is protected by its file \
                 permissions: drop --tls-cert-file or listen on HOST:PORT"
                    .into(),
            )),
            ListenAddr::Tcp(addr)
                if !addr.ip().is_loopback()
                    && self.client_ca_file.is_none()
                    && !self.insecure_plaintext_listen =>
            {
                let what = if self.tls_cert_file.is_some() {
                    "TLS without --client-ca-file authenticates no client"
                } else {
                    "plaintext gRPC authenticates no client"
                };
                Err(Error::Insecure(format!(
                    "refusing to listen on {addr}: {what}, and anyone who reaches a non-loopback \
                     address could create workloads in the cloud account. Give \
                     --tls-cert-file, --tls-private-key-file and --client-ca-file (mutual TLS), \
                     listen on 127.0.0.1 or a unix socket, or pass --insecure-plaintext-listen \
                     if the network authenticates peers"
                )))
            }
            _ => Ok(()),
        }
    }
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
    /// The listen address and TLS flags would expose the provider unauthenticated.
    #[error("{0}")]
    Insecure(String),
    /// The TLS files or flags are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The provider could not be built (its flags, credentials or cloud client).
    #[error(transparent)]
    Start(BoxError),
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
    serve_tls(provider, addr, None, metrics, shutdown).await
}

/// Like [`serve`], where and how `args` say: checks the listen address against the TLS flags
/// ([`ServerArgs::check_listen`]) and serves TLS when `--tls-cert-file` is set.
pub async fn serve_args<P, F>(
    provider: P,
    args: &ServerArgs,
    metrics: Option<GrpcMetrics>,
    shutdown: F,
) -> Result<(), Error>
where
    P: PodProvider,
    F: Future<Output = ()> + Send + 'static,
{
    args.check_listen()?;
    serve_tls(
        provider,
        &args.listen,
        args.tls().as_ref(),
        metrics,
        shutdown,
    )
    .await
}

/// Like [`serve`], over TLS on a TCP address when `tls` is given.
pub async fn serve_tls<P, F>(
    provider: P,
    addr: &ListenAddr,
    tls: Option<&ServerTls>,
    metrics: Option<GrpcMetrics>,
    shutdown: F,
) -> Result<(), Error>
where
    P: PodProvider,
    F: Future<Output = ()> + Send + 'static,
{
    // Read the files before binding, so a bad certificate fails at start.
    let tls_config = tls.map(ServerTls::server_config).transpose()?;
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
            match tls_config {
                Some(config) => {
                    tracing::info!(
                        listen = %local,
                        client_auth = tls.is_some_and(|t| t.client_ca_file.is_some()),
                        "serving podprovider.v1.PodProvider over TLS"
                    );
                    let (incoming, accepting) = tls_incoming(listener, Arc::new(config));
                    let result = router
                        .serve_with_incoming_shutdown(incoming, stopping)
                        .await;
                    accepting.abort();
                    result?;
                }
                None => {
                    tracing::info!(listen = %local, "serving podprovider.v1.PodProvider");
                    router
                        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopping)
                        .await?;
                }
            }
        }
        ListenAddr::Unix(_) if tls_config.is_some() => {
            return Err(Error::Insecure(
                "TLS is served on TCP addresses only".into(),
            ));
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

/// A provider's status poll loop, run in the background while the provider serves and stopped
/// when serving ends.
pub type PollTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Why a provider could not be built (flags, credentials, cloud client): the provider's own error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What every provider's `main` does once its flags are parsed: refuse an exposed listen before
/// any cloud call, set up logs, traces and metrics (gRPC and cloud calls), let `build` make the
/// provider's [`Cloud`] (state rebuilt) and its poll loop, serve metrics and the cloud as a
/// [`PodService`] until SIGTERM or Ctrl-C, drain, then stop the poll loop. `build` gets the
/// metrics registry for metrics of its own.
pub async fn run<C, B>(service: &str, args: &ServerArgs, build: B) -> Result<(), Error>
where
    C: Cloud,
    B: AsyncFnOnce(&mut Registry) -> Result<(C, PollTask), BoxError>,
{
    // A provider may link both ring (ours) and aws-lc (the AWS SDK's): rustls must be told which.
    let _ = rustls::crypto::ring::default_provider().install_default();
    args.check_listen()?;
    let _telemetry = crate::logging::init(service, args.log_format, &args.log_filter);
    let mut registry = Registry::default();
    let metrics = GrpcMetrics::register(&mut registry, "server");
    crate::retry::register_metrics(&mut registry);
    let (cloud, poll) = build(&mut registry).await.map_err(Error::Start)?;
    let poll_loop = tokio::spawn(poll);
    let served = async {
        serve_metrics(args, registry).await?;
        let service = PodService::new(cloud);
        serve_args(service, args, Some(metrics), crate::shutdown::signal()).await
    }
    .await;
    poll_loop.abort();
    served
}

/// Every provider binary's flags: the server's and its cloud's (each with an environment
/// fallback).
#[derive(clap::Parser, Debug)]
pub struct Cli<A: Args> {
    // Where and how to serve (plain comments: clap would read doc comments as help).
    #[command(flatten)]
    pub server: ServerArgs,
    // The cloud's settings.
    #[command(flatten)]
    pub cloud: A,
}

/// A provider binary's whole `main`: its flags parsed (`name`, `version` and `about` as `--help`
/// and `--version` show them; a flag error exits as clap does), then [`run`] with `build`, which
/// gets the cloud's flags.
pub async fn main<A, C, B>(
    name: &'static str,
    version: &'static str,
    about: &'static str,
    build: B,
) -> Result<(), Error>
where
    A: Args + clap::FromArgMatches,
    C: Cloud,
    B: AsyncFnOnce(&A, &mut Registry) -> Result<(C, PollTask), BoxError>,
{
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::<A>::command().name(name).version(version).about(about);
    let cli = Cli::<A>::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    run(name, &cli.server, async |registry: &mut Registry| {
        build(&cli.cloud, registry).await
    })
    .await
}

/// A provider binary's `main`: [`main`] with the crate's name and version, `about` for `--help`,
/// and `build`, an `async fn(&Flags) -> anyhow::Result<(Provider, PollTask)>` over the cloud's
/// flags `Flags`. The binary depends on `tokio` and `anyhow`.
#[macro_export]
macro_rules! provider_main {
    ($about:literal, $flags:ty, $build:path) => {
        #[tokio::main]
        async fn main() -> anyhow::Result<()> {
            let (name, version) = (env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"));
            // Boxed: a cloud SDK's set-up future is deep enough to overflow the compiler's
            // layout query depth once nested in the server's.
            $crate::main(name, version, $about, async |flags: &$flags, _| {
                Ok(Box::pin($build(flags)).await?)
            })
            .await?;
            Ok(())
        }
    };
}

/// How long a client has to finish the TLS handshake; a peer that stalls must not hold a task.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accepts TCP connections and completes TLS handshakes concurrently (a slow or failing client
/// delays no one), yielding the established connections to the gRPC server.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> (
    ReceiverStream<Result<TlsConn, io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accepting = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let info = TcpConnectInfo {
                    local_addr: tcp.local_addr().ok(),
                    remote_addr: Some(peer),
                };
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConn { stream, info })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake refused");
                    }
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    (ReceiverStream::new(rx), accepting)
}

/// An established TLS connection, with the TCP addresses tonic exposes to services.
struct TlsConn {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> task::Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> task::Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> task::Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> task::Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> task::Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Reflection describes the contract, health, and reflection itself (so `list` shows all three).
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}
