//! AWS errors, classified once: what to retry, and which gRPC code a persistent failure becomes.

use std::time::Duration;

use aws_sdk_ecs::config::http::HttpResponse as Response;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use provider_common::retry::Retryable;

/// What kind of failure an AWS call had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// ThrottlingException and friends.
    Throttled,
    /// 5xx, timeouts, connection failures.
    Unavailable,
    /// The resource does not exist.
    NotFound,
    /// AWS rejected the request as invalid.
    Invalid,
    /// The credentials lack a permission.
    AccessDenied,
    /// Anything else.
    Other,
}

/// A failed AWS call. The message comes from AWS and names no secret (secrets travel only in
/// RunTask overrides, which AWS does not echo).
#[derive(Debug, thiserror::Error)]
#[error("{op} failed: {code}: {message}")]
pub struct AwsError {
    /// The API operation, e.g. "RunTask".
    pub op: &'static str,
    /// Classification.
    pub kind: Kind,
    /// AWS error code, e.g. "ThrottlingException".
    pub code: String,
    /// AWS error message.
    pub message: String,
    /// Retry-After sent by the server.
    pub retry_after: Option<Duration>,
}

/// Classifies an AWS error code with the response's HTTP status.
pub fn classify(code: &str, http_status: u16) -> Kind {
    match code {
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "LimitExceededException" => Kind::Throttled,
        "ServerException"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "InternalFailure"
        | "InternalServerError" => Kind::Unavailable,
        "ResourceNotFoundException" | "ClusterNotFoundException" => Kind::NotFound,
        "AccessDeniedException" | "UnrecognizedClientException" => Kind::AccessDenied,
        _ if http_status == 429 => Kind::Throttled,
        _ if http_status >= 500 => Kind::Unavailable,
        "ClientException" | "InvalidParameterException" | "ValidationException" => Kind::Invalid,
        _ => Kind::Other,
    }
}

impl AwsError {
    /// From any AWS SDK error of operation `op`.
    pub fn from_sdk<E>(op: &'static str, err: SdkError<E, Response>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map_or(0, |r| r.status().as_u16());
        let retry_after = err
            .raw_response()
            .and_then(|r| r.headers().get("retry-after"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let (kind, code, message) = match &err {
            SdkError::ServiceError(e) => {
                let code = e.err().code().unwrap_or("Unknown").to_owned();
                let message = e.err().message().unwrap_or_default().to_owned();
                (classify(&code, status), code, message)
            }
            SdkError::TimeoutError(_) => (
                Kind::Unavailable,
                "Timeout".into(),
                "the call timed out".into(),
            ),
            SdkError::DispatchFailure(e) => (
                Kind::Unavailable,
                "DispatchFailure".into(),
                format!(
                    "cannot reach the AWS endpoint: {:?}",
                    e.as_connector_error().map(ToString::to_string)
                ),
            ),
            SdkError::ResponseError(_) => (
                classify("", status),
                "ResponseError".into(),
                format!("unreadable response (HTTP {status})"),
            ),
            _ => (Kind::Other, "Error".into(), err.to_string()),
        };
        Self {
            op,
            kind,
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
                "AWS keeps throttling after retries; try again later ({msg})"
            )),
            Kind::Unavailable => tonic::Status::unavailable(msg),
            Kind::NotFound => tonic::Status::not_found(msg),
            Kind::Invalid => tonic::Status::invalid_argument(msg),
            Kind::AccessDenied => tonic::Status::unavailable(format!(
                "AWS denied the call; check the provider's IAM permissions ({msg})"
            )),
            Kind::Other => tonic::Status::internal(msg),
        }
    }
}

impl Retryable for AwsError {
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
    fn codes_are_classified() {
        assert_eq!(classify("ThrottlingException", 400), Kind::Throttled);
        assert_eq!(classify("", 429), Kind::Throttled);
        assert_eq!(classify("ServerException", 500), Kind::Unavailable);
        assert_eq!(classify("Whatever", 503), Kind::Unavailable);
        assert_eq!(classify("ClientException", 400), Kind::Invalid);
        assert_eq!(classify("ResourceNotFoundException", 400), Kind::NotFound);
        assert_eq!(classify("Odd", 400), Kind::Other);
    }
}
