//! The AWS side of a pod's trace: an SDK interceptor that sends the current span's W3C
//! `traceparent` with each HTTP request and records the request on the span (method, URL, status,
//! AWS request id). The URL carries no credentials: SigV4 signs in headers, which are not recorded.
//! Being on every client, it also caps answers at [`MAX_ANSWER_BYTES`]: a larger declared length
//! is refused unread, and a body sent without one is cut off at the cap.

use aws_sdk_ecs::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{
        BeforeDeserializationInterceptorContextMut, BeforeDeserializationInterceptorContextRef,
        BeforeTransmitInterceptorContextMut,
    },
};
use aws_sdk_ecs::error::BoxError;
use aws_smithy_types::body::SdkBody;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Most bytes of an AWS answer read into memory. The SDK reads whole answers with no limit of its
/// own (aws-smithy-runtime `orchestrator/http.rs` `read_body`), so the interceptor refuses a
/// larger declared `Content-Length` before any of it is read, and counts the bytes of a body
/// without one (chunked), stopping at the cap.
pub const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// An answer over [`MAX_ANSWER_BYTES`].
#[derive(Debug, thiserror::Error)]
pub enum AnswerTooLarge {
    /// Its `Content-Length`.
    #[error("the answer declares {0} bytes, more than {MAX_ANSWER_BYTES}: refusing to read it")]
    Declared(u64),
    /// Sent without a length, it went on past the cap.
    #[error(
        "the answer, sent without a length, went on past {MAX_ANSWER_BYTES} bytes: stopped reading it"
    )]
    Streamed,
}

/// `body` cut off with [`AnswerTooLarge::Streamed`] once more than [`MAX_ANSWER_BYTES`] of it came.
fn capped(body: SdkBody) -> SdkBody {
    let limited = Limited::new(
        body,
        usize::try_from(MAX_ANSWER_BYTES).unwrap_or(usize::MAX),
    )
    .map_err(|e| -> BoxError {
        if e.is::<LengthLimitError>() {
            Box::new(AnswerTooLarge::Streamed)
        } else {
            e
        }
    });
    SdkBody::from_body_1_x(limited)
}

/// Adds trace context and request attributes to every AWS call of a client it is installed on,
/// and refuses answers over [`MAX_ANSWER_BYTES`].
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContext;

impl Intercept for TraceContext {
    fn name(&self) -> &'static str {
        "TraceContext"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let span = tracing::Span::current();
        let request = context.request_mut();
        let mut headers = http::HeaderMap::new();
        vk_telemetry::propagation::inject(&span, &mut headers);
        for (name, value) in &headers {
            if let Ok(value) = value.to_str() {
                request
                    .headers_mut()
                    .insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        span.set_attribute("http.request.method", request.method().to_owned());
        span.set_attribute("url.full", request.uri().to_owned());
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The SDK reads the body right after the interceptors, wrapped or not.
        let body = context.response_mut().body_mut();
        let inner = std::mem::replace(body, SdkBody::taken());
        *body = capped(inner);
        Ok(())
    }

    fn read_before_deserialization(
        &self,
        context: &BeforeDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let span = tracing::Span::current();
        let response = context.response();
        span.set_attribute(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
        let id = response
            .headers()
            .get("x-amzn-requestid")
            .or_else(|| response.headers().get("x-amz-request-id"));
        if let Some(id) = id {
            span.set_attribute("aws.request_id", id.to_owned());
        }
        // Before deserialization reads the body: a huge declared answer is never read.
        let declared = response
            .headers()
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(declared) = declared.filter(|n| *n > MAX_ANSWER_BYTES) {
            return Err(Box::new(AnswerTooLarge::Declared(declared)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicU64, Ordering},
        },
        time::{Duration, Instant},
    };

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server for one connection at a time: reads a request head, answers `head` then waits.
    async fn serve(head: &'static str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 8192];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let _ = sock.write_all(head.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
            }
        });
        addr
    }

    /// An ECS client as main.rs builds it: this interceptor installed.
    fn ecs(addr: std::net::SocketAddr) -> aws_sdk_ecs::Client {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(format!("http://{addr}"))
            .credentials_provider(aws_sdk_ecs::config::SharedCredentialsProvider::new(
                aws_sdk_ecs::config::Credentials::new("k", "s", None, None, "t"),
            ))
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_ecs::Client::from_conf(
            aws_sdk_ecs::config::Builder::from(&sdk)
                .interceptor(TraceContext)
                .build(),
        )
    }

    #[tokio::test]
    async fn an_answer_declaring_more_than_the_cap_is_refused_unread() {
        // 1 TiB declared, none of it sent: reading it would hang or take the memory.
        let addr = serve(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 1099511627776\r\n\r\n{",
        )
        .await;
        let started = Instant::now();
        let err = ecs(addr)
            .describe_tasks()
            .cluster("vk")
            .tasks("arn:t")
            .send()
            .await
            .expect_err("too large");
        let err = crate::error::from_sdk("DescribeTasks", err);
        assert_eq!(err.code, "AnswerTooLarge", "{err}");
        assert!(err.message.contains("more than 16777216"), "{err}");
        assert_eq!(err.kind, crate::error::Kind::Other, "not retried");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// A server for one connection: reads a request head, answers 200 with a chunked body of
    /// `body` (`None`: 1 GiB of spaces, endless next to the cap, yet a bounded loss for a client
    /// without one) in 1 MiB chunks; counts the body bytes it got out.
    async fn serve_chunked(body: Option<Vec<u8>>, sent: Arc<AtomicU64>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut buf).await {
                    Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
            if sock.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let endless = vec![b' '; 1 << 20];
            let mut chunks: Box<dyn Iterator<Item = &[u8]> + Send> = match &body {
                Some(b) => Box::new(b.chunks(1 << 20)),
                None => Box::new(std::iter::repeat_n(&endless[..], 1024)),
            };
            for chunk in &mut chunks {
                let ok = sock
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .is_ok()
                    && sock.write_all(chunk).await.is_ok()
                    && sock.write_all(b"\r\n").await.is_ok();
                if !ok {
                    return;
                }
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            let _ = sock.write_all(b"0\r\n\r\n").await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        addr
    }

    #[tokio::test]
    async fn an_endless_chunked_answer_is_cut_off_at_the_cap() {
        // No length, no end: without the cap the SDK would read until the 60 s operation
        // deadline, holding all of it (a loopback server sends gigabytes in that time).
        let sent = Arc::new(AtomicU64::new(0));
        let addr = serve_chunked(None, sent.clone()).await;
        let started = Instant::now();
        let call = ecs(addr)
            .describe_tasks()
            .cluster("vk")
            .tasks("arn:t")
            .send();
        let err = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("ended quickly")
            .expect_err("too large");
        let err = crate::error::from_sdk("DescribeTasks", err);
        assert_eq!(err.code, "AnswerTooLarge", "{err}");
        assert!(
            err.message.contains("without a length") && err.message.contains("16777216"),
            "{err}"
        );
        assert_eq!(err.kind, crate::error::Kind::Other, "not retried");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        // The client stopped reading near the cap (plus what socket buffers hold), so what it
        // held was bounded by the cap, not by what the server would send.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let sent = sent.load(Ordering::Relaxed);
        assert!(sent < MAX_ANSWER_BYTES + (16 << 20), "{sent} bytes sent");
    }

    #[tokio::test]
    async fn a_chunked_answer_at_the_cap_is_read() {
        let mut body = b"{\"tasks\":[]}".to_vec();
        body.resize(usize::try_from(MAX_ANSWER_BYTES).expect("fits"), b' ');
        let addr = serve_chunked(Some(body), Arc::new(AtomicU64::new(0))).await;
        let out = ecs(addr)
            .describe_tasks()
            .cluster("vk")
            .tasks("arn:t")
            .send()
            .await
            .expect("read");
        assert!(out.tasks().is_empty());
    }

    #[tokio::test]
    async fn an_answer_within_the_cap_is_read() {
        let addr = serve(
            "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: 12\r\n\r\n{\"tasks\":[]}",
        )
        .await;
        let out = ecs(addr)
            .describe_tasks()
            .cluster("vk")
            .tasks("arn:t")
            .send()
            .await
            .expect("read");
        assert!(out.tasks().is_empty());
    }
}
