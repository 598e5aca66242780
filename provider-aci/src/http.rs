//! One HTTP/1.1 client (hyper + rustls with the system's roots) for ARM, Azure AD and IMDS, and
//! the TLS settings the exec WebSocket reuses.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::error::AzureError;

/// Longest time one request may take (a slow ARM call is retried by the caller).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response: status, headers, whole body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// The shared client.
#[derive(Clone)]
pub struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// TLS settings (system roots), also used for `wss://` exec sessions.
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").finish_non_exhaustive()
    }
}

impl Http {
    /// A client trusting the system's root certificates.
    pub fn new() -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A certificate the store cannot parse is skipped; the rest still work.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            tracing::warn!("no system root certificates found: https endpoints will fail");
        }
        let tls = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self { client, tls }
    }

    /// Sends one request; `op` names it in errors. Only transport failures are errors here: HTTP
    /// error statuses come back as a `Reply` for the caller to classify.
    pub async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: &str,
        headers: Vec<(header::HeaderName, HeaderValue)>,
        body: Option<Bytes>,
    ) -> Result<Reply, AzureError> {
        let mut req = Request::builder().method(method).uri(url);
        if let Some(h) = req.headers_mut() {
            for (k, v) in headers {
                h.insert(k, v);
            }
            // The caller's trace continues in Azure's request logs.
            vk_telemetry::propagation::inject_current(h);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| AzureError::transport(op, format!("bad request: {e}")))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| AzureError::transport(op, format!("cannot reach Azure: {e}")))?;
            let (parts, body) = resp.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| AzureError::transport(op, format!("response cut short: {e}")))?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| AzureError::transport(op, "the request timed out"))?
    }
}
