//! The gRPC connection to the provider: `http(s)://` or `unix:` endpoints, connected lazily so the
//! shim starts (and reports NotReady) while the provider is still down.

use std::time::Duration;

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

/// Builds a lazily connecting client for `endpoint` (`http://HOST:PORT` or `unix:/PATH`), with
/// `timeout` on every call, counting calls into `metrics` when given.
pub fn connect(
    endpoint: &str,
    timeout: Duration,
    metrics: Option<GrpcMetrics>,
) -> Result<ProviderClient, EndpointError> {
    let err = |reason: String| EndpointError {
        endpoint: endpoint.to_owned(),
        reason,
    };
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
    } else if endpoint.starts_with("https://") {
        // The provider runs beside the shim (sidecar, loopback or unix socket); TLS is not built in.
        return Err(err(
            "https is not supported yet: use http://127.0.0.1:PORT or unix:/PATH for the sidecar"
                .into(),
        ));
    } else if endpoint.starts_with("http://") {
        Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| err(e.to_string()))?
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .connect_lazy()
    } else {
        return Err(err("expected http://HOST:PORT or unix:/PATH".into()));
    };
    let channel = GrpcLayer::new(Side::Client, metrics).layer(channel);
    Ok(PodProviderClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn endpoints() {
        let t = Duration::from_secs(1);
        assert!(connect("http://127.0.0.1:50051", t, None).is_ok());
        assert!(connect("unix:/run/provider.sock", t, None).is_ok());
        for bad in ["https://p:1", "unix:", "127.0.0.1:50051", "grpc://x"] {
            let err = connect(bad, t, None).expect_err(bad).to_string();
            assert!(err.contains("invalid provider endpoint"), "{err}");
        }
    }
}
