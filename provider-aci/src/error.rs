//! Azure errors, classified once into the shared `Kind`, which decides retrying and the gRPC code.

use std::time::Duration;

use provider_common::cloud_error::{Advice, CloudError};

pub use provider_common::cloud_error::Kind;

/// What the provider tells users about failures the operator must cure.
pub static ADVICE: Advice = Advice {
    cloud: "Azure",
    unauthenticated: "Azure refused the provider's credentials; check its identity and role assignment",
    permission_denied: "Azure refused the provider's credentials; check its identity and role assignment",
    quota: None,
    // ACI's own sentence is what users need (e.g. a limit above the group's request).
    invalid_in_clouds_words: true,
};

/// A failed Azure call (operations are named as in the ARM REST reference, e.g.
/// "ContainerGroups_CreateOrUpdate"; codes are ARM's, e.g. "ContainerGroupQuotaReached").
pub type AzureError = CloudError;

/// Classifies ARM's error code with the HTTP status (the code can be more specific): 400/409/413/422
/// are invalid requests (413: too large, so retrying the same pod cannot help), 401 rejected
/// credentials, 403 a missing role assignment.
pub fn classify(code: &str, status: u16) -> Kind {
    match (status, code) {
        (429, _) => Kind::Throttled,
        (_, "ResourceNotFound" | "ResourceGroupNotFound" | "ContainerGroupNotFound") => {
            Kind::NotFound
        }
        (404, _) => Kind::NotFound,
        (401, _) => Kind::Unauthenticated,
        (403, _) => Kind::PermissionDenied,
        (409, "ContainerGroupTransitioning" | "Conflict") => Kind::Unavailable,
        (s, _) if s >= 500 => Kind::Unavailable,
        (400 | 409 | 413 | 422, _) => Kind::Invalid,
        _ => Kind::Other,
    }
}

/// An error the provider itself finds in a call of `op` (an answer it cannot read or must not
/// follow, a token file it cannot read), with ACI's advice; `with_status` adds the answer's status.
pub fn failed(
    op: &'static str,
    kind: Kind,
    code: &'static str,
    message: impl Into<String>,
) -> AzureError {
    CloudError::new(&ADVICE, op, kind, code, message)
}

/// An error with no HTTP response (connection refused, timeout, TLS).
pub fn transport(op: &'static str, message: impl Into<String>) -> AzureError {
    CloudError::new(&ADVICE, op, Kind::Unavailable, "ConnectionFailed", message)
}

/// From an HTTP error response: status, Retry-After and the ARM error body.
pub fn from_response(
    op: &'static str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> AzureError {
    let parsed: crate::wire::ErrorBody = serde_json::from_slice(body).unwrap_or_default();
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
    CloudError::new(&ADVICE, op, classify(&code, status), code, message)
        .with_status(status)
        .with_retry_after(retry_after)
}

/// Parses a Retry-After header: delay-seconds (ARM's form) or an HTTP date is not expected.
pub fn parse_retry_after(v: Option<&http::HeaderValue>) -> Option<Duration> {
    v.and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use provider_common::retry::Retryable;

    use super::*;

    #[test]
    fn statuses_and_codes_are_classified() {
        assert_eq!(classify("", 429), Kind::Throttled);
        assert_eq!(classify("", 503), Kind::Unavailable);
        assert_eq!(classify("", 404), Kind::NotFound);
        assert_eq!(classify("ResourceNotFound", 400), Kind::NotFound);
        assert_eq!(
            classify("InvalidAuthenticationToken", 401),
            Kind::Unauthenticated
        );
        assert_eq!(classify("InvalidContainerGroup", 400), Kind::Invalid);
        assert_eq!(
            classify("ContainerGroupTransitioning", 409),
            Kind::Unavailable
        );
        assert_eq!(classify("", 302), Kind::Other);
    }

    /// A 413 fails the pod with a reason (it used to be INTERNAL), whether ARM explains it or
    /// a gateway answers without a body.
    #[test]
    fn request_entity_too_large_is_an_invalid_pod() {
        assert_eq!(classify("", 413), Kind::Invalid);
        let op = "ContainerGroups_CreateOrUpdate";
        let e = from_response(op, 413, None, b"");
        assert!(!e.is_retryable());
        let s = e.to_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message().starts_with("RequestEntityTooLarge: ")
                && s.message().contains("larger than Azure accepts"),
            "{}",
            s.message()
        );
        let html = from_response(op, 413, None, b"<html>413 Request Entity Too Large</html>");
        assert_eq!(html.code, "RequestEntityTooLarge");
        let body = br#"{"error":{"code":"RequestContentTooLarge","message":"The request content size exceeds the limit."}}"#;
        let s = from_response(op, 413, None, body).to_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "RequestContentTooLarge: The request content size exceeds the limit."
        );
    }

    #[test]
    fn arm_error_bodies_become_user_messages() {
        let body = br#"{"error":{"code":"ContainerLimitGreaterThanContainerGroupTotalRequest","message":"The 'Cpu' limit '2' in container 'a' is greater than the total request '1' of container group 'g'."}}"#;
        let e = from_response("ContainerGroups_CreateOrUpdate", 400, None, body);
        let s = e.to_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(
            s.message()
                .contains("is greater than the total request '1'")
        );
        let e = from_response("x", 429, Some(Duration::from_secs(3)), b"");
        assert!(e.is_retryable() && e.is_throttle());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
    }
}
