//! API errors in the documented shape:
//! `{"RequestId", "HostId", "Code", "Message", "Recommend"}` with the code's HTTP status.
//!
//! Codes and messages follow Alibaba Cloud's published list of common OpenAPI client errors
//! (`InvalidAccessKeyId.NotFound` 404, `SignatureDoesNotMatch` 400, `SignatureNonceUsed` 400,
//! `InvalidTimeStamp.Expired` 400, `Missing{ParameterName}` 400, `Throttling.User` 400, ...) and
//! server errors (`ServiceUnavailable` 503).

use axum::http::StatusCode;

/// Why a request failed, before it is given a RequestId.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    /// Counts as a signature/credential rejection in the stats.
    pub auth: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            auth: false,
        }
    }

    fn auth(status: StatusCode, code: &str, message: &str) -> Self {
        Self {
            auth: true,
            ..Self::new(status, code, message)
        }
    }

    /// `Missing{ParameterName}`: "{ParameterName} is mandatory for this action."
    pub fn missing(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            &format!("Missing{name}"),
            format!("{name} is mandatory for this action."),
        )
    }

    /// A parameter value that fails validation.
    pub fn invalid(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!("Specified parameter {name} is not valid."),
        )
    }

    /// A required request header (signature V3 common header) is absent.
    pub fn missing_header(name: &str) -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            &format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    pub fn incomplete_signature() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards.",
        )
    }

    pub fn signature_mismatch() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        )
    }

    pub fn access_key_not_found() -> Self {
        Self::auth(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    }

    pub fn nonce_used() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        )
    }

    pub fn timestamp_format() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    }

    pub fn timestamp_expired() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        )
    }

    pub fn security_token_malformed() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.Malformed",
            "Specified SecurityToken is malformed.",
        )
    }

    pub fn security_token_expired() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        )
    }

    pub fn security_token_mismatch() -> Self {
        Self::auth(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )
    }

    pub fn action_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )
    }

    pub fn invalid_version() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidVersion",
            "Specified parameter Version is not valid.",
        )
    }

    pub fn throttled() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "Throttling.User",
            "Request was denied due to user flow control.",
        )
    }

    /// The common server error (HTTP 503) of Alibaba Cloud's response-format page; served for
    /// answers "lost" after the action was applied.
    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        )
    }

    pub fn group_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidContainerGroupId.NotFound",
            "The specified ContainerGroupId does not exist.",
        )
    }

    pub fn container_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidContainerName.NotFound",
            "The specified ContainerName does not exist.",
        )
    }

    pub fn incorrect_status(message: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "IncorrectStatus", message)
    }

    /// The JSON body, for a request with `request_id` served as `host_id`.
    pub fn body(&self, request_id: &str, host_id: &str) -> serde_json::Value {
        serde_json::json!({
            "RequestId": request_id,
            "HostId": host_id,
            "Code": self.code,
            "Message": self.message,
            "Recommend": format!(
                "https://api.aliyun.com/troubleshoot?q={}&product=Eci", self.code
            ),
        })
    }
}
