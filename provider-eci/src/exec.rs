//! The start of an Exec stream.

use futures::StreamExt;
use podprovider_proto::v1::{ExecRequest, ExecStart, exec_request};
use tonic::{Status, Streaming};

/// Reads the first message, which must be `start`.
pub async fn first_start(input: &mut Streaming<ExecRequest>) -> Result<ExecStart, Status> {
    match input.next().await {
        Some(Ok(ExecRequest {
            request: Some(exec_request::Request::Start(s)),
        })) => Ok(s),
        Some(Err(e)) => Err(e),
        _ => Err(Status::invalid_argument(
            "the first Exec message must be `start`",
        )),
    }
}
