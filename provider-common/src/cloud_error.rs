//! The one classification of failed cloud calls every provider uses, and the one mapping of it to
//! gRPC codes (docs/PROTOCOL.md §8): each provider decides which of its cloud's answers is which
//! [`Kind`]; what a kind means to the shim (retried or not, which code) is decided here.

use std::time::Duration;

use crate::retry::Retryable;

/// What kind of failure a cloud call had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The cloud throttled the call: retried with backoff, then `RESOURCE_EXHAUSTED`.
    Throttled,
    /// 5xx, timeouts, connection failures, conflicts that pass: retried, then `UNAVAILABLE`.
    Unavailable,
    /// The resource does not exist: `NOT_FOUND`.
    NotFound,
    /// The cloud rejected the request as invalid, so the same pod cannot work:
    /// `INVALID_ARGUMENT` (the shim fails the pod).
    Invalid,
    /// The cloud rejected the provider's credentials or signature: `UNAVAILABLE`.
    Unauthenticated,
    /// The provider's credentials lack a permission: `UNAVAILABLE`.
    PermissionDenied,
    /// The resource is not in a state that allows the operation (e.g. exec into a stopped
    /// group): `FAILED_PRECONDITION`.
    Precondition,
    /// An account quota or the cloud's stock is used up: `RESOURCE_EXHAUSTED`, not retried here
    /// (the shim retries later).
    Quota,
    /// Anything else, e.g. an answer the provider cannot read: `INTERNAL`.
    Other,
}

/// What a provider tells users about failures whose cure is on the operator's side; each
/// sentence is followed by the failed call's own message.
#[derive(Clone, Copy, Debug)]
pub struct Advice {
    /// The cloud's name in messages, e.g. `Azure`.
    pub cloud: &'static str,
    /// For [`Kind::Unauthenticated`]: which credentials to check.
    pub unauthenticated: &'static str,
    /// For [`Kind::PermissionDenied`]: which permissions to check.
    pub permission_denied: &'static str,
    /// For [`Kind::Quota`], when the cloud has a cure to name.
    pub quota: Option<&'static str>,
    /// For [`Kind::Invalid`]: the cloud's own code and sentence alone, without the failed
    /// operation's name (ACI's sentences say what to change in the pod).
    pub invalid_in_clouds_words: bool,
}

/// A failed cloud call, as every provider reports it. Code and message come from the cloud,
/// which echoes no request body (where secrets travel), so they carry no secret.
#[derive(Debug, thiserror::Error)]
#[error(
    "{op} failed: {code}: {message}{}",
    request_id.as_ref().map(|r| format!(" (RequestId {r})")).unwrap_or_default()
)]
pub struct CloudError {
    /// What the provider tells users about failures the operator must cure.
    pub advice: &'static Advice,
    /// The API operation, e.g. `RunTask`.
    pub op: &'static str,
    /// Classification.
    pub kind: Kind,
    /// HTTP status (0 when no response came).
    pub status: u16,
    /// The cloud's error code, e.g. `ThrottlingException`.
    pub code: String,
    /// The cloud's error message.
    pub message: String,
    /// The cloud's request id, for support cases, where it sends one.
    pub request_id: Option<String>,
    /// Retry-After sent by the server.
    pub retry_after: Option<Duration>,
}

impl CloudError {
    /// A failure of `op` with no HTTP response, request id or Retry-After.
    pub fn new(
        advice: &'static Advice,
        op: &'static str,
        kind: Kind,
        code: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            advice,
            op,
            kind,
            status: 0,
            code: code.into(),
            message: message.into(),
            request_id: None,
            retry_after: None,
        }
    }

    /// The HTTP status the cloud answered with.
    pub fn with_status(self, status: u16) -> Self {
        Self { status, ..self }
    }

    /// The Retry-After the cloud sent.
    pub fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..self
        }
    }

    /// The cloud's request id.
    pub fn with_request_id(self, request_id: Option<String>) -> Self {
        Self { request_id, ..self }
    }

    /// The gRPC status a caller sees once retries are used up.
    pub fn to_status(&self) -> tonic::Status {
        let message = if self.kind == Kind::Invalid && self.advice.invalid_in_clouds_words {
            format!("{}: {}", self.code, self.message)
        } else {
            self.to_string()
        };
        self.kind.to_status(self.advice, message)
    }
}

impl Classified for CloudError {
    fn kind(&self) -> Kind {
        self.kind
    }

    fn server_delay(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl Kind {
    /// Worth retrying inside the provider: throttling and outages pass; nothing else does by
    /// itself.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Unavailable)
    }

    /// The gRPC status a caller sees once retries are used up; `message` (shown to users, so
    /// secret-free) names the call and the cloud's answer.
    ///
    /// Rejected credentials and missing permissions are `UNAVAILABLE`: the pod is not at fault,
    /// so the shim must keep retrying it (not fail it) until the operator fixes the identity.
    pub fn to_status(self, advice: &Advice, message: String) -> tonic::Status {
        use tonic::Status;
        match self {
            Self::Throttled => Status::resource_exhausted(format!(
                "{} keeps throttling after retries; try again later ({message})",
                advice.cloud
            )),
            Self::Unavailable => Status::unavailable(message),
            Self::NotFound => Status::not_found(message),
            Self::Invalid => Status::invalid_argument(message),
            Self::Unauthenticated => {
                Status::unavailable(format!("{} ({message})", advice.unauthenticated))
            }
            Self::PermissionDenied => {
                Status::unavailable(format!("{} ({message})", advice.permission_denied))
            }
            Self::Precondition => Status::failed_precondition(message),
            Self::Quota => Status::resource_exhausted(match advice.quota {
                Some(cure) => format!("{cure} ({message})"),
                None => message,
            }),
            Self::Other => Status::internal(message),
        }
    }
}

/// A provider's cloud error: its [`Kind`] decides whether [`retry`](crate::retry::retry) tries
/// again, so every provider retries the same kinds.
pub trait Classified {
    /// How the provider classified the failure.
    fn kind(&self) -> Kind;
    /// The cloud's Retry-After, if it sent one.
    fn server_delay(&self) -> Option<Duration>;
}

impl<T: Classified> Retryable for T {
    fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    fn retry_after(&self) -> Option<Duration> {
        self.server_delay()
    }

    fn is_throttle(&self) -> bool {
        self.kind() == Kind::Throttled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADVICE: Advice = Advice {
        cloud: "Cloud",
        unauthenticated: "check the key",
        permission_denied: "check the role",
        quota: Some("raise the quota"),
        invalid_in_clouds_words: false,
    };

    /// The codes docs/PROTOCOL.md §8 lists, one per kind; only throttling and outages retried.
    #[test]
    fn every_kind_has_one_documented_code() {
        use tonic::Code;
        let cases = [
            (Kind::Throttled, Code::ResourceExhausted, true),
            (Kind::Unavailable, Code::Unavailable, true),
            (Kind::NotFound, Code::NotFound, false),
            (Kind::Invalid, Code::InvalidArgument, false),
            (Kind::Unauthenticated, Code::Unavailable, false),
            (Kind::PermissionDenied, Code::Unavailable, false),
            (Kind::Precondition, Code::FailedPrecondition, false),
            (Kind::Quota, Code::ResourceExhausted, false),
            (Kind::Other, Code::Internal, false),
        ];
        for (kind, code, retried) in cases {
            let status = kind.to_status(&ADVICE, "Op failed: X: y".into());
            assert_eq!(status.code(), code, "{kind:?}");
            assert!(status.message().contains("Op failed: X: y"), "{kind:?}");
            assert_eq!(kind.is_retryable(), retried, "{kind:?}");
        }
        let auth = Kind::Unauthenticated.to_status(&ADVICE, "m".into());
        assert_eq!(auth.message(), "check the key (m)");
        let throttled = Kind::Throttled.to_status(&ADVICE, "m".into());
        assert_eq!(
            throttled.message(),
            "Cloud keeps throttling after retries; try again later (m)"
        );
        let bare = Advice {
            quota: None,
            ..ADVICE
        };
        assert_eq!(Kind::Quota.to_status(&bare, "m".into()).message(), "m");
    }

    #[test]
    fn retrying_follows_the_kind() {
        struct E(Kind);
        impl Classified for E {
            fn kind(&self) -> Kind {
                self.0
            }
            fn server_delay(&self) -> Option<Duration> {
                Some(Duration::from_secs(2))
            }
        }
        assert!(E(Kind::Throttled).is_retryable() && E(Kind::Throttled).is_throttle());
        assert!(E(Kind::Unavailable).is_retryable() && !E(Kind::Unavailable).is_throttle());
        assert!(!E(Kind::Unauthenticated).is_retryable());
        assert_eq!(E(Kind::Other).retry_after(), Some(Duration::from_secs(2)));
    }
}
