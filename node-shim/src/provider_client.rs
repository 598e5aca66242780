//! The gRPC connection to the provider: `http(s)://` or `unix:` endpoints, connected lazily so the
//! shim starts (and reports NotReady) while the provider is still down. `https://` verifies the
//! provider against `--provider-ca-file` and presents `--provider-cert-file` (mutual TLS); the
//! client certificate is re-read when its files change, for the next connection.

use std::{path::PathBuf, sync::Arc, time::Duration};

use podprovider_proto::{MAX_MESSAGE_BYTES, PodProviderClient};
use tonic::transport::{Channel, Endpoint};
use tower::Layer;
use vk_telemetry::grpc::{GrpcLayer, GrpcMetrics, GrpcService, Side};

/// A provider client; cheap to clone (one shared HTTP/2 connection). Every call gets a client
/// span carrying `traceparent` and is counted ([`vk_telemetry::grpc`]).
pub type ProviderClient = PodProviderClient<GrpcService<Channel>>;

/// The endpoint string could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid provider endpoint {endpoint:?}: {reason}")]
pub struct EndpointError {
    endpoint: String,
    reason: String,
}

/// TLS files for an `https://` provider endpoint.
#[derive(Clone, Debug, Default)]
pub struct ProviderTls {
    /// CA bundle the provider's serving certificate must chain to.
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to the provider.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
}

/// Builds a lazily connecting client for `endpoint` (`http://HOST:PORT` or `unix:/PATH`), with
/// `timeout` on every call, counting calls into `metrics` when given.
pub fn connect(
    endpoint: &str,
    timeout: Duration,
    metrics: Option<GrpcMetrics>,
) -> Result<ProviderClient, EndpointError> {
    connect_tls(endpoint, &ProviderTls::default(), timeout, metrics)
}

/// Like [`connect`], also accepting `https://HOST:PORT` with `tls` (its CA file required).
/// Must be called within a tokio runtime (the client certificate's files are watched).
pub fn connect_tls(
    endpoint: &str,
    tls: &ProviderTls,
    timeout: Duration,
    metrics: Option<GrpcMetrics>,
) -> Result<ProviderClient, EndpointError> {
    let err = |reason: String| EndpointError {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let tls_given = tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some();
    if tls_given && !endpoint.starts_with("https://") {
        return Err(err(
            "--provider-ca-file, --provider-cert-file and --provider-key-file need an https:// endpoint"
                .into(),
        ));
    }
    let channel = if let Some(path) = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(err("empty socket path".into()));
        }
        let path = path.to_owned();
        // The URI is only used for the :authority header; the connector ignores it.
        Endpoint::from_static("http://localhost")
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        https_channel(rest, tls, timeout).map_err(err)?
    } else if endpoint.starts_with("http://") {
        Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| err(e.to_string()))?
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect_lazy()
    } else {
        return Err(err(
            "expected http://HOST:PORT, https://HOST:PORT or unix:/PATH".into(),
        ));
    };
    let channel = GrpcLayer::new(Side::Client, metrics).layer(channel);
    Ok(PodProviderClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// A channel to `authority` (`HOST:PORT`, after `https://`) over rustls.
fn https_channel(authority: &str, tls: &ProviderTls, timeout: Duration) -> Result<Channel, String> {
    let Some(ca) = tls.ca_file.as_deref() else {
        return Err(
            "https needs --provider-ca-file (the CA that signed the provider's certificate)".into(),
        );
    };
    let cert_key = match (tls.cert_file.as_deref(), tls.key_file.as_deref()) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err("--provider-cert-file and --provider-key-file go together".into()),
    };
    // The connector does TLS itself, so tonic sees an http:// URI: with tonic's own TLS
    // features enabled anywhere in the build, an https:// URI would demand tonic's TLS config.
    let uri: http::Uri = format!("http://{}", authority.trim_end_matches('/'))
        .parse()
        .map_err(|e| format!("{e}"))?;
    let host = uri.host().ok_or("no host")?.to_owned();
    // An IPv6 literal comes bracketed in a URI; the certificate names the bare address.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let server_name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|e| format!("host {host:?}: {e}"))?;
    let config = provider_common::tls::client_config(ca, cert_key).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_shared(uri.to_string())
        .map_err(|e| e.to_string())?
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_with_connector_lazy(tower::service_fn(move |_| {
            let (connector, server_name, host) =
                (connector.clone(), server_name.clone(), host.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let stream = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }));
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints() {
        let t = Duration::from_secs(1);
        assert!(connect("http://127.0.0.1:50051", t, None).is_ok());
        assert!(connect("unix:/run/provider.sock", t, None).is_ok());
        let no_ca = ProviderTls::default();
        let err = connect_tls("https://p:1", &no_ca, t, None).expect_err("no CA");
        assert!(err.to_string().contains("--provider-ca-file"), "{err}");
        let ca_only = ProviderTls {
            ca_file: Some("/ca.crt".into()),
            ..Default::default()
        };
        let err = connect_tls("http://p:1", &ca_only, t, None).expect_err("TLS files on http");
        assert!(err.to_string().contains("need an https://"), "{err}");
        for bad in ["unix:", "127.0.0.1:50051", "grpc://x"] {
            let err = connect(bad, t, None).expect_err(bad).to_string();
            assert!(err.contains("invalid provider endpoint"), "{err}");
        }
    }
}
