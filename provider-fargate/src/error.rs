//! AWS errors, classified once into the shared `Kind`, which decides retrying and the gRPC code.

use std::time::Duration;

use aws_sdk_ecs::config::http::HttpResponse as Response;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use provider_common::cloud_error::{Advice, CloudError};

pub use provider_common::cloud_error::Kind;

/// What the provider tells users about failures the operator must cure.
pub static ADVICE: Advice = Advice {
    cloud: "AWS",
    unauthenticated: "AWS denied the call; check the provider's IAM permissions",
    permission_denied: "AWS denied the call; check the provider's IAM permissions",
    quota: Some("an AWS quota is used up; raise it in Service Quotas or wait for tasks to end"),
    invalid_in_clouds_words: false,
};

/// A failed AWS call (operations as the SDK names them, e.g. "RunTask"; codes are AWS's, e.g.
/// "ThrottlingException").
pub type AwsError = CloudError;

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
        "AccessDeniedException" => Kind::PermissionDenied,
        "UnrecognizedClientException" => Kind::Unauthenticated,
        _ if http_status == 429 => Kind::Throttled,
        _ if http_status >= 500 => Kind::Unavailable,
        "ClientException" | "InvalidParameterException" | "ValidationException" => Kind::Invalid,
        _ => Kind::Other,
    }
}

/// From any AWS SDK error of operation `op`.
pub fn from_sdk<E>(op: &'static str, err: SdkError<E, Response>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map_or(0, |r| r.status().as_u16());
    let retry_after = err
        .raw_response()
        .and_then(|r| r.headers().get("retry-after"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // An answer the client refused to read (telemetry::TraceContext): not retried, the
    // same call would get the same answer.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(big) = e.downcast_ref::<crate::telemetry::AnswerTooLarge>() {
            return CloudError::new(&ADVICE, op, Kind::Other, "AnswerTooLarge", big.to_string());
        }
        source = e.source();
    }
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
    CloudError::new(&ADVICE, op, kind, code, message)
        .with_status(status)
        .with_retry_after(retry_after)
}

/// Code of a RunTask `failures` entry for Fargate capacity (retried, reported as a pod event).
pub const CAPACITY_UNAVAILABLE: &str = "CapacityUnavailable";

/// A RunTask answer without a task, from its `failures` (reason, detail), classified as the ECS
/// docs describe them: "Capacity is unavailable at this time. Please try again later or in a
/// different availability zone" (and EC2-style `RESOURCE:*` placement reasons) is transient;
/// "You've reached the limit on the number of tasks/vCPUs you can run concurrently" is a quota;
/// anything else says the request cannot work as it is.
pub fn run_task_failure(failures: &[(String, String)]) -> AwsError {
    let message = failures
        .iter()
        .map(|(r, d)| {
            if d.is_empty() {
                r.clone()
            } else {
                format!("{r} ({d})")
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    let any = |f: &dyn Fn(&str) -> bool| {
        failures
            .iter()
            .any(|(r, d)| f(&r.to_ascii_lowercase()) || f(&d.to_ascii_lowercase()))
    };
    let (kind, code) =
        if any(&|s| s.contains("capacity is unavailable") || s.starts_with("resource:")) {
            (Kind::Unavailable, CAPACITY_UNAVAILABLE)
        } else if any(&|s| {
            s.contains("reached the limit") || s.contains("quota") || s.contains("limitexceeded")
        }) {
            (Kind::Quota, "QuotaExceeded")
        } else {
            (Kind::Invalid, "RunTaskFailure")
        };
    let message = if message.is_empty() {
        "RunTask started no task and gave no reason".into()
    } else {
        message
    };
    CloudError::new(&ADVICE, "RunTask", kind, code, message)
}

#[cfg(test)]
mod tests {
    use provider_common::retry::Retryable;

    use super::*;

    fn failure(reason: &str, detail: &str) -> AwsError {
        run_task_failure(&[(reason.to_owned(), detail.to_owned())])
    }

    #[test]
    fn run_task_failures_are_classified_as_the_ecs_docs_describe_them() {
        let capacity = failure(
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
            "",
        );
        assert_eq!(
            (capacity.kind, capacity.code.as_str()),
            (Kind::Unavailable, CAPACITY_UNAVAILABLE)
        );
        assert!(capacity.is_retryable() && !capacity.is_throttle());
        assert_eq!(capacity.to_status().code(), tonic::Code::Unavailable);

        for reason in [
            "You've reached the limit on the number of tasks you can run concurrently",
            "You've reached the limit on the number of vCPUs you can run concurrently",
        ] {
            let quota = failure(reason, "");
            assert_eq!(quota.kind, Kind::Quota, "{reason}");
            assert!(!quota.is_retryable());
            assert_eq!(quota.to_status().code(), tonic::Code::ResourceExhausted);
            assert!(quota.to_status().message().contains(reason));
        }

        let other = failure("MISSING", "arn:aws:ecs:us-east-1:1:task-definition/x:1");
        assert_eq!(other.kind, Kind::Invalid);
        assert_eq!(other.to_status().code(), tonic::Code::InvalidArgument);
        assert_eq!(
            run_task_failure(&[]).message,
            "RunTask started no task and gave no reason"
        );
    }

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
