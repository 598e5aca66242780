//! One HTTP/1.1 client (hyper + rustls with the system's roots) for ARM, Azure AD and IMDS, and
//! the TLS settings the exec WebSocket reuses.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::error::AzureError;

/// Longest time one request may take (a slow ARM call is retried by the caller).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of one answer read into memory (ARM pages are a few MB at most): a larger declared
/// `Content-Length` is refused unread, a longer body is cut off at the cap. Not retried: the
/// same request would get the same answer.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// The error for an answer over [`MAX_ANSWER_BYTES`].
fn too_large(op: &'static str) -> AzureError {
    crate::error::failed(
        op,
        crate::error::Kind::Other,
        "AnswerTooLarge",
        format!("the answer is larger than {MAX_ANSWER_BYTES} bytes: refusing to read it"),
    )
    .with_status(200)
}

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
            .map_err(|e| crate::error::transport(op, format!("bad request: {e}")))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| crate::error::transport(op, format!("cannot reach Azure: {e}")))?;
            let (parts, body) = resp.into_parts();
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
                return Err(too_large(op));
            }
            let body = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<LengthLimitError>() {
                        too_large(op)
                    } else {
                        crate::error::transport(op, format!("response cut short: {e}"))
                    }
                })?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| crate::error::transport(op, "the request timed out"))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use tokio::io::AsyncWriteExt;

    use vk_testkit::http_stub::{endless_chunked, serve_once, stall_after};

    use super::*;

    async fn get(addr: std::net::SocketAddr) -> Result<Reply, AzureError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http::new()
            .send(
                "ContainerGroups_ListByResourceGroup",
                Method::GET,
                &format!("http://{addr}/subscriptions/s"),
                Vec::new(),
                None,
            )
            .await
    }

    #[tokio::test]
    async fn a_huge_declared_body_is_refused_unread() {
        let addr = stall_after("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1099511627776\r\n\r\n")
        .await
        .expect("stub");
        let started = std::time::Instant::now();
        let err = get(addr).await.expect_err("too large");
        assert_eq!(err.code, "AnswerTooLarge", "{err}");
        assert!(err.message.contains("larger than 16777216 bytes"), "{err}");
        assert_eq!(err.kind, crate::error::Kind::Other, "not retried");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_huge_chunked_body_is_cut_off_at_the_cap() {
        // No length given: 1 MiB chunks until the client hangs up.
        let (addr, sent) = endless_chunked().await.expect("stub");
        let err = get(addr).await.expect_err("too large");
        assert_eq!(err.code, "AnswerTooLarge", "{err}");
        assert!(err.to_string().contains("larger than"), "{err}");
        // The client stopped reading near the cap (plus what the socket buffers held), so
        // memory held was bounded by the cap, not by what the server would send.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent < MAX_ANSWER_BYTES + (16 << 20), "{sent} bytes sent");
    }

    #[tokio::test]
    async fn an_answer_at_the_cap_is_read() {
        let addr = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16777216\r\n\r\n",
            |mut sock| async move {
                let body = vec![b' '; MAX_ANSWER_BYTES];
                let _ = sock.write_all(&body).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            },
        )
        .await
        .expect("stub");
        let reply = get(addr).await.expect("at the cap");
        assert_eq!(reply.body.len(), MAX_ANSWER_BYTES);
    }
}
