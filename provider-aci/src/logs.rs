//! Container logs from Containers - List Logs, with the kubelet's options. ACI returns text (with
//! `tail` and `timestamps`) but has no `since` and cannot follow: provider-common's
//! [`log_follow`] filters on the timestamps ACI prefixes and follows by polling, one poll per
//! container however many follow it ([`LogFollowers`]).

use std::time::Duration;

use podprovider_proto::v1::{GetContainerLogsRequest, LogChunk};
use provider_common::{
    log_follow::{self, Fetch},
    log_share::LogFollowers,
};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::client::Arm;

/// How often a follow polls.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// Streams one container's log per `req` into `tx`; `running` says whether it may still write.
pub async fn stream_logs<Run>(
    followers: LogFollowers,
    uid: String,
    arm: Arm,
    group: String,
    req: GetContainerLogsRequest,
    tx: mpsc::Sender<Result<LogChunk, tonic::Status>>,
    running: Run,
) where
    Run: FnMut() -> bool + Clone + Send + 'static,
{
    let opts = log_follow::Options::from_request(&req, OffsetDateTime::now_utc(), FOLLOW_INTERVAL);
    let container = req.container;
    let container_name = container.clone();
    let fetch = move |what: Fetch| {
        // ACI cannot start at a time: a later poll reads the whole log and the cursor finds its
        // place by the timestamps (always asked for; stripped again unless wanted).
        let tail = match what {
            Fetch::Start { tail } => tail.and_then(|n| i64::try_from(n).ok()),
            Fetch::After { .. } => None,
        };
        let arm = arm.clone();
        let group = group.clone();
        let container = container.clone();
        async move {
            arm.logs(&group, &container, tail, true)
                .await
                .map_err(|e| e.to_status())
        }
    };
    followers
        .stream(&uid, &container_name, opts, fetch, running, tx)
        .await;
}
