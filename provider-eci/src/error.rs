//! ECI errors, classified once into the shared `Kind`, which decides retrying and the gRPC code.
//!
//! The RPC API answers errors with HTTP 4xx/5xx and a JSON body `{RequestId, Code, Message,
//! HostId, Recommend}`.

use std::time::Duration;

use provider_common::cloud_error::{Advice, CloudError};
use serde::Deserialize;

pub use provider_common::cloud_error::Kind;

/// What the provider tells users about failures the operator must cure.
pub static ADVICE: Advice = Advice {
    cloud: "ECI",
    unauthenticated: "ECI rejected the provider's credentials or signature; check the AccessKey pair or STS token",
    permission_denied: "ECI denied the call; check the RAM permissions of the provider's credentials",
    quota: None,
    invalid_in_clouds_words: false,
};

/// A failed ECI call (codes are ECI's, e.g. `Throttling.User`; ECI sends a request id).
pub type EciError = CloudError;

/// The error body of the RPC API.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorBody {
    /// Request id.
    pub request_id: Option<String>,
    /// Error code.
    pub code: Option<String>,
    /// Error message.
    pub message: Option<String>,
}

/// Classifies an ECI error code with the HTTP status.
pub fn classify(code: &str, http_status: u16) -> Kind {
    let starts = |p: &str| code == p || code.starts_with(&format!("{p}."));
    if starts("Throttling")
        || code == "ServiceUnavailable.Throttling"
        || code == "IdempotentProcessing"
    {
        Kind::Throttled
    } else if starts("SignatureDoesNotMatch")
        || starts("IncompleteSignature")
        || starts("InvalidAccessKeyId")
        || starts("InvalidSecurityToken")
        || starts("MissingSecurityToken")
        || starts("InvalidTimeStamp")
        || starts("SignatureNonceUsed")
        || code == "InvalidApi.NotPurchase"
    {
        Kind::Unauthenticated
    } else if starts("Forbidden") || starts("NoPermission") || code == "Forbidden.RAM" {
        Kind::PermissionDenied
    } else if starts("IncorrectStatus") || starts("IncorrectContainerGroupStatus") {
        Kind::Precondition
    } else if starts("QuotaExceeded") || starts("OperationDenied.NoStock") || starts("NoStock") {
        Kind::Quota
    } else if code.ends_with(".NotFound") && code.contains("ContainerGroup") {
        Kind::NotFound
    } else if starts("ServiceUnavailable")
        || starts("InternalError")
        || starts("UnknownError")
        // DeleteContainerGroup's documented 400 "Request was denied due to conflict with a
        // previous request": another operation on the group is still under way, so it passes.
        || code == "OperationConflict"
    {
        Kind::Unavailable
    } else if http_status == 429 {
        Kind::Throttled
    } else if http_status >= 500 {
        Kind::Unavailable
    } else if starts("InvalidParameter")
        || starts("MissingParameter")
        || code.starts_with("Invalid")
        || code.starts_with("Missing")
        || code.starts_with("Incorrect")
    {
        Kind::Invalid
    } else if http_status == 404 {
        Kind::NotFound
    } else {
        Kind::Other
    }
}

/// From an error response.
pub fn from_response(
    op: &'static str,
    http_status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
) -> EciError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    // An empty code or message says as little as a missing one (found by fuzzing).
    let given = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let code = given(parsed.code).unwrap_or_else(|| format!("HTTP{http_status}"));
    let message = given(parsed.message).unwrap_or_else(|| format!("HTTP status {http_status}"));
    CloudError::new(&ADVICE, op, classify(&code, http_status), code, message)
        .with_status(http_status)
        .with_request_id(parsed.request_id)
        .with_retry_after(retry_after)
}

/// A transport failure (connect, timeout, unreadable body).
pub fn transport(op: &'static str, what: impl std::fmt::Display) -> EciError {
    let message = format!("cannot reach the ECI endpoint: {what}");
    CloudError::new(&ADVICE, op, Kind::Unavailable, "Transport", message)
}

/// A request whose URI (`len` bytes, parameters included) is longer than the client can send;
/// refused before any of it goes out.
pub fn request_too_large(op: &'static str, len: usize) -> EciError {
    let message = format!(
        "the request would be a {len}-byte URI; ECI's RPC API carries every parameter in the \
         URI, which can be at most {} bytes",
        crate::client::MAX_URI_BYTES
    );
    CloudError::new(&ADVICE, op, Kind::Invalid, "RequestTooLarge", message)
}

/// An answer this provider cannot read.
pub fn bad_answer(op: &'static str, what: impl std::fmt::Display) -> EciError {
    let message = format!("ECI answered something unexpected: {what}");
    CloudError::new(&ADVICE, op, Kind::Other, "UnreadableResponse", message)
}

#[cfg(test)]
mod tests {
    use provider_common::retry::Retryable;

    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(classify("Throttling", 400), Kind::Throttled);
        assert_eq!(classify("Throttling.User", 400), Kind::Throttled);
        assert_eq!(classify("Throttling.Api", 503), Kind::Throttled);
        assert_eq!(
            classify("SignatureDoesNotMatch", 400),
            Kind::Unauthenticated
        );
        assert_eq!(
            classify("InvalidAccessKeyId.NotFound", 404),
            Kind::Unauthenticated
        );
        assert_eq!(classify("Forbidden.RAM", 403), Kind::PermissionDenied);
        assert_eq!(classify("InvalidParameter", 400), Kind::Invalid);
        assert_eq!(classify("MissingParameter.RegionId", 400), Kind::Invalid);
        assert_eq!(
            classify("InvalidContainerGroup.NotFound", 400),
            Kind::NotFound
        );
        assert_eq!(classify("ServiceUnavailable", 503), Kind::Unavailable);
        assert_eq!(classify("Whatever", 502), Kind::Unavailable);
        assert_eq!(classify("", 429), Kind::Throttled);
        assert_eq!(classify("Odd", 400), Kind::Other);
        assert_eq!(classify("IncorrectStatus", 403), Kind::Precondition);
        assert_eq!(
            classify("InvalidContainerGroupId.NotFound", 404),
            Kind::NotFound
        );
    }

    /// DeleteContainerGroup documents `400 OperationConflict` ("Request was denied due to
    /// conflict with a previous request"): transient, so retried, and UNAVAILABLE if it persists.
    #[test]
    fn delete_container_group_operation_conflict_is_retried() {
        assert_eq!(classify("OperationConflict", 400), Kind::Unavailable);
        let e = from_response(
            "DeleteContainerGroup",
            400,
            br#"{"RequestId":"R-2","Code":"OperationConflict","Message":"Request was denied due to conflict with a previous request."}"#,
            None,
        );
        assert!(e.is_retryable() && !e.is_throttle());
        assert_eq!(e.to_status().code(), tonic::Code::Unavailable);
    }

    #[test]
    fn error_bodies_become_statuses_naming_the_code() {
        let e = from_response(
            "CreateContainerGroup",
            400,
            br#"{"RequestId":"R-1","Code":"SignatureDoesNotMatch","Message":"Specified signature is not matched with our calculation."}"#,
            None,
        );
        assert_eq!(e.kind, Kind::Unauthenticated);
        let s = e.to_status();
        // Unified with ACI and Fargate (docs/PROTOCOL.md §8): the pod is not at fault.
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.message().contains("SignatureDoesNotMatch") && s.message().contains("R-1"));
        let t = from_response("X", 400, br#"{"Code":"Throttling.User"}"#, None);
        assert!(t.is_retryable() && t.is_throttle());
        assert_eq!(t.to_status().code(), tonic::Code::ResourceExhausted);
        let junk = from_response("X", 502, b"<html>", None);
        assert_eq!(junk.code, "HTTP502");
        assert!(junk.is_retryable());
    }

    /// Found by fuzzing: `{"Code":""}` made an error with no code ("X failed: : …").
    #[test]
    fn empty_codes_and_messages_count_as_missing() {
        let e = from_response("X", 503, br#"{"Code":" ","Message":""}"#, None);
        assert_eq!(e.code, "HTTP503");
        assert_eq!(e.message, "HTTP status 503");
        assert!(e.is_retryable());
    }
}
