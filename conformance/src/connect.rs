//! Channels to the provider under test: `http://HOST:PORT` or `unix:/PATH`, nothing else.

use std::time::Duration;

use podprovider_proto::{MAX_MESSAGE_BYTES, PodProviderClient};
use tonic::transport::{Channel, Endpoint};

use crate::Error;

/// A lazily connecting channel: it reconnects by itself after the provider restarts.
pub fn channel(endpoint: &str) -> Result<Channel, Error> {
    let bad = |reason: &str| Error::Endpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(path) = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(bad("empty socket path"));
        }
        let path = path.to_owned();
        // The URI only fills the :authority header; the connector ignores it.
        return Ok(Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            })));
    }
    if endpoint.starts_with("http://") {
        return Ok(Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| bad(&e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy());
    }
    Err(bad("expected http://HOST:PORT or unix:/PATH"))
}

/// A PodProvider client that sends and accepts messages as large as the shim does.
pub fn client(channel: &Channel) -> PodProviderClient<Channel> {
    PodProviderClient::new(channel.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}
