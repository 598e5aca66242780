//! The AWS side of a pod's trace: an SDK interceptor that sends the current span's W3C
//! `traceparent` with each HTTP request and records the request on the span (method, URL, status,
//! AWS request id). The URL carries no credentials: SigV4 signs in headers, which are not recorded.
//! Being on every client, it also refuses answers that declare more than [`MAX_ANSWER_BYTES`].

use aws_sdk_ecs::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{
        BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
    },
};
use aws_sdk_ecs::error::BoxError;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Most bytes an AWS answer may declare (`Content-Length`); a larger one is refused before any
/// of it is read. The SDK reads whole answers into memory with no limit of its own
/// (aws-smithy-runtime `orchestrator/http.rs` `read_body`), and an interceptor cannot wrap the
/// body without the `aws-smithy-types` crate, so an answer without a length (chunked) is bounded
/// only by the operation's 60 s deadline. AWS's JSON and query answers carry a length.
pub const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// An answer over [`MAX_ANSWER_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("the answer declares {declared} bytes, more than {MAX_ANSWER_BYTES}: refusing to read it")]
pub struct AnswerTooLarge {
    /// The declared `Content-Length`.
    pub declared: u64,
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
            return Err(Box::new(AnswerTooLarge { declared }));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

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
        let err = crate::error::AwsError::from_sdk("DescribeTasks", err);
        assert_eq!(err.code, "AnswerTooLarge", "{err}");
        assert!(err.message.contains("more than 16777216"), "{err}");
        assert_eq!(err.kind, crate::error::Kind::Other, "not retried");
        assert!(started.elapsed() < Duration::from_secs(5));
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
