//! Container logs from Containers - List Logs, with the kubelet's options. ACI returns text (with
//! `tail` and `timestamps`) but has no `since` and cannot follow: provider-common's
//! [`log_follow`] filters on the timestamps ACI prefixes and follows by polling, one poll per
//! container however many follow it ([`provider_common::log_share::LogFollowers`]).

use std::time::Duration;

use futures::{FutureExt, future::BoxFuture};
use podprovider_proto::v1::GetContainerLogsRequest;
use provider_common::log_follow::{self, Fetch};
use time::OffsetDateTime;

use crate::client::Arm;

/// How often a follow polls.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// What the kubelet asked for, as `log_follow` applies it.
pub fn options(req: &GetContainerLogsRequest) -> log_follow::Options {
    log_follow::Options::from_request(req, OffsetDateTime::now_utc(), FOLLOW_INTERVAL)
}

/// One List Logs call of `container` in `group` per poll.
pub fn fetcher(
    arm: Arm,
    group: String,
    container: String,
) -> impl FnMut(Fetch) -> BoxFuture<'static, Result<String, tonic::Status>> + Clone + Send + 'static
{
    move |what: Fetch| {
        // ACI cannot start at a time: a later poll reads the whole log and the cursor finds its
        // place by the timestamps (always asked for; stripped again unless wanted).
        let tail = match what {
            Fetch::Start { tail } => tail.and_then(|n| i64::try_from(n).ok()),
            Fetch::After { .. } => None,
        };
        let (arm, group, container) = (arm.clone(), group.clone(), container.clone());
        async move {
            arm.logs(&group, &container, tail, true)
                .await
                .map_err(|e| e.to_status())
        }
        .boxed()
    }
}
