//! Container logs from DescribeContainerLog, with the kubelet's options. ECI answers text with
//! `Tail` (at most 2000 lines), `SinceSecond`, `StartTime` and `Timestamps`, but cannot follow:
//! provider-common's [`log_follow`] follows by polling, one poll per container however many
//! follow it ([`provider_common::log_share::LogFollowers`]).

use std::time::Duration;

use futures::{FutureExt, future::BoxFuture};
use podprovider_proto::v1::GetContainerLogsRequest;
use provider_common::log_follow::{self, Fetch};
use time::OffsetDateTime;

use crate::client::{Cloud, LogOptions};

/// The most lines `DescribeContainerLog` returns (`Tail`: default 500, maximum 2000).
const MAX_TAIL: i64 = 2000;
/// How often a log follow polls.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

/// What the kubelet asked for, as `log_follow` applies it (ECI cannot show a previous
/// instance's log as it runs: that one is never followed).
pub fn options(req: &GetContainerLogsRequest) -> log_follow::Options {
    log_follow::Options {
        follow: req.follow && !req.previous,
        ..log_follow::Options::from_request(req, OffsetDateTime::now_utc(), FOLLOW_INTERVAL)
    }
}

/// One DescribeContainerLog call of `container` in `group` per poll.
pub fn fetcher(
    cloud: Cloud,
    group: String,
    req: &GetContainerLogsRequest,
) -> impl FnMut(Fetch) -> BoxFuture<'static, Result<String, tonic::Status>> + Clone + Send + 'static
{
    // ECI returns the last 500 lines unless told otherwise, and at most 2000 (and 1 MB).
    let first = LogOptions {
        tail: Some(MAX_TAIL),
        since_seconds: req.since_seconds,
        start_time: match (req.since_seconds, req.since_time.as_ref()) {
            (None, Some(t)) => OffsetDateTime::from_unix_timestamp(t.seconds)
                .ok()
                .and_then(|d| {
                    d.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                }),
            _ => None,
        },
        limit_bytes: None,
        // Always asked for: the follow tells lines apart by them; stripped unless wanted.
        timestamps: true,
        previous: req.previous,
    };
    let container = req.container.clone();
    move |what: Fetch| {
        let opts = match what {
            Fetch::Start { tail } => LogOptions {
                tail: Some(tail.map_or(MAX_TAIL, |n| {
                    i64::try_from(n).unwrap_or(MAX_TAIL).min(MAX_TAIL)
                })),
                ..first.clone()
            },
            // Nothing seen yet: the log as first asked for.
            Fetch::After { since: None } => first.clone(),
            // SinceSeconds counts whole seconds back from ECI's clock: start a little before the
            // last line seen; the cursor skips what was sent.
            Fetch::After { since: Some(t) } => LogOptions {
                tail: Some(MAX_TAIL),
                since_seconds: Some((OffsetDateTime::now_utc() - t).whole_seconds().max(0) + 2),
                timestamps: true,
                ..Default::default()
            },
        };
        let (cloud, group, container) = (cloud.clone(), group.clone(), container.clone());
        async move {
            cloud
                .log(&group, &container, &opts)
                .await
                .map_err(|e| e.to_status())
        }
        .boxed()
    }
}
