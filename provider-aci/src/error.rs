//! Azure errors, classified once: what to retry, and which gRPC code a persistent failure becomes.

use std::time::Duration;

use provider_common::retry::Retryable;

/// What kind of failure an Azure call had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 429 Too Many Requests.
    Throttled,
    /// 5xx, timeouts, connection failures.
    Unavailable,
    /// 404.
    NotFound,
    /// 400/409/413/422: ARM rejected the request as invalid (413: too large, so retrying the
    /// same pod cannot help).
    Invalid,
    /// 401/403, or Azure AD refused to issue a token.
    Auth,
    /// Anything else.
    Other,
}

/// A failed Azure call. The message comes from ARM or Azure AD and names no secret: request
/// bodies (where secrets travel) are never echoed into it.
#[derive(Debug, thiserror::Error)]
#[error("{op} failed: {code}: {message}")]
pub struct AzureError {
    /// The operation, e.g. "ContainerGroups_CreateOrUpdate".
    pub op: &'static str,
    /// Classification.
    pub kind: Kind,
    /// HTTP status (0 when no response came).
    pub status: u16,
    /// ARM error code, e.g. "ContainerGroupQuotaReached".
    pub code: String,
    /// ARM error message.
    pub message: String,
    /// Retry-After sent by the server.
    pub retry_after: Option<Duration>,
}

/// Classifies an HTTP status (with ARM's error code, which can be more specific).
pub fn classify(status: u16, code: &str) -> Kind {
    match (status, code) {
        (429, _) => Kind::Throttled,
        (_, "ResourceNotFound" | "ResourceGroupNotFound" | "ContainerGroupNotFound") => {
            Kind::NotFound
        }
        (404, _) => Kind::NotFound,
        (401 | 403, _) => Kind::Auth,
        (409, "ContainerGroupTransitioning" | "Conflict") => Kind::Unavailable,
        (s, _) if s >= 500 => Kind::Unavailable,
        (400 | 409 | 413 | 422, _) => Kind::Invalid,
        _ => Kind::Other,
    }
}

impl AzureError {
    /// An error with no HTTP response (connection refused, timeout, TLS).
    pub fn transport(op: &'static str, message: impl Into<String>) -> Self {
        Self {
            op,
            kind: Kind::Unavailable,
            status: 0,
            code: "ConnectionFailed".into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// From an HTTP error response: status, Retry-After and the ARM error body.
    pub fn from_response(
        op: &'static str,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Self {
        let parsed: crate::model::ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let (code, message) = if parsed.error.code.is_empty() && parsed.error.message.is_empty() {
            if status == 413 {
                // Whatever answered (ARM or a gateway before it) sent no reason of its own; the
                // pod needs one, since it fails for good.
                (
                    "RequestEntityTooLarge".to_owned(),
                    "the container group definition is larger than Azure accepts; make the pod's \
                     environment values, files (ConfigMap, Secret, projected volumes) or \
                     commands smaller"
                        .to_owned(),
                )
            } else {
                (
                    format!("HTTP{status}"),
                    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
                )
            }
        } else {
            (parsed.error.code, parsed.error.message)
        };
        Self {
            op,
            kind: classify(status, &code),
            status,
            code,
            message,
            retry_after,
        }
    }

    /// The gRPC status a caller sees once retries are used up.
    pub fn to_status(&self) -> tonic::Status {
        let msg = self.to_string();
        match self.kind {
            Kind::Throttled => tonic::Status::resource_exhausted(format!(
                "Azure keeps throttling after retries; try again later ({msg})"
            )),
            Kind::Unavailable => tonic::Status::unavailable(msg),
            Kind::NotFound => tonic::Status::not_found(msg),
            // ACI's own sentence is what users need (e.g. a limit above the group's request).
            Kind::Invalid => {
                tonic::Status::invalid_argument(format!("{}: {}", self.code, self.message))
            }
            Kind::Auth => tonic::Status::unavailable(format!(
                "Azure refused the provider's credentials; check its identity and role assignment ({msg})"
            )),
            Kind::Other => tonic::Status::internal(msg),
        }
    }
}

/// Parses a Retry-After header: delay-seconds (ARM's form) or an HTTP date is not expected.
pub fn parse_retry_after(v: Option<&http::HeaderValue>) -> Option<Duration> {
    v.and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

impl Retryable for AzureError {
    fn is_retryable(&self) -> bool {
        matches!(self.kind, Kind::Throttled | Kind::Unavailable)
    }

    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    fn is_throttle(&self) -> bool {
        self.kind == Kind::Throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_are_classified() {
        assert_eq!(classify(429, ""), Kind::Throttled);
        assert_eq!(classify(503, ""), Kind::Unavailable);
        assert_eq!(classify(404, ""), Kind::NotFound);
        assert_eq!(classify(400, "ResourceNotFound"), Kind::NotFound);
        assert_eq!(classify(401, "InvalidAuthenticationToken"), Kind::Auth);
        assert_eq!(classify(400, "InvalidContainerGroup"), Kind::Invalid);
        assert_eq!(
            classify(409, "ContainerGroupTransitioning"),
            Kind::Unavailable
        );
        assert_eq!(classify(302, ""), Kind::Other);
    }

    /// A 413 fails the pod with a reason (it used to be INTERNAL), whether ARM explains it or
    /// a gateway answers without a body.
    #[test]
    fn request_entity_too_large_is_an_invalid_pod() {
        assert_eq!(classify(413, ""), Kind::Invalid);
        let op = "ContainerGroups_CreateOrUpdate";
        let e = AzureError::from_response(op, 413, None, b"");
        assert!(!e.is_retryable());
        let s = e.to_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().starts_with("RequestEntityTooLarge: ")
                && s.message().contains("larger than Azure accepts"),
            "{}",
            s.message()
        );
        let html =
            AzureError::from_response(op, 413, None, b"<html>413 Request Entity Too Large</html>");
        assert_eq!(html.code, "RequestEntityTooLarge");
        let body = br#"{"error":{"code":"RequestContentTooLarge","message":"The request content size exceeds the limit."}}"#;
        let s = AzureError::from_response(op, 413, None, body).to_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "RequestContentTooLarge: The request content size exceeds the limit."
        );
    }

    #[test]
    fn arm_error_bodies_become_user_messages() {
        let body = br#"{"error":{"code":"ContainerLimitGreaterThanContainerGroupTotalRequest","message":"The 'Cpu' limit '2' in container 'a' is greater than the total request '1' of container group 'g'."}}"#;
        let e = AzureError::from_response("ContainerGroups_CreateOrUpdate", 400, None, body);
        let s = e.to_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message()
                .contains("is greater than the total request '1'")
        );
        let e = AzureError::from_response("x", 429, Some(Duration::from_secs(3)), b"");
        assert!(e.is_retryable() && e.is_throttle());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
    }
}
