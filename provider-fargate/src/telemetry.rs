//! The AWS side of a pod's trace: an SDK interceptor that sends the current span's W3C
//! `traceparent` with each HTTP request and records the request on the span (method, URL, status,
//! AWS request id). The URL carries no credentials: SigV4 signs in headers, which are not recorded.

use aws_sdk_ecs::config::{
    ConfigBag, Intercept, RuntimeComponents,
    interceptors::{
        BeforeDeserializationInterceptorContextRef, BeforeTransmitInterceptorContextMut,
    },
};
use aws_sdk_ecs::error::BoxError;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Adds trace context and request attributes to every AWS call of a client it is installed on.
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
        Ok(())
    }
}
